//! **The one place that defines every metric vpslens exports.** Names, help texts, types and
//! label sets are all here; `/metrics` and `replay --metrics-out` both call [`render`].
//!
//! Per-node families (labels bounded by the registry, route templates, a method list and capped
//! codes):
//! - `vpslens_node_requests_total{node,route,method,code}` — counter; `code="0"`: no response.
//! - `vpslens_node_request_duration_seconds{node}` — histogram of Envoy `%DURATION%`, Envoy's
//!   default buckets converted to seconds.
//! - `vpslens_node_last_seen_timestamp_seconds{node}` — gauge, latest `%START_TIME%`.
//! - `vpslens_node_poll_interval_seconds{node}` — gauge per registered node: its expected
//!   seconds between polls (registry label `poll_interval_seconds`, else the config's
//!   `default_poll_interval_seconds`, default 60); alerts measure silence in multiples of it.
//! - `vpslens_node_info{node,node_id,<registry labels>[,country,asn]}` — 1 per registered node;
//!   `country`/`asn` with `geoip.node_labels` (lookup of the node's first address).
//! - `vpslens_node_identity_mismatch_total{node}` — requests whose `node_id` contradicts the
//!   registry.
//! - `vpslens_unregistered_requests_total{route,code[,country][,asn]}` — clients not in the
//!   registry; no IP label. `country` (ISO 3166-1 alpha-2 or `unknown`) with
//!   `geoip.country_database`, `asn` (`AS<n>` or `unknown`) with `geoip.asn_database`, both
//!   capped (`limits.countries`/`limits.asns`, overflow `other`).
//! - `vpslens_node_id_fallback_total{node}` — requests from unregistered addresses attributed by
//!   their `node_id` (`attribute_unregistered_by_node_id`).
//! - `vpslens_unregistered_requests_total{route,code}` — clients not in the registry; no IP label.
//!
//! Registry self-metrics: `vpslens_registry_*` describe the merged registry in force;
//! `vpslens_registry_source_*{source}` describe each source kind (`file`, `workload_entry`,
//! `file_sd`; several `file_sd` entries are summed).
//!
//! Istio-shaped families for Kiali are defined in [`super::istio`] and served by
//! [`render_istio`] at `/metrics/istio`. Self-metrics follow below.

use std::collections::BTreeMap;

use super::exposition::{Dialect, Kind, Writer};
use super::istio;
use crate::aggregate::{
    Aggregator, Histogram, LineResult, CLIENT_REASONS, ENVOY_BUCKETS, LINE_RESULTS, METHODS,
};
use crate::pipeline::Shared;
use crate::resolve::geo::Geo;
use crate::resolve::Registry;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vpslens_parsers::ParseError;

/// `vpslens_node_requests_total`.
pub const NODE_REQUESTS: &str = "vpslens_node_requests_total";
/// `vpslens_node_request_duration_seconds`.
pub const NODE_DURATION: &str = "vpslens_node_request_duration_seconds";
/// `vpslens_node_last_seen_timestamp_seconds`.
pub const NODE_LAST_SEEN: &str = "vpslens_node_last_seen_timestamp_seconds";
/// `vpslens_node_info`.
pub const NODE_INFO: &str = "vpslens_node_info";
/// `vpslens_node_identity_mismatch_total`.
pub const NODE_IDENTITY_MISMATCH: &str = "vpslens_node_identity_mismatch_total";
/// `vpslens_node_id_fallback_total`.
pub const NODE_ID_FALLBACK: &str = "vpslens_node_id_fallback_total";
/// `vpslens_unregistered_requests_total`.
pub const UNREGISTERED_REQUESTS: &str = "vpslens_unregistered_requests_total";
/// `vpslens_node_poll_interval_seconds`.
pub const NODE_POLL_INTERVAL: &str = "vpslens_node_poll_interval_seconds";
/// `vpslens_lines_total`.
pub const LINES: &str = "vpslens_lines_total";
/// `vpslens_parse_errors_total`.
pub const PARSE_ERRORS: &str = "vpslens_parse_errors_total";

/// Envoy's default buckets in seconds (for `vpslens_node_request_duration_seconds`).
pub fn seconds_buckets() -> [f64; 19] {
    let mut b = ENVOY_BUCKETS;
    for v in &mut b {
        *v /= 1000.0;
    }
    b
}

