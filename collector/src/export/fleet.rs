//! The fleet view: the one place that reads the aggregator and the registry for the fleet page
//! (`GET /`), `GET /api/nodes`, `GET /api/unregistered` and, through `/api/nodes`,
//! `vpslens status`.
//!
//! A node's status comes from one function, [`status`], with the thresholds of
//! `k8s/alerts/vpslens-rules.yaml`: `VpsNodeSilent` (no request for more than 3 of the node's
//! poll intervals, [`FleetConfig::silent_after_poll_intervals`]; the interval is the registry
//! label `poll_interval_seconds`, else `default_poll_interval_seconds`, as exported in
//! `vpslens_node_poll_interval_seconds`), `VpsNodeNeverSeen`, `VpsNodeErrorRateHigh`
//! (more than 10% 5xx or code 0 among at least 10 requests in 5 minutes) and
//! `VpsNodeIdentityMismatch` (any mismatch in 10 minutes). Windowed figures are differences
//! against the counter history kept in [`Shared::history`](crate::pipeline::Shared).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::aggregate::window::{History, NodeCounts, Sample};
use crate::aggregate::{Aggregator, Histogram};
use crate::pipeline::Shared;
use vpslens_parsers::ParseError;

/// The status rule and its windows (`fleet:` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Poll intervals without a request after which a node that was seen is `silent` (count;
    /// the node's interval is its registry label `poll_interval_seconds`, else
    /// `default_poll_interval_seconds`); the alert rule `VpsNodeSilent` uses 3. Default 3.
    pub silent_after_poll_intervals: u64,
    /// Share of 5xx/code-0 answers in the rate window above which a node is `erroring`
    /// (`VpsNodeErrorRateHigh`). Default 0.10.
    pub error_ratio: f64,
    /// Requests the rate window needs before the error ratio counts. Default 10.
    pub error_min_requests: u64,
    /// Window of the request rate and the error ratio, seconds (`[5m]` in the alert rules).
    /// Default 300.
    pub rate_window_seconds: u64,
    /// Window in which any identity mismatch makes a node `identity_mismatch`, seconds
    /// (`VpsNodeIdentityMismatch`: `[10m]`). Default 600.
    pub identity_mismatch_window_seconds: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            silent_after_poll_intervals: 3,
            error_ratio: 0.10,
            error_min_requests: 10,
            rate_window_seconds: 300,
            identity_mismatch_window_seconds: 600,
        }
    }
}

impl FleetConfig {
    /// The config itself if its numbers make sense.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`](crate::config::ConfigError) for a zero threshold or window,
    /// or an error ratio outside 0..1.
    pub fn validated(self) -> Result<FleetConfig, crate::config::ConfigError> {
        let bad = |m: &str| Err(crate::config::ConfigError::Invalid(format!("fleet.{m}")));
        if self.silent_after_poll_intervals == 0 {
            return bad("silent_after_poll_intervals must be >= 1");
        }
        if self.rate_window_seconds == 0 || self.identity_mismatch_window_seconds == 0 {
            return bad("windows must be >= 1 s");
        }
        if !(0.0..=1.0).contains(&self.error_ratio) {
            return bad("error_ratio must be between 0 and 1");
        }
        Ok(self)
    }

    /// A counter history long enough for both windows, sampled at a tenth of the shorter
    /// window (between 1 and 30 s).
    pub fn history(&self) -> History {
        let longest = self
            .rate_window_seconds
            .max(self.identity_mismatch_window_seconds);
        let shortest = self
            .rate_window_seconds
            .min(self.identity_mismatch_window_seconds);
        let gap_ms = (shortest.saturating_mul(100)).clamp(1_000, 30_000);
        History::new(
            i64::try_from(longest.saturating_mul(1000)).unwrap_or(i64::MAX),
            i64::try_from(gap_ms).unwrap_or(30_000),
        )
    }
}

/// A node's status, worst first (declaration order is the page's sort order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Seen, but no request for more than `silent_after_poll_intervals` poll intervals.
    Silent,
    /// Too many 5xx/code-0 answers in the rate window.
    Erroring,
    /// Requests from its addresses carried another `node_id` in the mismatch window.
    IdentityMismatch,
    /// Registered, never seen.
    NeverSeen,
    /// No longer in the registry (its counters are kept for the removal grace).
    Removed,
    /// None of the above.
    Ok,
}

