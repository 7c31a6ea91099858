//! Per-node summaries: the `replay` table and `GET /api/nodes`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::aggregate::{Aggregator, Histogram, CODE_OTHER};
use crate::pipeline::Shared;
use crate::resolve::{Node, Registry};

/// One node's totals.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// True if the node is in the registry in force.
    pub registered: bool,
    /// Xboard node id from the registry.
    pub node_id: Option<u32>,
    /// Registry addresses (CIDR notation).
    pub addresses: Vec<String>,
    /// Registry labels.
    pub labels: BTreeMap<String, String>,
    /// Requests.
    pub requests: u64,
    /// Requests answered 5xx or not answered (code 0).
    pub errors: u64,
    /// Requests answered 4xx.
    pub client_errors: u64,
    /// Median duration (ms), interpolated in Envoy's buckets like `histogram_quantile`.
    pub p50_ms: Option<f64>,
    /// 99th percentile duration (ms), same method.
    pub p99_ms: Option<f64>,
    /// Latest `start_time` (Unix seconds).
    pub last_seen_seconds: Option<f64>,
    /// Requests whose `node_id` contradicted the registry.
    pub identity_mismatch: u64,
}

/// One node's request totals and merged duration histogram.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: u64,
    errors: u64,
    client_errors: u64,
    duration: Histogram,
}

/// Totals by aggregator node id (`None` for ids without series); no name per series.
fn totals_by_id(agg: &Aggregator) -> Vec<Option<Totals>> {
    let mut by_id: Vec<Option<Totals>> = vec![None; agg.node_names.len()];
    for (k, n) in agg.series() {
        let id = k.node as usize;
        if id >= by_id.len() {
            by_id.resize(id + 1, None);
        }
        let e = by_id[id].get_or_insert_with(Totals::default);
        e.requests += n;
        if k.code == 0 || (500..600).contains(&k.code) {
            e.errors += n;
        } else if (400..500).contains(&k.code) && k.code != CODE_OTHER {
            e.client_errors += n;
        }
    }
    for (k, h) in agg.histograms() {
        if let Some(Some(e)) = by_id.get_mut(k.node as usize) {
            e.duration.merge(&h.duration_ms());
        }
    }
    by_id
}

/// Every registered node (seen or not) and every node with counters, by name: `(name,
/// registry entry (`None`: removed from the registry), aggregator id)`.
fn listing<'a>(
    registry: &'a Registry,
    agg: &'a Aggregator,
    totals: &[Option<Totals>],
) -> Vec<(&'a str, Option<&'a Node>, Option<u32>)> {
    let mut v: Vec<(&str, Option<&Node>, Option<u32>)> = registry
        .nodes()
        .iter()
        .map(|n| (n.name.as_str(), Some(n), agg.find_node(&n.name)))
        .collect();
    for (id, t) in (0u32..).zip(totals) {
        let name = agg.node_name(id);
        if t.is_some() && registry.index_of(name).is_none() {
            v.push((name, None, Some(id)));
        }
    }
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// Totals for every registered node (seen or not) and every node with counters.
pub fn rows(shared: &Shared) -> (Vec<NodeRow>, u64) {
    let registry = shared.registry.current();
    let agg = shared.lock();
    let totals = totals_by_id(&agg);
    let rows = listing(&registry, &agg, &totals)
        .into_iter()
        .map(|(name, node, id)| {
            let t = id.and_then(|id| totals.get(id as usize).copied().flatten());
            let st = id.and_then(|id| agg.node_stats(id));
            NodeRow {
                name: name.to_owned(),
                registered: node.is_some(),
                node_id: node.and_then(|n| n.node_id),
                addresses: node.map_or_else(Vec::new, |n| {
                    n.addresses.iter().map(ToString::to_string).collect()
                }),
                labels: node.map_or_else(BTreeMap::new, |n| n.labels.clone()),
                requests: t.map_or(0, |t| t.requests),
                errors: t.map_or(0, |t| t.errors),
                client_errors: t.map_or(0, |t| t.client_errors),
                p50_ms: t.and_then(|t| t.duration.quantile(0.5)),
                p99_ms: t.and_then(|t| t.duration.quantile(0.99)),
                last_seen_seconds: st.and_then(|st| last_seen_seconds(st.last_seen_ms)),
                identity_mismatch: st.map_or(0, |st| st.identity_mismatch),
            }
        })
        .collect();
    let unregistered = agg.unregistered().map(|(_, c)| *c).sum();
    (rows, unregistered)
}

fn last_seen_seconds(ms: i64) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (ms > 0).then(|| ms as f64 / 1000.0)
}

/// The `replay` table: one row per node of [`rows`] (same order and figures), without copying
/// each node's registry entry.
pub fn table(shared: &Shared) -> String {
    let registry = shared.registry.current();
    let agg = shared.lock();
    let totals = totals_by_id(&agg);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>8} {:>6} {:>9} {:>9}  LAST_SEEN",
        "NODE", "REQUESTS", "ERRORS", "4XX", "P50_MS", "P99_MS"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for (name, node, id) in listing(&registry, &agg, &totals) {
        let t = id
            .and_then(|id| totals.get(id as usize).copied().flatten())
            .unwrap_or_default();
        let seen = id
            .and_then(|id| agg.node_stats(id))
            .and_then(|st| last_seen_seconds(st.last_seen_ms));
        let last = seen.map_or_else(
            || "never".to_owned(),
            |secs| {
                let t = UNIX_EPOCH + Duration::from_millis((secs * 1000.0) as u64);
                humantime::format_rfc3339_millis(t).to_string()
            },
        );
        let name = if node.is_some() {
            Cow::Borrowed(name)
        } else {
            Cow::Owned(format!("{name} (removed)"))
        };
        let _ = writeln!(
            s,
            "{:<16} {:>9} {:>8} {:>6} {:>9} {:>9}  {}",
            name,
            t.requests,
            t.errors,
            t.client_errors,
            ms(t.duration.quantile(0.5)),
            ms(t.duration.quantile(0.99)),
            last
        );
    }
    let unregistered: u64 = agg.unregistered().map(|(_, c)| *c).sum();
    let lines = agg.lines;
    drop(agg);
    let _ = writeln!(s, "{:<16} {:>9}", "(unregistered)", unregistered);
    let _ = writeln!(
        s,
        "lines: ok={} malformed={} no_client={} too_long={}   ERRORS = 5xx + no response (code 0)",
        lines[0], lines[1], lines[2], lines[3]
    );
    s
}
