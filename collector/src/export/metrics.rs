//! **The one place that declares every metric vpslens exports**: [`FAMILIES`] lists each
//! family's name, type, help text and labels, and both endpoints (`/metrics`, `/metrics/istio`)
//! and `replay --metrics-out`/`--istio-out` render from those rows.
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
//!
//! Registry self-metrics: `vpslens_registry_*` describe the merged registry in force;
//! `vpslens_registry_source_*{source}` describe each source kind (`file`, `workload_entry`,
//! `file_sd`; several `file_sd` entries are summed).
//!
//! Istio-shaped families for Kiali (`istio_*`, `kiali_ext_requests_total`) are rows of the same
//! table; their shape is chosen in [`super::istio`] and served by [`render_istio`] at
//! `/metrics/istio`.
//!
//! Rendering reads the aggregator only through [`AggregateView`] under the lock, copies ids and
//! numbers into compact views, releases the lock, then writes into a [`Writer`] — a `String`
//! ([`render`]) or a streaming sink ([`render_into`], used by the HTTP handlers).

use std::collections::BTreeMap;

use super::exposition::{Dialect, Family, Kind, Writer};
use super::istio;
use crate::aggregate::{
    AggregateView, Aggregator, Histogram, LineResult, CLIENT_REASONS, ENVOY_BUCKETS, LINE_RESULTS,
    METHODS,
};
use crate::pipeline::Shared;
use crate::resolve::geo::Geo;
use crate::resolve::Registry;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vpslens_parsers::ParseError;

macro_rules! families {
    ($($id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $help)]
            pub const $id: Family = Family {
                name: $name,
                kind: Kind::$kind,
                help: $help,
                labels: &[$($l),*],
            };
        )*
        /// Every family vpslens exports, in the order `/metrics` then `/metrics/istio` write
        /// them. A label `*` stands for labels from the registry (`vpslens_node_info`); labels
        /// in brackets in the help text are present only when configured.
        pub const FAMILIES: &[Family] = &[$($id),*];
    };
}