impl Status {
    /// Every status, worst first.
    pub const ALL: [Status; 6] = [
        Status::Silent,
        Status::Erroring,
        Status::IdentityMismatch,
        Status::NeverSeen,
        Status::Removed,
        Status::Ok,
    ];

    /// The JSON/page name (`ok`, `silent`, `never_seen`, `erroring`, `identity_mismatch`,
    /// `removed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Silent => "silent",
            Status::Erroring => "erroring",
            Status::IdentityMismatch => "identity_mismatch",
            Status::NeverSeen => "never_seen",
            Status::Removed => "removed",
            Status::Ok => "ok",
        }
    }

    /// The status of a name of [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What [`status`] looks at for one node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// In the registry in force.
    pub registered: bool,
    /// Seconds since its latest request (`None`: never seen).
    pub last_seen_age_seconds: Option<f64>,
    /// Silence threshold for this node, seconds: [`FleetConfig::silent_after_poll_intervals`]
    /// × the node's poll interval.
    pub silent_after_seconds: u64,
    /// Counter increases over the rate window.
    pub rate_window: NodeCounts,
    /// Identity mismatches over the mismatch window.
    pub identity_mismatches: u64,
}

/// The status rule, shared by the page, `/api/nodes` and `vpslens status`. The first of these
/// that holds wins: removed, never seen, silent (age strictly above the observation's
/// threshold, like the alert's `>`), erroring, identity mismatch, ok.
pub fn status(rule: &FleetConfig, o: &Observation) -> Status {
    if !o.registered {
        return Status::Removed;
    }
    let Some(age) = o.last_seen_age_seconds else {
        return Status::NeverSeen;
    };
    #[allow(clippy::cast_precision_loss)]
    if age > o.silent_after_seconds as f64 {
        return Status::Silent;
    }
    let w = &o.rate_window;
    #[allow(clippy::cast_precision_loss)]
    if w.requests >= rule.error_min_requests.max(1)
        && w.errors as f64 > rule.error_ratio * w.requests as f64
    {
        return Status::Erroring;
    }
    if o.identity_mismatches > 0 {
        return Status::IdentityMismatch;
    }
    Status::Ok
}

/// `x` rounded to `decimals` places (so JSON shows `0.495`, not `0.49499999999999994`).
pub fn round(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

/// One node on the page and in `/api/nodes`. Durations in seconds, rates per second,
/// ratios in 0..1; every figure rounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name (registry).
    pub name: String,
    /// See [`status`].
    pub status: Status,
    /// In the registry in force.
    pub registered: bool,
    /// Xboard node id from the registry.
    pub node_id: Option<u32>,
    /// Registry labels.
    pub labels: BTreeMap<String, String>,
    /// Registry addresses (CIDR notation).
    pub addresses: Vec<String>,
    /// Latest `start_time` seen, Unix seconds (ms precision).
    pub last_seen_timestamp_seconds: Option<f64>,
    /// Seconds since then (0.1 s precision; 0 when the log's clock is ahead).
    pub last_seen_age_seconds: Option<f64>,
    /// Requests per second over the rate window (`None` before a window exists).
    pub requests_per_second: Option<f64>,
    /// 5xx/code-0 share of the window's requests (`None` without requests).
    pub error_ratio: Option<f64>,
    /// Expected seconds between the node's polls (registry label `poll_interval_seconds`, else
    /// `default_poll_interval_seconds`).
    pub poll_interval_seconds: u64,
    /// Seconds of silence after which it is `silent` (a multiple of its poll interval).
    pub silent_after_seconds: u64,
    /// Identity mismatches in the mismatch window.
    pub identity_mismatches_in_window: u64,
    /// Requests since start (or the checkpoint).
    pub requests_total: u64,
    /// 5xx and code 0 since start.
    pub errors_total: u64,
    /// 4xx since start.
    pub client_errors_total: u64,
    /// Identity mismatches since start.
    pub identity_mismatch_total: u64,
    /// Median duration since start, seconds (Envoy's buckets, interpolated like
    /// `histogram_quantile`; ms precision).
    pub p50_seconds: Option<f64>,
    /// 99th percentile duration since start, seconds (same method).
    pub p99_seconds: Option<f64>,
}