/// Per-node views, ordered by label values. Nodes are keyed by their rank in name order (no
/// name `String` per series); [`NodeViews::name`] gives the label value back.
struct NodeViews {
    /// Node names by rank (ascending).
    names: Vec<String>,
    /// `((rank, route, method, code), requests)`, ascending.
    requests: Vec<((u32, u16, u8, u16), u64)>,
    /// `(rank, duration histogram)`, ascending.
    duration: Vec<(u32, Histogram)>,
    /// `(rank, latest start_time ms)` for nodes seen, ascending.
    last_seen: Vec<(u32, i64)>,
    /// `(rank, identity mismatches)` where non-zero, ascending.
    mismatch: Vec<(u32, u64)>,
    /// `(rank, node_id fallbacks)` where non-zero, ascending.
    fallback: Vec<(u32, u64)>,
    unregistered: BTreeMap<(u16, u16, u16, u16), u64>,
}

impl NodeViews {
    fn name(&self, rank: u32) -> &str {
        self.names
            .get(rank as usize)
            .map_or(crate::aggregate::OTHER, String::as_str)
    }
}

/// What a scrape copies out of the aggregator while holding its lock: ids and numbers only
/// (no label strings, no ordering), so ingestion waits as little as possible.
struct Snapshot {
    node_names: Vec<String>,
    requests: FxHashMap<(u32, u16, u8, u16), u64>,
    duration: FxHashMap<u32, Histogram>,
    nodes: Vec<(u32, crate::aggregate::NodeStats)>,
    unregistered: Vec<((u16, u16, u16, u16), u64)>,
}

fn snapshot(agg: &Aggregator) -> Snapshot {
    let mut requests = FxHashMap::default();
    let mut duration: FxHashMap<u32, Histogram> = FxHashMap::default();
    for (k, n) in agg.series() {
        *requests
            .entry((k.node, k.route, k.method, k.code))
            .or_insert(0) += n;
    }
    for (k, h) in agg.histograms() {
        duration.entry(k.node).or_default().merge(&h.duration_ms());
    }
    Snapshot {
        node_names: agg.node_names.clone(),
        requests,
        duration,
        nodes: agg.all_node_stats().map(|(id, n)| (id, *n)).collect(),
        unregistered: agg
            .unregistered()
            .map(|(k, c)| ((k.route, k.code, k.country, k.asn), *c))
            .collect(),
    }
}

impl From<Snapshot> for NodeViews {
    /// Names and orders a snapshot, after the lock was released.
    fn from(s: Snapshot) -> NodeViews {
        // Aggregator node ids are dense and names unique, so name order is a permutation.
        let mut by_name: Vec<u32> =
            (0..u32::try_from(s.node_names.len()).unwrap_or(u32::MAX)).collect();
        by_name.sort_unstable_by(|a, b| s.node_names[*a as usize].cmp(&s.node_names[*b as usize]));
        let mut rank_of = vec![0u32; by_name.len()];
        for (rank, id) in (0u32..).zip(&by_name) {
            rank_of[*id as usize] = rank;
        }
        // Ids outside the name table (not expected) sort last, under the name `other`.
        let rank = |id: u32| rank_of.get(id as usize).copied().unwrap_or(u32::MAX);
        let mut node_names = s.node_names;
        let names: Vec<String> = by_name
            .iter()
            .map(|id| std::mem::take(&mut node_names[*id as usize]))
            .collect();

        let mut requests: Vec<_> = s
            .requests
            .into_iter()
            .map(|((node, route, method, code), c)| ((rank(node), route, method, code), c))
            .collect();
        requests.sort_unstable_by_key(|e| e.0);
        let mut duration: Vec<_> = s
            .duration
            .into_iter()
            .map(|(node, h)| (rank(node), h))
            .collect();
        duration.sort_unstable_by_key(|e| e.0);
        let (mut last_seen, mut mismatch, mut fallback) = (Vec::new(), Vec::new(), Vec::new());
        for (id, n) in &s.nodes {
            let r = rank(*id);
            if n.last_seen_ms > 0 {
                last_seen.push((r, n.last_seen_ms));
            }
            if n.identity_mismatch > 0 {
                mismatch.push((r, n.identity_mismatch));
            }
            if n.node_id_fallback > 0 {
                fallback.push((r, n.node_id_fallback));
            }
        }
        last_seen.sort_unstable_by_key(|e| e.0);
        mismatch.sort_unstable_by_key(|e| e.0);
        fallback.sort_unstable_by_key(|e| e.0);
        let mut unregistered = BTreeMap::new();
        for (k, c) in s.unregistered {
            *unregistered.entry(k).or_insert(0) += c;
        }
        NodeViews {
            names,
            requests,
            duration,
            last_seen,
            mismatch,
            fallback,
            unregistered,
        }
    }
}