families! {
    NODE_REQUESTS = "vpslens_node_requests_total", Counter, ["node", "route", "method", "code"],
        "Requests from a registered VPS node, by route template, method and HTTP status (0 = no response sent).";
    NODE_DURATION = "vpslens_node_request_duration_seconds", Histogram, ["node"],
        "Request duration (Envoy %DURATION%: first request byte to last response byte) per registered node, in seconds.";
    NODE_LAST_SEEN = "vpslens_node_last_seen_timestamp_seconds", Gauge, ["node"],
        "Unix time (seconds) of the start of the node's latest request, from the access log.";
    NODE_POLL_INTERVAL = "vpslens_node_poll_interval_seconds", Gauge, ["node"],
        "Expected seconds between the node's polls of the panel (registry label poll_interval_seconds, else default_poll_interval_seconds); alerts measure silence in multiples of it.";
    NODE_INFO = "vpslens_node_info", Gauge, ["node", "node_id", "*"],
        "One series per node in the registry (value 1), with its registry labels; join on `node`.";
    NODE_IDENTITY_MISMATCH = "vpslens_node_identity_mismatch_total", Counter, ["node"],
        "Requests from a node's address whose node_id query parameter differs from the registry's node_id.";
    NODE_ID_FALLBACK = "vpslens_node_id_fallback_total", Counter, ["node"],
        "Requests from an address in no registry entry, attributed to the node by their node_id query parameter (attribute_unregistered_by_node_id; spoofable).";
    UNREGISTERED_REQUESTS = "vpslens_unregistered_requests_total", Counter, ["route", "code", "country", "asn"],
        "Requests from client addresses that are in no registry entry, by route template and HTTP status (and GeoIP country/ASN when configured).";
    LINES = "vpslens_lines_total", Counter, ["result"],
        "Access-log lines processed, by result (ok, malformed, no_client, too_long).";
    PARSE_ERRORS = "vpslens_parse_errors_total", Counter, ["reason"],
        "Malformed access-log lines, by reason.";
    CLIENT_ADDRESS_ERRORS = "vpslens_client_address_errors_total", Counter, ["reason"],
        "Parsed lines without a usable client address (downstream_remote_address or trusted X-Forwarded-For hop), by reason.";
    LABEL_OVERFLOW = "vpslens_label_overflow_total", Counter, ["label"],
        "Label values replaced by `other` because the label's cardinality cap was reached.";
    AGGREGATE_SERIES = "vpslens_aggregate_series", Gauge, [],
        "Fine-grained series held in memory.";
    AGGREGATE_SETS = "vpslens_aggregate_distribution_sets", Gauge, [],
        "Distribution sets (duration, request-bytes and response-bytes histograms per node, code, flags and destination) held in memory, 272 bytes each.";
    SCRAPES_REJECTED = "vpslens_scrapes_rejected_total", Counter, ["endpoint"],
        "Scrapes answered 503 because max_concurrent_renders renders were running for longer than the scrape could wait.";
    SCRAPES_CUT = "vpslens_scrapes_cut_total", Counter, ["endpoint"],
        "Scrape bodies abandoned before the end (client gone, or not reading within render_timeout_seconds).";
    REGISTRY_NODES = "vpslens_registry_nodes", Gauge, [],
        "Nodes in the registry in force.";
    REGISTRY_CONFLICTS = "vpslens_registry_address_conflicts", Gauge, [],
        "Addresses claimed by more than one node in the registry in force (resolved to the smaller node name).";
    REGISTRY_RELOADS = "vpslens_registry_reloads_total", Counter, ["result"],
        "Registry updates from all sources, by result: success = a new merged registry swapped in, failure = a source update rejected (its last good node list kept).";
    REGISTRY_LAST_OK = "vpslens_registry_last_reload_successful", Gauge, [],
        "1 if the latest update of every registry source succeeded, 0 if one failed and its last good node list is still in force.";
    REGISTRY_LAST_SUCCESS = "vpslens_registry_last_reload_success_timestamp_seconds", Gauge, [],
        "Unix time of the latest successful registry update (a new merged registry swapped in).";
    SOURCE_NODES = "vpslens_registry_source_nodes", Gauge, ["source"],
        "Nodes in the source's last good node list (before the merge).";
    SOURCE_SKIPPED = "vpslens_registry_source_skipped_entries", Gauge, ["source"],
        "Entries of the source's last good input that yielded no node (no name label, no usable address).";
    SOURCE_SHADOWED = "vpslens_registry_source_shadowed_nodes", Gauge, ["source"],
        "Nodes of the source dropped by the merge because a higher-precedence source names the same node.";
    SOURCE_LAST_OK = "vpslens_registry_source_last_reload_successful", Gauge, ["source"],
        "1 if the latest update of every instance of the source succeeded, 0 if one failed (its last good list is still in force) or has not been tried yet.";
    SOURCE_LAST_SUCCESS = "vpslens_registry_source_last_success_timestamp_seconds", Gauge, ["source"],
        "Unix time of the source's latest successful update (or unchanged poll); the oldest among its instances, 0 if one never succeeded.";
    SOURCE_RELOADS = "vpslens_registry_source_reloads_total", Counter, ["source", "result"],
        "Registry source updates, by result: success (new list merged), unchanged (HTTP 304 or identical content), failure (last good list kept).";
    READ_BYTES = "vpslens_source_read_bytes_total", Counter, [],
        "Bytes read from access-log files.";
    READ_LINES = "vpslens_source_lines_total", Counter, [],
        "Lines read from access-log files (after container-log reassembly).";
    ROTATIONS = "vpslens_source_rotations_total", Counter, [],
        "File rotations (a new file appeared at a followed path).";
    TRUNCATIONS = "vpslens_source_truncations_total", Counter, [],
        "Truncations or rewrites detected (reading restarted at offset 0).";
    LONG_LINES = "vpslens_source_long_lines_skipped_total", Counter, [],
        "Lines longer than max_line_bytes, skipped.";
    CHECKPOINT_WRITES = "vpslens_checkpoint_writes_total", Counter, [],
        "Checkpoints written.";
    CHECKPOINT_FAILURES = "vpslens_checkpoint_failures_total", Counter, [],
        "Checkpoint writes that failed.";
    READ_LAG = "vpslens_source_read_lag_bytes", Gauge, ["path"],
        "Bytes in a followed file not yet processed.";
    FILES_FOLLOWED = "vpslens_source_files_followed", Gauge, [],
        "Access-log files currently followed; 0 while no configured path or glob matches a file.";
    CHECKPOINT_LAST_OK = "vpslens_checkpoint_last_write_successful", Gauge, [],
        "1 unless the latest checkpoint write failed (state_dir unwritable or full); 1 before the first write and without state_dir.";
    CHECKPOINT_LAST_WRITE = "vpslens_checkpoint_last_write_timestamp_seconds", Gauge, [],
        "Unix time (seconds) of the latest successful checkpoint write.";
    READY = "vpslens_ready", Gauge, [],
        "1 once the first pass over the configured files completed.";
    ISTIO_REQUESTS = "istio_requests_total", Counter, ["reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster", "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version", "destination_service", "destination_service_name", "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision", "destination_cluster", "request_protocol", "response_code", "response_flags", "connection_security_policy"],
        "Requests (Istio standard metric), synthesized by vpslens from the gateway access log for registered VPS nodes.";
    ISTIO_DURATION = "istio_request_duration_milliseconds", Histogram, ["reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster", "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version", "destination_service", "destination_service_name", "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision", "destination_cluster", "request_protocol", "response_code", "response_flags", "connection_security_policy"],
        "Request duration in milliseconds (Istio standard metric), synthesized by vpslens.";
    ISTIO_REQUEST_BYTES = "istio_request_bytes", Histogram, ["reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster", "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version", "destination_service", "destination_service_name", "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision", "destination_cluster", "request_protocol", "response_code", "response_flags", "connection_security_policy"],
        "Request body size in bytes (Istio standard metric), synthesized by vpslens.";
    ISTIO_RESPONSE_BYTES = "istio_response_bytes", Histogram, ["reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster", "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version", "destination_service", "destination_service_name", "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision", "destination_cluster", "request_protocol", "response_code", "response_flags", "connection_security_policy"],
        "Response body size in bytes (Istio standard metric), synthesized by vpslens.";
    KIALI_EXT_REQUESTS = "kiali_ext_requests_total", Counter, ["extension", "source_cluster", "source_namespace", "source_name", "source_is_root", "dest_cluster", "dest_namespace", "dest_name", "flags", "protocol", "secure", "status_code"],
        "Requests per VPS node edge for Kiali's extension appender (kiali_ext_requests_total).";
}

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