/// The vpslens process itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfHealth {
    /// Lines processed per second over the rate window.
    pub lines_per_second: Option<f64>,
    /// `vpslens_lines_total` by result.
    pub lines_total: BTreeMap<String, u64>,
    /// Parse errors by reason (non-zero reasons only).
    pub parse_errors: BTreeMap<String, u64>,
    /// Read lag of each followed file, bytes.
    pub read_lag_bytes: BTreeMap<String, u64>,
    /// Checkpoints written.
    pub checkpoint_writes_total: u64,
    /// Checkpoint writes that failed.
    pub checkpoint_failures_total: u64,
    /// First pass over the files done.
    pub ready: bool,
    /// The latest update of every registry source succeeded.
    pub registry_last_reload_successful: bool,
    /// Per registry source kind, in precedence order.
    pub registry_sources: Vec<SourceHealth>,
}

/// One registry source kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    /// `file`, `workload_entry`, `file_sd`, ….
    pub source: String,
    /// Nodes in its last good lists.
    pub nodes: u64,
    /// The latest attempt of each instance succeeded.
    pub last_reload_successful: bool,
    /// Unix seconds of the oldest latest success (0: one never succeeded).
    pub last_success_timestamp_seconds: u64,
    /// Failed attempts.
    pub failures_total: u64,
}

/// The whole fleet at one moment: `GET /api/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// When it was read, Unix seconds.
    pub generated_at_seconds: f64,
    /// See [`FleetConfig::silent_after_poll_intervals`].
    pub silent_after_poll_intervals: u64,
    /// Poll interval of nodes without a `poll_interval_seconds` label, seconds.
    pub default_poll_interval_seconds: u64,
    /// Length of the window the rates cover now, seconds (shorter than
    /// [`FleetConfig::rate_window_seconds`] while the process is younger).
    pub rate_window_seconds: f64,
    /// Nodes per status (every status present).
    pub status_counts: BTreeMap<Status, usize>,
    /// Every registered node and every node with counters, worst status first, then name.
    pub nodes: Vec<NodeView>,
    /// Requests from unregistered addresses since start.
    pub unregistered_requests_total: u64,
    /// The process.
    pub health: SelfHealth,
}

