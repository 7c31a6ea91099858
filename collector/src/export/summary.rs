//! Per-node summaries: the `replay` table and `GET /api/nodes`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::aggregate::{Histogram, CODE_OTHER};
use crate::pipeline::Shared;

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

/// Totals for every registered node (seen or not) and every node with counters.
pub fn rows(shared: &Shared) -> (Vec<NodeRow>, u64) {
    let registry = shared.registry.current();
    let agg = shared.lock();
    // By aggregator node id first (no name per series), then by name.
    let mut by_id: Vec<Option<(u64, u64, u64, Histogram)>> = vec![None; agg.node_names.len()];
    for (k, s) in agg.series() {
        let id = k.node as usize;
        if id >= by_id.len() {
            by_id.resize(id + 1, None);
        }
        let e = by_id[id].get_or_insert_with(Default::default);
        e.0 += s.requests;
        if k.code == 0 || (500..600).contains(&k.code) {
            e.1 += s.requests;
        } else if (400..500).contains(&k.code) && k.code != CODE_OTHER {
            e.2 += s.requests;
        }
        e.3.merge(&s.duration_ms);
    }
    let mut out: BTreeMap<String, NodeRow> = BTreeMap::new();
    for n in registry.nodes() {
        out.insert(
            n.name.clone(),
            NodeRow {
                name: n.name.clone(),
                registered: true,
                node_id: n.node_id,
                addresses: n.addresses.iter().map(ToString::to_string).collect(),
                labels: n.labels.clone(),
                requests: 0,
                errors: 0,
                client_errors: 0,
                p50_ms: None,
                p99_ms: None,
                last_seen_seconds: None,
                identity_mismatch: 0,
            },
        );
    }
    let by_node = by_id
        .into_iter()
        .zip(0u32..)
        .filter_map(|(e, id)| e.map(|e| (agg.node_name(id).to_owned(), e)));
    for (name, (req, err, cerr, h)) in by_node {
        let row = out.entry(name.clone()).or_insert_with(|| NodeRow {
            name: name.clone(),
            registered: false,
            node_id: None,
            addresses: Vec::new(),
            labels: BTreeMap::new(),
            requests: 0,
            errors: 0,
            client_errors: 0,
            p50_ms: None,
            p99_ms: None,
            last_seen_seconds: None,
            identity_mismatch: 0,
        });
        row.requests = req;
        row.errors = err;
        row.client_errors = cerr;
        row.p50_ms = h.quantile(0.5);
        row.p99_ms = h.quantile(0.99);
    }
    for (id, st) in agg.all_node_stats() {
        if let Some(row) = out.get_mut(agg.node_name(id)) {
            if st.last_seen_ms > 0 {
                #[allow(clippy::cast_precision_loss)]
                let s = st.last_seen_ms as f64 / 1000.0;
                row.last_seen_seconds = Some(s);
            }
            row.identity_mismatch = st.identity_mismatch;
        }
    }
    let unregistered = agg.unregistered().map(|(_, c)| *c).sum();
    (out.into_values().collect(), unregistered)
}

/// The `replay` table.
pub fn table(shared: &Shared) -> String {
    let (rows, unregistered) = rows(shared);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>8} {:>6} {:>9} {:>9}  LAST_SEEN",
        "NODE", "REQUESTS", "ERRORS", "4XX", "P50_MS", "P99_MS"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for r in &rows {
        let last = r.last_seen_seconds.map_or_else(
            || "never".to_owned(),
            |secs| {
                let t = UNIX_EPOCH + Duration::from_millis((secs * 1000.0) as u64);
                humantime::format_rfc3339_millis(t).to_string()
            },
        );
        let name = if r.registered {
            r.name.clone()
        } else {
            format!("{} (removed)", r.name)
        };
        let _ = writeln!(
            s,
            "{:<16} {:>9} {:>8} {:>6} {:>9} {:>9}  {}",
            name,
            r.requests,
            r.errors,
            r.client_errors,
            ms(r.p50_ms),
            ms(r.p99_ms),
            last
        );
    }
    let agg = shared.lock();
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