fn snapshot(agg: AggregateView<'_>) -> Snapshot {
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
        node_names: agg.node_names().to_vec(),
        requests,
        duration,
        nodes: agg.node_stats().map(|(id, n)| (id, *n)).collect(),
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
    snapshot(shared.lock().view()).requests.len()
}

/// Renders the `/metrics` body into one `String`: every `vpslens_*` family (for
/// `replay --metrics-out`, tests and benches; the HTTP handler streams with [`render_into`]).
pub fn render(shared: &Shared, dialect: Dialect) -> String {
    let mut w = Writer::with_capacity(dialect, 1 << 20);
    render_into(shared, &mut w, Counters::Served);
    w.finish()
}

/// Whether a scrape shows the counters the aggregator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counters {
    /// Every family.
    Served,
    /// Not yet: only the collector's own families (`vpslens_ready 0`, sources, registry,
    /// checkpoints); `/metrics/istio` is empty. See [`Counters::for_scrape`].
    Withheld,
}

impl Counters {
    /// What an HTTP scrape may show: the counters only once the first pass after start-up is
    /// done (`vpslens_ready 1`). After a crash they restart from the last checkpoint, which may
    /// be lower than what the previous process served; until the first pass has read those
    /// lines again a scrape would see counters go down, which Prometheus takes for a reset and
    /// `rate`/`increase` count in full again. Absent series for a scrape or two cost nothing.
    pub fn for_scrape(shared: &Shared) -> Counters {
        if shared.sources.ready.load(Ordering::Acquire) {
            Counters::Served
        } else {
            Counters::Withheld
        }
    }
}

/// Writes the `/metrics` families into `w` (a `String` or a streaming writer). The aggregator
/// lock is held only while ids and numbers are copied.
pub fn render_into(shared: &Shared, w: &mut Writer, counters: Counters) {
    let registry = shared.registry.current();
    if counters == Counters::Withheld {
        render_poll_intervals(
            w,
            &registry,
            shared.default_poll_interval_seconds.load(Ordering::Relaxed),
        );
        render_collector(w, shared, &registry);
        return;
    }
    let (snap, counters) = {
        let agg = shared.lock();
        (snapshot(agg.view()), SelfCounters::from(agg.view()))
    };
    let views = NodeViews::from(snap);
    render_nodes(
        w,
        &views,
        &registry,
        &counters,
        shared.config.geo.as_deref(),
    );
    render_poll_intervals(
        w,
        &registry,
        shared.default_poll_interval_seconds.load(Ordering::Relaxed),
    );
    render_self(w, shared, &registry, &counters);
}