/// One busy unregistered address: `GET /api/unregistered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnregisteredView {
    /// Client address.
    pub address: String,
    /// Estimated requests (upper bound).
    pub requests: u64,
    /// Lower bound of the requests.
    pub requests_at_least: u64,
    /// Latest request, Unix seconds.
    pub last_seen_seconds: f64,
    /// The latest `node_id` it sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_node_id: Option<u32>,
    /// The registry node that has that `node_id`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_node: Option<String>,
    /// GeoIP country (with a country database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// GeoIP ASN (with an ASN database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<String>,
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The fleet at `now_ms` (Unix ms). Samples the counter history first if due.
#[allow(clippy::cast_precision_loss)]
pub fn snapshot(shared: &Shared, now_ms: i64) -> Fleet {
    shared.sample_history(now_ms);
    let rule = &shared.fleet;
    let rate_ms = i64::try_from(rule.rate_window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mism_ms = i64::try_from(rule.identity_mismatch_window_seconds.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    let registry = shared.registry.current();
    // Baselines are cloned out so the history lock is never held with the aggregator's.
    let (rate_base, mism_base) = {
        let h = shared
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            h.baseline(now_ms, rate_ms).cloned(),
            h.baseline(now_ms, mism_ms).cloned(),
        )
    };
    let agg = shared.lock();
    let current = Sample::take(&agg, now_ms);
    let durations = durations_by_id(&agg);
    let window_s = rate_base
        .as_ref()
        .map_or(0.0, |b| (now_ms - b.at_ms).max(0) as f64 / 1000.0);
    let mut nodes: Vec<NodeView> = Vec::with_capacity(registry.nodes().len());
    let default_interval = shared.default_poll_interval_seconds.load(Ordering::Relaxed);
    let poll_interval = |node: Option<&crate::resolve::Node>| {
        node.and_then(crate::resolve::Node::poll_interval_seconds)
            .unwrap_or(default_interval)
    };
    let view = |name: &str, node: Option<&crate::resolve::Node>, id: Option<u32>| {
        let counts = id.map(|id| current.node(id)).unwrap_or_default();
        let st = id.and_then(|id| agg.node_stats(id));
        let last_ms = st.map_or(0, |s| s.last_seen_ms);
        // Rounded before the rule sees it, so the age shown and the status always agree.
        let age = (last_ms > 0).then(|| round((now_ms - last_ms).max(0) as f64 / 1000.0, 1));
        let since = |b: &Option<Sample>| {
            b.as_ref()
                .zip(id)
                .map_or(NodeCounts::default(), |(b, id)| counts.since(&b.node(id)))
        };
        let rate_window = since(&rate_base);
        let obs = Observation {
            registered: node.is_some(),
            last_seen_age_seconds: age,
            silent_after_seconds: rule
                .silent_after_poll_intervals
                .saturating_mul(poll_interval(node)),
            rate_window,
            identity_mismatches: since(&mism_base).identity_mismatch,
        };
        let d = id.and_then(|id| durations.get(id as usize).copied().flatten());
        let q = |p: f64| {
            d.and_then(|h| h.quantile(p))
                .map(|ms| round(ms / 1000.0, 4))
        };
        NodeView {
            name: name.to_owned(),
            status: status(rule, &obs),
            registered: node.is_some(),
            node_id: node.and_then(|n| n.node_id),
            labels: node.map_or_else(BTreeMap::new, |n| n.labels.clone()),
            addresses: node.map_or_else(Vec::new, |n| {
                n.addresses.iter().map(ToString::to_string).collect()
            }),
            last_seen_timestamp_seconds: (last_ms > 0).then(|| last_ms as f64 / 1000.0),
            last_seen_age_seconds: age,
            requests_per_second: (window_s > 0.0)
                .then(|| round(rate_window.requests as f64 / window_s, 4)),
            error_ratio: (rate_window.requests > 0)
                .then(|| round(rate_window.errors as f64 / rate_window.requests as f64, 4)),
            poll_interval_seconds: poll_interval(node),
            silent_after_seconds: obs.silent_after_seconds,
            identity_mismatches_in_window: obs.identity_mismatches,
            requests_total: counts.requests,
            errors_total: counts.errors,
            client_errors_total: counts.client_errors,
            identity_mismatch_total: st.map_or(0, |s| s.identity_mismatch),
            p50_seconds: q(0.5),
            p99_seconds: q(0.99),
        }
    };
    for n in registry.nodes() {
        nodes.push(view(&n.name, Some(n), agg.find_node(&n.name)));
    }
    for (id, c) in (0u32..).zip(&current.nodes) {
        let name = agg.node_name(id);
        let has_state = c.requests > 0 || agg.node_stats(id).is_some_and(|s| s.last_seen_ms > 0);
        if has_state && registry.index_of(name).is_none() {
            nodes.push(view(name, None, Some(id)));
        }
    }
    let unregistered_requests_total = agg.unregistered().map(|(_, c)| *c).sum();
    let mut lines_total = BTreeMap::new();
    for (name, v) in crate::aggregate::LINE_RESULTS.iter().zip(agg.lines) {
        lines_total.insert((*name).to_owned(), v);
    }
    let parse_errors = ParseError::REASONS
        .iter()
        .zip(agg.parse_errors)
        .filter(|(_, v)| *v > 0)
        .map(|(r, v)| ((*r).to_owned(), v))
        .collect();
    drop(agg);
    nodes.sort_by(|a, b| {
        a.status.cmp(&b.status).then_with(|| {
            b.last_seen_age_seconds
                .partial_cmp(&a.last_seen_age_seconds)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.name.cmp(&b.name))
        })
    });
    let mut status_counts: BTreeMap<Status, usize> =
        Status::ALL.into_iter().map(|s| (s, 0)).collect();
    for n in &nodes {
        *status_counts.entry(n.status).or_insert(0) += 1;
    }
    let s = &shared.sources;
    let health = SelfHealth {
        lines_per_second: rate_base.as_ref().and_then(|b| {
            (window_s > 0.0)
                .then(|| round(current.lines.saturating_sub(b.lines) as f64 / window_s, 1))
        }),
        lines_total,
        parse_errors,
        read_lag_bytes: s
            .lag
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default(),
        checkpoint_writes_total: s.checkpoint_writes.load(Ordering::Relaxed),
        checkpoint_failures_total: s.checkpoint_failures.load(Ordering::Relaxed),
        ready: shared.sources.ready.load(Ordering::Acquire),
        registry_last_reload_successful: shared
            .registry
            .source_stats()
            .iter()
            .all(|(_, st)| st.last_successful == 1),
        registry_sources: shared
            .registry
            .source_stats()
            .into_iter()
            .map(|(k, st)| SourceHealth {
                source: k.label().to_owned(),
                nodes: st.nodes,
                last_reload_successful: st.last_successful == 1,
                last_success_timestamp_seconds: st.last_success_seconds,
                failures_total: st.failure,
            })
            .collect(),
    };
    Fleet {
        generated_at_seconds: round(now_ms as f64 / 1000.0, 3),
        silent_after_poll_intervals: rule.silent_after_poll_intervals,
        default_poll_interval_seconds: default_interval,
        rate_window_seconds: round(window_s, 1),
        status_counts,
        nodes,
        unregistered_requests_total,
        health,
    }
}

