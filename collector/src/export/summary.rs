//! The `replay` table (the daemon's views are in [`super::fleet`]).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::aggregate::{Aggregator, Histogram, CODE_OTHER};
use crate::pipeline::Shared;
use crate::resolve::{Node, Registry};

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

fn last_seen_seconds(ms: i64) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (ms > 0).then(|| ms as f64 / 1000.0)
}

/// The `replay` table: one row per registered node (and one per removed node with counters),
/// without copying each node's registry entry.
pub fn table(shared: &Shared) -> String {
    let registry = shared.registry.current();
    let agg = shared.lock();
    let totals = totals_by_id(&agg);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>8} {:>6} {:>9} {:>9} {:>8}  LAST_SEEN",
        "NODE", "REQUESTS", "ERRORS", "4XX", "P50_MS", "P99_MS", "MISMATCH"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for (name, node, id) in listing(&registry, &agg, &totals) {
        let t = id
            .and_then(|id| totals.get(id as usize).copied().flatten())
            .unwrap_or_default();
        let st = id.and_then(|id| agg.node_stats(id));
        let seen = st.and_then(|st| last_seen_seconds(st.last_seen_ms));
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
            "{:<16} {:>9} {:>8} {:>6} {:>9} {:>9} {:>8}  {}",
            name,
            t.requests,
            t.errors,
            t.client_errors,
            ms(t.duration.quantile(0.5)),
            ms(t.duration.quantile(0.99)),
            st.map_or(0, |st| st.identity_mismatch),
            last
        );
    }
    let unregistered: u64 = agg.unregistered().map(|(_, c)| *c).sum();
    let lines = agg.lines;
    drop(agg);
    let _ = writeln!(s, "{:<16} {:>9}", "(unregistered)", unregistered);
    let _ = writeln!(
        s,
        "lines: ok={} malformed={} no_client={} too_long={}   ERRORS = 5xx + no response (code 0); MISMATCH = requests with another node's node_id",
        lines[0], lines[1], lines[2], lines[3]
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_an_identity_mismatch_column() {
        let reg = Registry::from_bytes(
            std::path::Path::new("r.yaml"),
            b"nodes:\n  - {name: jp-01, addresses: [192.0.2.1], node_id: 1}\n  - {name: jp-02, addresses: [192.0.2.2], node_id: 2}\n",
        )
        .unwrap();
        let s = Shared::with_registry(reg, crate::aggregate::Limits::default());
        let lines: Vec<String> = [("192.0.2.1", 2), ("192.0.2.1", 2), ("192.0.2.1", 1), ("192.0.2.2", 2)]
            .iter()
            .map(|(ip, id)| {
                format!(
                    r#"{{"start_time":"2026-11-23T05:38:15.940Z","method":"GET","path":"/api/v1/server/UniProxy/config?node_id={id}&node_type=vless","response_code":200,"duration":3,"bytes_received":0,"bytes_sent":10,"downstream_remote_address":"{ip}:5000"}}"#
                )
            })
            .collect();
        let mut p = crate::pipeline::LineProcessor::new(s.clone());
        p.process(&crate::pipeline::Line::batch(&lines));
        let t = table(&s);
        let cols = |node: &str| -> Vec<String> {
            t.lines()
                .find(|l| l.starts_with(node))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert!(t.lines().next().unwrap().contains(" MISMATCH "), "{t}");
        assert_eq!(cols("jp-01")[1], "3", "{t}");
        assert_eq!(
            cols("jp-01")[6],
            "2",
            "two requests claimed node_id 2:\n{t}"
        );
        assert_eq!(cols("jp-02")[6], "0", "{t}");
    }
}