/// The part of a `/metrics` scrape that blocks ingestion: takes the aggregator lock, copies
/// the ids and numbers the scrape needs, releases the lock. Returns how many (node, route,
/// method, code) series were copied. For benches and tests; [`render`] calls the same code.
pub fn snapshot_series(shared: &Shared) -> usize {
    snapshot(&shared.lock()).requests.len()
}

/// Renders the `/metrics` body: every `vpslens_*` family.
pub fn render(shared: &Shared, dialect: Dialect) -> String {
    let registry = shared.registry.current();
    let (snap, counters) = {
        let agg = shared.lock();
        (snapshot(&agg), SelfCounters::from(&*agg))
    };
    // ~112 bytes per requests sample, 23 lines of ~75 bytes per node histogram, ~92 per
    // node_info line: the 1M-line bench body (9.2 MB) measured.
    let estimate = snap.requests.len() * 112
        + snap.duration.len() * 23 * 75
        + registry.nodes().len() * 92
        + 64 * 1024;
    let mut w = Writer::with_capacity(dialect, estimate);
    let views = NodeViews::from(snap);
    render_nodes(
        &mut w,
        &views,
        &registry,
        &counters,
        shared.config.geo.as_deref(),
    );
    render_poll_intervals(
        &mut w,
        &registry,
        shared.default_poll_interval_seconds.load(Ordering::Relaxed),
    );
    render_self(&mut w, shared, &registry, &counters);
    w.finish()
}

/// `vpslens_node_poll_interval_seconds{node}`: one sample per registered node.
fn render_poll_intervals(w: &mut Writer, registry: &Registry, default_seconds: u64) {
    w.family(
        NODE_POLL_INTERVAL,
        "Expected seconds between the node's polls of the panel (registry label poll_interval_seconds, else default_poll_interval_seconds); alerts measure silence in multiples of it.",
        Kind::Gauge,
    );
    for n in registry.nodes() {
        let secs = n.poll_interval_seconds().unwrap_or(default_seconds);
        w.sample_u64(NODE_POLL_INTERVAL, &[("node", &n.name)], secs);
    }
}

/// Renders the `/metrics/istio` body: Istio's standard families (and `kiali_ext_requests_total`
/// when enabled). Served apart from `/metrics` because Istio's names (e.g.
/// `istio_request_duration_milliseconds`) are fixed by Kiali yet break Prometheus' base-unit
/// lint, and because their volume may deserve its own scrape interval.
pub fn render_istio(shared: &Shared, dialect: Dialect) -> String {
    let registry = shared.registry.current();
    let mut w = Writer::new(dialect);
    let views = istio::views(&shared.lock(), &registry, &shared.istio);
    istio::render(&mut w, &views, &shared.istio);
    w.finish()
}