/// Merged duration histograms by aggregator node id.
fn durations_by_id(agg: &Aggregator) -> Vec<Option<Histogram>> {
    let mut by_id: Vec<Option<Histogram>> = vec![None; agg.node_names.len()];
    for (k, h) in agg.histograms() {
        let id = k.node as usize;
        if id >= by_id.len() {
            by_id.resize(id + 1, None);
        }
        by_id[id]
            .get_or_insert_with(Histogram::default)
            .merge(&h.duration_ms());
    }
    by_id
}

/// The `limit` busiest unregistered addresses, with the node they claim to be and (GeoIP on)
/// their country/ASN.
#[allow(clippy::cast_precision_loss)]
pub fn unregistered(shared: &Shared, limit: usize) -> Vec<UnregisteredView> {
    let top = shared.lock().unregistered_top.top(limit);
    let registry = shared.registry.current();
    let geo = shared.config.geo.as_deref();
    top.iter()
        .map(|h| {
            let l = geo.map(|g| (g, g.lookup(h.address)));
            UnregisteredView {
                address: h.address.to_string(),
                requests: h.count,
                requests_at_least: h.count - h.error,
                last_seen_seconds: h.last_seen_ms as f64 / 1000.0,
                claimed_node_id: h.claimed_node_id,
                claimed_node: h
                    .claimed_node_id
                    .and_then(|id| registry.node_by_id(id))
                    .and_then(|i| registry.node(i))
                    .map(|n| n.name.clone()),
                country: l
                    .as_ref()
                    .filter(|(g, _)| g.has_country())
                    .map(|(_, l)| l.country_label().to_owned()),
                asn: l
                    .as_ref()
                    .filter(|(g, _)| g.has_asn())
                    .map(|(_, l)| l.asn_label().as_str().to_owned()),
            }
        })
        .collect()
}

/// Keeps the nodes whose labels hold every `key=value` of `filter` (`None`/empty: all) and
/// whose status is in `statuses` (empty: all).
pub fn filter_nodes<'a>(
    nodes: &'a [NodeView],
    filter: &'a [(String, String)],
    statuses: &'a [Status],
) -> impl Iterator<Item = &'a NodeView> {
    nodes.iter().filter(move |n| {
        (statuses.is_empty() || statuses.contains(&n.status))
            && filter.iter().all(|(k, v)| {
                if k == "name" {
                    n.name == *v
                } else {
                    n.labels.get(k).is_some_and(|x| x == v)
                }
            })
    })
}