/// `vpslens_node_poll_interval_seconds{node}`: one sample per registered node.
fn render_poll_intervals(w: &mut Writer, registry: &Registry, default_seconds: u64) {
    w.family(&NODE_POLL_INTERVAL);
    for n in registry.nodes() {
        let secs = n.poll_interval_seconds().unwrap_or(default_seconds);
        w.sample_u64(NODE_POLL_INTERVAL.name, &[("node", &n.name)], secs);
    }
}

/// Renders the `/metrics/istio` body into one `String`: Istio's standard families (and
/// `kiali_ext_requests_total` when enabled). Served apart from `/metrics` because Istio's names
/// (e.g. `istio_request_duration_milliseconds`) are fixed by Kiali yet break Prometheus'
/// base-unit lint, and because their volume may deserve its own scrape interval.
pub fn render_istio(shared: &Shared, dialect: Dialect) -> String {
    let mut w = Writer::new(dialect);
    render_istio_into(shared, &mut w, Counters::Served);
    w.finish()
}

/// Writes the `/metrics/istio` families into `w` (see [`render_istio`]); nothing while
/// `counters` are withheld.
pub fn render_istio_into(shared: &Shared, w: &mut Writer, counters: Counters) {
    if counters == Counters::Withheld {
        return;
    }
    let registry = shared.registry.current();
    let views = istio::views(shared.lock().view(), &registry, &shared.istio);
    istio::render(w, &views, &shared.istio);
}

/// Label-string copies taken under the lock.
struct SelfCounters {
    lines: [u64; 4],
    parse_errors: [u64; ParseError::REASONS.len()],
    client_errors: [u64; 3],
    overflow: crate::aggregate::view::Overflow,
    series: usize,
    histogram_sets: usize,
    routes: Vec<String>,
    countries: Vec<String>,
    asns: Vec<String>,
}

impl From<AggregateView<'_>> for SelfCounters {
    fn from(a: AggregateView<'_>) -> Self {
        SelfCounters {
            lines: a.lines(),
            parse_errors: a.parse_errors(),
            client_errors: a.client_errors(),
            overflow: a.overflow(),
            series: a.series_len(),
            histogram_sets: a.histogram_sets_len(),
            routes: a.routes().to_vec(),
            countries: a.countries().to_vec(),
            asns: a.asns().to_vec(),
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
    w.family(&NODE_REQUESTS);
    let mut code_text = itoa::Buffer::new();
    for ((node, route, method, code), n) in &v.requests {
        let code = Aggregator::code_label(*code, &mut code_text);
        let method = METHODS
            .get(usize::from(*method))
            .copied()
            .unwrap_or("other");
        w.sample_u64(
            NODE_REQUESTS.name,
            &[
                ("node", v.name(*node)),
                ("route", c.route(*route)),
                ("method", method),
                ("code", code),
            ],
            *n,
        );
    }

    w.family(&NODE_DURATION);
    let bounds = seconds_buckets();
    for (node, h) in &v.duration {
        #[allow(clippy::cast_precision_loss)]
        let sum = h.sum as f64 / 1000.0;
        w.histogram(
            NODE_DURATION.name,
            &[("node", v.name(*node))],
            &bounds,
            &h.cumulative(),
            sum,
        );
    }

    w.family(&NODE_LAST_SEEN);
    for (node, ms) in &v.last_seen {
        #[allow(clippy::cast_precision_loss)]
        let secs = *ms as f64 / 1000.0;
        w.sample_f64(NODE_LAST_SEEN.name, &[("node", v.name(*node))], secs);
    }

    w.family(&NODE_INFO);
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
        w.sample_u64(NODE_INFO.name, &labels, 1);
    }

    w.family(&NODE_IDENTITY_MISMATCH);
    for (node, n) in &v.mismatch {
        w.sample_u64(NODE_IDENTITY_MISMATCH.name, &[("node", v.name(*node))], *n);
    }

    w.family(&NODE_ID_FALLBACK);
    for (node, n) in &v.fallback {
        w.sample_u64(NODE_ID_FALLBACK.name, &[("node", v.name(*node))], *n);
    }

    w.family(&UNREGISTERED_REQUESTS);
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
        w.sample_u64(UNREGISTERED_REQUESTS.name, &labels, *n);
    }
}