/// Label-string copies taken under the lock.
struct SelfCounters {
    lines: [u64; 4],
    parse_errors: [u64; ParseError::REASONS.len()],
    client_errors: [u64; 3],
    overflow: [(&'static str, u64); 5],
    series: usize,
    histogram_sets: usize,
    routes: Vec<String>,
    countries: Vec<String>,
    asns: Vec<String>,
}

impl From<&Aggregator> for SelfCounters {
    fn from(a: &Aggregator) -> Self {
        let routes = a.routes.values().to_vec();
        SelfCounters {
            lines: a.lines,
            parse_errors: a.parse_errors,
            client_errors: a.client_errors,
            overflow: [
                ("code", a.code_overflow),
                ("response_flags", a.flags.overflow),
                ("destination", a.destinations.overflow),
                ("country", a.countries.overflow),
                ("asn", a.asns.overflow),
            ],
            series: a.series_len(),
            histogram_sets: a.histogram_sets_len(),
            routes,
            countries: a.countries.values().to_vec(),
            asns: a.asns.values().to_vec(),
        }
    }
}

impl SelfCounters {
    fn route(&self, id: u16) -> &str {
        self.routes
            .get(usize::from(id))
            .map_or(crate::aggregate::OTHER, String::as_str)
    }

    fn country(&self, id: u16) -> &str {
        self.countries
            .get(usize::from(id))
            .map_or(crate::aggregate::OTHER, String::as_str)
    }

    fn asn(&self, id: u16) -> &str {
        self.asns
            .get(usize::from(id))
            .map_or(crate::aggregate::OTHER, String::as_str)
    }
}

fn render_nodes(
    w: &mut Writer,
    v: &NodeViews,
    registry: &Arc<Registry>,
    c: &SelfCounters,
    geo: Option<&Geo>,
) {
    w.family(
        NODE_REQUESTS,
        "Requests from a registered VPS node, by route template, method and HTTP status (0 = no response sent).",
        Kind::Counter,
    );
    let mut code_text = itoa::Buffer::new();
    for ((node, route, method, code), n) in &v.requests {
        let code = Aggregator::code_label(*code, &mut code_text);
        let method = METHODS
            .get(usize::from(*method))
            .copied()
            .unwrap_or("other");
        w.sample_u64(
            NODE_REQUESTS,
            &[
                ("node", v.name(*node)),
                ("route", c.route(*route)),
                ("method", method),
                ("code", code),
            ],
            *n,
        );
    }

    w.family(
        NODE_DURATION,
        "Request duration (Envoy %DURATION%: first request byte to last response byte) per registered node, in seconds.",
        Kind::Histogram,
    );
    let bounds = seconds_buckets();
    for (node, h) in &v.duration {
        #[allow(clippy::cast_precision_loss)]
        let sum = h.sum as f64 / 1000.0;
        w.histogram(
            NODE_DURATION,
            &[("node", v.name(*node))],
            &bounds,
            &h.cumulative(),
            sum,
        );
    }

    w.family(
        NODE_LAST_SEEN,
        "Unix time (seconds) of the start of the node's latest request, from the access log.",
        Kind::Gauge,
    );
    for (node, ms) in &v.last_seen {
        #[allow(clippy::cast_precision_loss)]
        let secs = *ms as f64 / 1000.0;
        w.sample_f64(NODE_LAST_SEEN, &[("node", v.name(*node))], secs);
    }

    w.family(
        NODE_INFO,
        "One series per node in the registry (value 1), with its registry labels; join on `node`.",
        Kind::Gauge,
    );
    let node_geo = geo.and_then(|g| g.node_labels(registry).map(|l| (g, l)));
    for (i, n) in registry.nodes().iter().enumerate() {
        let id = n.node_id.map(|i| i.to_string()).unwrap_or_default();
        let mut labels: Vec<(&str, &str)> = vec![("node", &n.name)];
        if !id.is_empty() {
            labels.push(("node_id", &id));
        }
        for (k, val) in &n.labels {
            labels.push((k, val));
        }
        let geo_labels = node_geo.as_ref().and_then(|(g, l)| Some((g, l.get(i)?)));
        let asn_text = geo_labels.map(|(_, l)| l.asn_label());
        if let Some((g, l)) = geo_labels {
            if g.has_country() && !n.labels.contains_key("country") {
                labels.push(("country", l.country_label()));
            }
        }
        if let (Some((g, _)), Some(t)) = (geo_labels, &asn_text) {
            if g.has_asn() && !n.labels.contains_key("asn") {
                labels.push(("asn", t.as_str()));
            }
        }
        w.sample_u64(NODE_INFO, &labels, 1);
    }

    w.family(
        NODE_IDENTITY_MISMATCH,
        "Requests from a node's address whose node_id query parameter differs from the registry's node_id.",
        Kind::Counter,
    );
    for (node, n) in &v.mismatch {
        w.sample_u64(NODE_IDENTITY_MISMATCH, &[("node", v.name(*node))], *n);
    }

    w.family(
        NODE_ID_FALLBACK,
        "Requests from an address in no registry entry, attributed to the node by their node_id query parameter (attribute_unregistered_by_node_id; spoofable).",
        Kind::Counter,
    );
    for (node, n) in &v.fallback {
        w.sample_u64(NODE_ID_FALLBACK, &[("node", v.name(*node))], *n);
    }

    w.family(
        UNREGISTERED_REQUESTS,
        "Requests from client addresses that are in no registry entry, by route template and HTTP status (and GeoIP country/ASN when configured).",
        Kind::Counter,
    );
    let (with_country, with_asn) = geo.map_or((false, false), |g| (g.has_country(), g.has_asn()));
    for ((route, code, country, asn), n) in &v.unregistered {
        let code = Aggregator::code_label(*code, &mut code_text);
        let mut labels: Vec<(&str, &str)> = vec![("route", c.route(*route)), ("code", code)];
        if with_country {
            labels.push(("country", c.country(*country)));
        }
        if with_asn {
            labels.push(("asn", c.asn(*asn)));
        }
        w.sample_u64(UNREGISTERED_REQUESTS, &labels, *n);
    }
}

fn render_self(w: &mut Writer, shared: &Shared, registry: &Registry, c: &SelfCounters) {
    w.family(
        LINES,
        "Access-log lines processed, by result (ok, malformed, no_client, too_long).",
        Kind::Counter,
    );
    for (i, r) in LINE_RESULTS.iter().enumerate() {
        w.sample_u64(LINES, &[("result", r)], c.lines[i]);
    }
    debug_assert_eq!(LINE_RESULTS[LineResult::TooLong as usize], "too_long");

    w.family(
        PARSE_ERRORS,
        "Malformed access-log lines, by reason.",
        Kind::Counter,
    );
    for (i, r) in ParseError::REASONS.iter().enumerate() {
        w.sample_u64(PARSE_ERRORS, &[("reason", r)], c.parse_errors[i]);
    }

    let name = "vpslens_client_address_errors_total";
    w.family(
        name,
        "Parsed lines without a usable client address (downstream_remote_address or trusted X-Forwarded-For hop), by reason.",
        Kind::Counter,
    );
    for (i, r) in CLIENT_REASONS.iter().enumerate() {
        w.sample_u64(name, &[("reason", r)], c.client_errors[i]);
    }

    let name = "vpslens_label_overflow_total";
    w.family(
        name,
        "Label values replaced by `other` because the label's cardinality cap was reached.",
        Kind::Counter,
    );
    for (label, n) in c.overflow {
        w.sample_u64(name, &[("label", label)], n);
    }

    let name = "vpslens_aggregate_series";
    w.family(name, "Fine-grained series held in memory.", Kind::Gauge);
    w.sample_u64(name, &[], c.series as u64);
    let name = "vpslens_aggregate_distribution_sets";
    w.family(
        name,
        "Distribution sets (duration, request-bytes and response-bytes histograms per node, code, flags and destination) held in memory, 272 bytes each.",
        Kind::Gauge,
    );
    w.sample_u64(name, &[], c.histogram_sets as u64);

    let h = &shared.registry;
    let name = "vpslens_registry_nodes";
    w.family(name, "Nodes in the registry in force.", Kind::Gauge);
    w.sample_u64(name, &[], registry.nodes().len() as u64);
    let name = "vpslens_registry_address_conflicts";
    w.family(
        name,
        "Addresses claimed by more than one node in the registry in force (resolved to the smaller node name).",
        Kind::Gauge,
    );
    w.sample_u64(name, &[], registry.conflicts().len() as u64);
    let name = "vpslens_registry_reloads_total";
    w.family(
        name,
        "Registry updates from all sources, by result: success = a new merged registry swapped in, failure = a source update rejected (its last good node list kept).",
        Kind::Counter,
    );
    w.sample_u64(
        name,
        &[("result", "success")],
        h.reload_success.load(Ordering::Relaxed),
    );
    w.sample_u64(
        name,
        &[("result", "failure")],
        h.reload_failure.load(Ordering::Relaxed),
    );
    let name = "vpslens_registry_last_reload_successful";
    w.family(
        name,
        "1 if the latest update of every registry source succeeded, 0 if one failed and its last good node list is still in force.",
        Kind::Gauge,
    );
    w.sample_u64(name, &[], h.last_successful.load(Ordering::Relaxed));
    let name = "vpslens_registry_last_reload_success_timestamp_seconds";
    w.family(
        name,
        "Unix time of the latest successful registry update (a new merged registry swapped in).",
        Kind::Gauge,
    );
    w.sample_u64(name, &[], h.last_success_seconds.load(Ordering::Relaxed));
    render_sources(w, h);

    let s = &shared.sources;
    for (name, help, v) in [
        (
            "vpslens_source_read_bytes_total",
            "Bytes read from access-log files.",
            &s.bytes_read,
        ),
        (
            "vpslens_source_lines_total",
            "Lines read from access-log files (after container-log reassembly).",
            &s.lines_read,
        ),
        (
            "vpslens_source_rotations_total",
            "File rotations (a new file appeared at a followed path).",
            &s.rotations,
        ),
        (
            "vpslens_source_truncations_total",
            "Truncations or rewrites detected (reading restarted at offset 0).",
            &s.truncations,
        ),
        (
            "vpslens_source_long_lines_skipped_total",
            "Lines longer than max_line_bytes, skipped.",
            &s.long_lines_skipped,
        ),
        (
            "vpslens_checkpoint_writes_total",
            "Checkpoints written.",
            &s.checkpoint_writes,
        ),
        (
            "vpslens_checkpoint_failures_total",
            "Checkpoint writes that failed.",
            &s.checkpoint_failures,
        ),
    ] {
        w.family(name, help, Kind::Counter);
        w.sample_u64(name, &[], v.load(Ordering::Relaxed));
    }
    let name = "vpslens_source_read_lag_bytes";
    w.family(
        name,
        "Bytes in a followed file not yet processed.",
        Kind::Gauge,
    );
    if let Ok(lag) = s.lag.lock() {
        for (path, v) in lag.iter() {
            w.sample_u64(name, &[("path", path)], *v);
        }
    }
    let name = "vpslens_source_files_followed";
    w.family(
        name,
        "Access-log files currently followed; 0 while no configured path or glob matches a file.",
        Kind::Gauge,
    );
    let followed = s.lag.lock().map_or(0, |l| l.len());
    w.sample_u64(name, &[], u64::try_from(followed).unwrap_or(u64::MAX));
    let name = "vpslens_checkpoint_last_write_successful";
    w.family(
        name,
        "1 unless the latest checkpoint write failed (state_dir unwritable or full); 1 before the first write and without state_dir.",
        Kind::Gauge,
    );
    w.sample_u64(
        name,
        &[],
        1 - s
            .checkpoint_last_write_failed
            .load(Ordering::Relaxed)
            .min(1),
    );
    let last = s.checkpoint_last_success_unix.load(Ordering::Relaxed);
    if last > 0 {
        let name = "vpslens_checkpoint_last_write_timestamp_seconds";
        w.family(
            name,
            "Unix time (seconds) of the latest successful checkpoint write.",
            Kind::Gauge,
        );
        w.sample_u64(name, &[], last);
    }
    let name = "vpslens_ready";
    w.family(
        name,
        "1 once the first pass over the configured files completed.",
        Kind::Gauge,
    );
    w.sample_u64(name, &[], u64::from(shared.ready.load(Ordering::Acquire)));
}

fn render_sources(w: &mut Writer, h: &crate::resolve::reload::RegistryHandle) {
    let stats = h.source_stats();
    type Get = fn(&crate::resolve::reload::RegistrySourceStats) -> u64;
    let gauges: [(&str, &str, Get); 5] = [
        (
            "vpslens_registry_source_nodes",
            "Nodes in the source's last good node list (before the merge).",
            |s| s.nodes,
        ),
        (
            "vpslens_registry_source_skipped_entries",
            "Entries of the source's last good input that yielded no node (no name label, no usable address).",
            |s| s.skipped,
        ),
        (
            "vpslens_registry_source_shadowed_nodes",
            "Nodes of the source dropped by the merge because a higher-precedence source names the same node.",
            |s| s.shadowed,
        ),
        (
            "vpslens_registry_source_last_reload_successful",
            "1 if the latest update of every instance of the source succeeded, 0 if one failed (its last good list is still in force) or has not been tried yet.",
            |s| s.last_successful,
        ),
        (
            "vpslens_registry_source_last_success_timestamp_seconds",
            "Unix time of the source's latest successful update (or unchanged poll); the oldest among its instances, 0 if one never succeeded.",
            |s| s.last_success_seconds,
        ),
    ];
    for (name, help, get) in gauges {
        w.family(name, help, Kind::Gauge);
        for (kind, s) in &stats {
            w.sample_u64(name, &[("source", kind.label())], get(s));
        }
    }
    let name = "vpslens_registry_source_reloads_total";
    w.family(
        name,
        "Registry source updates, by result: success (new list merged), unchanged (HTTP 304 or identical content), failure (last good list kept).",
        Kind::Counter,
    );
    for (kind, s) in &stats {
        for (result, v) in [
            ("success", s.success),
            ("unchanged", s.unchanged),
            ("failure", s.failure),
        ] {
            w.sample_u64(name, &[("source", kind.label()), ("result", result)], v);
        }
    }
}