/// Parses `region=jp,app=xrayr` into pairs (entries without `=` are ignored).
pub fn parse_label_filter(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(age: f64) -> Observation {
        Observation {
            registered: true,
            last_seen_age_seconds: Some(age),
            silent_after_seconds: FleetConfig::default().silent_after_poll_intervals * 60,
            ..Observation::default()
        }
    }

    #[test]
    fn status_rule_matches_the_alert_thresholds() {
        let rule = FleetConfig::default();
        assert_eq!(
            status(&rule, &seen(180.0)),
            Status::Ok,
            "alert is `> 3 * 60`"
        );
        assert_eq!(status(&rule, &seen(180.1)), Status::Silent);
        let never = Observation {
            registered: true,
            ..Observation::default()
        };
        assert_eq!(status(&rule, &never), Status::NeverSeen);
        let removed = Observation {
            registered: false,
            ..seen(1000.0)
        };
        assert_eq!(status(&rule, &removed), Status::Removed);
        let mut o = seen(1.0);
        // 1 of 10 is exactly 10%: the alert's `> 0.10` does not fire.
        o.rate_window = NodeCounts {
            requests: 10,
            errors: 1,
            ..NodeCounts::default()
        };
        assert_eq!(status(&rule, &o), Status::Ok);
        o.rate_window.errors = 2;
        assert_eq!(status(&rule, &o), Status::Erroring);
        // Fewer than 10 requests: not erroring even at 100%.
        o.rate_window = NodeCounts {
            requests: 9,
            errors: 9,
            ..NodeCounts::default()
        };
        assert_eq!(status(&rule, &o), Status::Ok);
        o.identity_mismatches = 1;
        assert_eq!(status(&rule, &o), Status::IdentityMismatch);
        // Silence wins over everything a silent node may also have.
        o.last_seen_age_seconds = Some(500.0);
        assert_eq!(status(&rule, &o), Status::Silent);
        // The threshold is a parameter (per-node poll intervals).
        let fast = |age| Observation {
            silent_after_seconds: 3,
            ..seen(age)
        };
        assert_eq!(status(&rule, &fast(3.5)), Status::Silent);
        assert_eq!(status(&rule, &fast(2.5)), Status::Ok);
    }

    #[test]
    fn silence_threshold_default_is_three_alert_poll_intervals() {
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../k8s/alerts/vpslens-rules.yaml"
        ))
        .unwrap();
        let want = format!(
            "> {} * max by (node) (max_over_time(vpslens_node_poll_interval_seconds",
            FleetConfig::default().silent_after_poll_intervals
        );
        assert!(rules.contains(&want), "VpsNodeSilent no longer says {want}");
    }

    fn event(node: u32, code: u16, at_ms: i64, mismatch: bool) -> crate::aggregate::Event<'static> {
        crate::aggregate::Event {
            node: Some(node),
            route: 0,
            method: 0,
            code,
            flags: None,
            upstream_cluster: None,
            duration_ms: Some(495),
            bytes_received: 0,
            bytes_sent: 0,
            start_time_ms: at_ms,
            identity_mismatch: mismatch,
            node_id_fallback: false,
            client: None,
            claimed_node_id: None,
            geo: crate::resolve::geo::GeoLabels::default(),
        }
    }

    #[test]
    fn snapshot_applies_the_rule_over_windows_and_sorts_worst_first() {
        let reg = crate::resolve::Registry::from_bytes(
            std::path::Path::new("r.yaml"),
            b"nodes:\n  - {name: a-ok, addresses: [192.0.2.1]}\n  - {name: b-err, addresses: [192.0.2.2]}\n  - {name: c-never, addresses: [192.0.2.3]}\n  - {name: d-quiet, addresses: [192.0.2.4]}\n  - {name: e-mism, addresses: [192.0.2.5]}\n",
        )
        .unwrap();
        let s = Shared::with_registry(reg, crate::aggregate::Limits::default());
        let t0 = 1_800_000_000_000;
        {
            let mut a = s.lock();
            let gone = a.node_id("z-gone");
            a.record(&event(gone, 200, t0, false));
            // d-quiet: busy and failing long ago, silent now.
            let q = a.node_id("d-quiet");
            for _ in 0..20 {
                a.record(&event(q, 503, t0, false));
            }
            // e-mism: one mismatch long ago (outside the 600 s window).
            let m = a.node_id("e-mism");
            a.record(&event(m, 200, t0, true));
        }
        s.sample_history(t0);
        let now = t0 + 700_000;
        {
            let mut a = s.lock();
            let ok = a.node_id("a-ok");
            let err = a.node_id("b-err");
            let m = a.node_id("e-mism");
            for i in 0..20 {
                a.record(&event(ok, 200, now - 1_000, false));
                a.record(&event(
                    err,
                    if i < 3 { 503 } else { 200 },
                    now - 2_000,
                    false,
                ));
            }
            a.record(&event(m, 200, now - 500, false));
        }
        let f = snapshot(&s, now);
        let got: Vec<(&str, Status)> = f
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.status))
            .collect();
        assert_eq!(
            got,
            [
                ("d-quiet", Status::Silent),
                ("b-err", Status::Erroring),
                ("c-never", Status::NeverSeen),
                ("z-gone", Status::Removed),
                ("a-ok", Status::Ok),
                ("e-mism", Status::Ok),
            ],
            "an old mismatch and old errors are outside their windows"
        );
        let a = &f.nodes[4];
        assert_eq!(a.requests_per_second, Some(round(20.0 / 700.0, 4)));
        assert_eq!(a.p50_seconds, Some(0.375), "halfway into (250, 500] ms");
        assert_eq!(a.last_seen_age_seconds, Some(1.0));
        assert_eq!(f.nodes[1].error_ratio, Some(0.15));
        assert_eq!(f.nodes[0].requests_total, 20);
        assert_eq!(f.status_counts[&Status::Silent], 1);
        assert_eq!(f.rate_window_seconds, 700.0);
        // A recent mismatch counts.
        s.sample_history(now);
        {
            let mut a = s.lock();
            let m = a.node_id("e-mism");
            a.record(&event(m, 200, now + 1_000, true));
        }
        let f = snapshot(&s, now + 2_000);
        let e = f.nodes.iter().find(|n| n.name == "e-mism").unwrap();
        assert_eq!(e.status, Status::IdentityMismatch);
        assert_eq!(e.identity_mismatches_in_window, 1);
    }

    #[test]
    fn fleet_and_xboard_config_keys_are_checked() {
        use crate::config::{FileConfig, Overrides, Settings};
        let parse = |y: &str| serde_norway::from_str::<FileConfig>(y);
        assert!(parse("fleet: {silent_after: 3}\n").is_err(), "unknown key");
        let f = parse("fleet: {silent_after_poll_intervals: 5}\n").unwrap();
        let s = Settings::merge(f, Overrides::default()).unwrap();
        assert_eq!(s.file.fleet.silent_after_poll_intervals, 5);
        assert_eq!(s.file.fleet.rate_window_seconds, 300, "serde default");
        let f = parse("fleet: {error_ratio: 2}\n").unwrap();
        assert!(Settings::merge(f, Overrides::default()).is_err());
        let f = parse(
            "xboard: {url: 'https://p.example', secure_path: x, token_file: /t, token_env: T}\n",
        )
        .unwrap();
        let e = Settings::merge(f, Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("exactly one of"), "{e}");
        assert!(
            parse("xboard: {url: 'https://p.example', secure_path: x, token: abc}\n").is_err(),
            "the token itself is not a config key"
        );
    }

    #[test]
    fn numbers_are_rounded() {
        assert_eq!(round(0.494_999_999_999_999_94, 4), 0.495);
        assert_eq!(serde_json::to_string(&round(0.1 + 0.2, 4)).unwrap(), "0.3");
    }

    #[test]
    fn label_filter_parses_pairs() {
        assert_eq!(
            parse_label_filter("region=jp, app=xrayr,bogus"),
            vec![
                ("region".to_owned(), "jp".to_owned()),
                ("app".to_owned(), "xrayr".to_owned())
            ]
        );
    }
}