fn render_self(w: &mut Writer, shared: &Shared, registry: &Registry, c: &SelfCounters) {
    w.family(&LINES);
    for (i, r) in LINE_RESULTS.iter().enumerate() {
        w.sample_u64(LINES.name, &[("result", r)], c.lines[i]);
    }
    debug_assert_eq!(LINE_RESULTS[LineResult::TooLong as usize], "too_long");

    w.family(&PARSE_ERRORS);
    for (i, r) in ParseError::REASONS.iter().enumerate() {
        w.sample_u64(PARSE_ERRORS.name, &[("reason", r)], c.parse_errors[i]);
    }

    w.family(&CLIENT_ADDRESS_ERRORS);
    for (i, r) in CLIENT_REASONS.iter().enumerate() {
        w.sample_u64(
            CLIENT_ADDRESS_ERRORS.name,
            &[("reason", r)],
            c.client_errors[i],
        );
    }

    w.family(&LABEL_OVERFLOW);
    for (label, n) in c.overflow {
        w.sample_u64(LABEL_OVERFLOW.name, &[("label", label)], n);
    }

    w.family(&AGGREGATE_SERIES);
    w.sample_u64(AGGREGATE_SERIES.name, &[], c.series as u64);
    w.family(&AGGREGATE_SETS);
    w.sample_u64(AGGREGATE_SETS.name, &[], c.histogram_sets as u64);

    render_collector(w, shared, registry);
}

/// The collector's own families, none from the aggregator: scrapes, registry, sources,
/// checkpoints, readiness (served even while [`Counters::Withheld`]).
fn render_collector(w: &mut Writer, shared: &Shared, registry: &Registry) {
    let gate = &shared.scrapes;
    for (f, counts) in [
        (&SCRAPES_REJECTED, gate.rejected()),
        (&SCRAPES_CUT, gate.cut()),
    ] {
        w.family(f);
        for (endpoint, n) in counts {
            w.sample_u64(f.name, &[("endpoint", endpoint)], n);
        }
    }

    let h = &shared.registry;
    w.family(&REGISTRY_NODES);
    w.sample_u64(REGISTRY_NODES.name, &[], registry.nodes().len() as u64);
    w.family(&REGISTRY_CONFLICTS);
    w.sample_u64(
        REGISTRY_CONFLICTS.name,
        &[],
        registry.conflicts().len() as u64,
    );
    w.family(&REGISTRY_RELOADS);
    w.sample_u64(
        REGISTRY_RELOADS.name,
        &[("result", "success")],
        h.reload_success.load(Ordering::Relaxed),
    );
    w.sample_u64(
        REGISTRY_RELOADS.name,
        &[("result", "failure")],
        h.reload_failure.load(Ordering::Relaxed),
    );
    w.family(&REGISTRY_LAST_OK);
    w.sample_u64(
        REGISTRY_LAST_OK.name,
        &[],
        h.last_successful.load(Ordering::Relaxed),
    );
    w.family(&REGISTRY_LAST_SUCCESS);
    w.sample_u64(
        REGISTRY_LAST_SUCCESS.name,
        &[],
        h.last_success_seconds.load(Ordering::Relaxed),
    );
    render_sources(w, h);

    let s = &shared.sources;
    for (f, v) in [
        (&READ_BYTES, &s.bytes_read),
        (&READ_LINES, &s.lines_read),
        (&ROTATIONS, &s.rotations),
        (&TRUNCATIONS, &s.truncations),
        (&LONG_LINES, &s.long_lines_skipped),
        (&CHECKPOINT_WRITES, &s.checkpoint_writes),
        (&CHECKPOINT_FAILURES, &s.checkpoint_failures),
    ] {
        w.family(f);
        w.sample_u64(f.name, &[], v.load(Ordering::Relaxed));
    }
    w.family(&READ_LAG);
    if let Ok(lag) = s.lag.lock() {
        for (path, v) in lag.iter() {
            w.sample_u64(READ_LAG.name, &[("path", path)], *v);
        }
    }
    w.family(&FILES_FOLLOWED);
    let followed = s.lag.lock().map_or(0, |l| l.len());
    w.sample_u64(
        FILES_FOLLOWED.name,
        &[],
        u64::try_from(followed).unwrap_or(u64::MAX),
    );
    w.family(&CHECKPOINT_LAST_OK);
    w.sample_u64(
        CHECKPOINT_LAST_OK.name,
        &[],
        1 - s
            .checkpoint_last_write_failed
            .load(Ordering::Relaxed)
            .min(1),
    );
    let last = s.checkpoint_last_success_unix.load(Ordering::Relaxed);
    if last > 0 {
        w.family(&CHECKPOINT_LAST_WRITE);
        w.sample_u64(CHECKPOINT_LAST_WRITE.name, &[], last);
    }
    w.family(&READY);
    w.sample_u64(
        READY.name,
        &[],
        u64::from(shared.sources.ready.load(Ordering::Acquire)),
    );
}

fn render_sources(w: &mut Writer, h: &crate::resolve::reload::RegistryHandle) {
    let stats = h.source_stats();
    type Get = fn(&crate::resolve::reload::RegistrySourceStats) -> u64;
    let gauges: [(&Family, Get); 5] = [
        (&SOURCE_NODES, |s| s.nodes),
        (&SOURCE_SKIPPED, |s| s.skipped),
        (&SOURCE_SHADOWED, |s| s.shadowed),
        (&SOURCE_LAST_OK, |s| s.last_successful),
        (&SOURCE_LAST_SUCCESS, |s| s.last_success_seconds),
    ];
    for (f, get) in gauges {
        w.family(f);
        for (kind, s) in &stats {
            w.sample_u64(f.name, &[("source", kind.label())], get(s));
        }
    }
    w.family(&SOURCE_RELOADS);
    for (kind, s) in &stats {
        for (result, v) in [
            ("success", s.success),
            ("unchanged", s.unchanged),
            ("failure", s.failure),
        ] {
            w.sample_u64(
                SOURCE_RELOADS.name,
                &[("source", kind.label()), ("result", result)],
                v,
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A shared state that counted one request from node `n1` (first pass not done).
    pub(crate) fn shared_with_one_request() -> Arc<Shared> {
        use crate::aggregate::Limits;
        use crate::pipeline::tests::{n1_registry, n1_request};
        use crate::pipeline::LineProcessor;
        use crate::source::Line;
        let shared = Shared::with_registry(n1_registry(), Limits::default());
        let line = n1_request("1");
        LineProcessor::new(shared.clone()).process(&Line::batch(&[line]));
        shared
    }

    /// After a crash the counters restart from the last checkpoint: a scrape before the first
    /// pass would see them go down (a reset to Prometheus). They are withheld until
    /// `vpslens_ready 1`; the collector's own families are served throughout.
    #[test]
    fn counters_are_withheld_from_scrapes_until_the_first_pass_is_done() {
        let shared = shared_with_one_request();
        let scrape = |istio: bool| {
            let mut w = Writer::with_capacity(Dialect::Prometheus, 1 << 16);
            let counters = Counters::for_scrape(&shared);
            if istio {
                render_istio_into(&shared, &mut w, counters);
            } else {
                render_into(&shared, &mut w, counters);
            }
            w.finish()
        };
        let before = scrape(false);
        assert!(before.contains("\nvpslens_ready 0\n"), "{before}");
        assert!(before.contains("vpslens_registry_nodes 1"), "{before}");
        for counter in ["vpslens_node_requests_total{", "vpslens_lines_total{"] {
            assert!(
                !before.contains(counter),
                "{counter} served before ready: {before}"
            );
        }
        assert_eq!(scrape(true), "", "no istio series before ready");

        shared.sources.ready.store(true, Ordering::Release);
        let after = scrape(false);
        assert!(after.contains("vpslens_node_requests_total{"), "{after}");
        assert!(
            after.contains("vpslens_lines_total{result=\"ok\"} 1"),
            "{after}"
        );
        assert!(scrape(true).contains("istio_requests_total{"));
    }

    #[test]
    fn every_family_is_declared_once_with_a_valid_name() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a family declared twice");
        for f in FAMILIES {
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert!(!f.help.is_empty());
        }
    }
}
