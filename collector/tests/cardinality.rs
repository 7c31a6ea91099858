//! Attacker-controlled input never grows the number of series: 100,000 requests from 100,000
//! distinct unregistered addresses with 100,000 distinct paths and user agents (and hostile
//! codes/flags/clusters) stay under the configured caps, in bounded memory. Also: a `node_id`
//! mismatch is counted for the node whose address sent it, and nowhere else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::metrics;
use vpslens::pipeline::{Line, LineProcessor, Shared};
use vpslens::resolve::Registry;

const REGISTRY: &str = "nodes:\n  - name: jp-01\n    addresses: [203.0.113.11]\n    node_id: 1\n  - name: jp-02\n    addresses: [203.0.113.12]\n    node_id: 2\n";

fn shared(limits: Limits) -> Arc<Shared> {
    let reg = Registry::from_bytes(std::path::Path::new("r.yaml"), REGISTRY.as_bytes()).unwrap();
    Shared::with_registry(reg, limits)
}

fn line(ip: &str, path: &str, ua: &str, code: u32, flags: &str, cluster: &str) -> String {
    let dra = if ip.contains(':') {
        format!("[{ip}]:4000")
    } else {
        format!("{ip}:4000")
    };
    format!(
        r#"{{"start_time":"2026-11-23T05:38:15.940Z","method":"GET","path":"{path}","response_code":{code},"response_flags":"{flags}","duration":3,"user_agent":"{ua}","upstream_cluster":"{cluster}","x_forwarded_for":"{ip}","downstream_remote_address":"{dra}"}}"#
    )
}

fn sample_lines(text: &str, family: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(family))
        .count()
}

/// The value of one sample line (`name{labels} value` or `name value`), if present.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn hostile_unregistered_flood_stays_under_the_caps() {
    let limits = Limits {
        codes: 16,
        response_flags: 8,
        destinations: 4,
        unregistered_top: 500,
        ..Limits::default()
    };
    let s = shared(limits);
    let mut p = LineProcessor::new(s.clone());
    for batch in 0..100u32 {
        let lines: Vec<String> = (0..1000u32)
            .map(|k| {
                let i = batch * 1000 + k;
                let ip = format!("198.18.{}.{}", i >> 8 & 255, i & 255);
                let ip = if i % 2 == 0 { ip } else { format!("2001:db8:ffff::{:x}:{:x}", i >> 16, i & 0xffff) };
                line(
                    &ip,
                    &format!("/api/v1/server/UniProxy/x{i}?node_id={i}&node_type=t{i}&token=FAKE-TOKEN-do-not-use"),
                    &format!("evil-agent-{i}"),
                    100 + (i % 900),
                    &format!("F{i}"),
                    &format!("outbound|80||svc{i}.ns{i}.svc.cluster.local"),
                )
            })
            .chain((0..10).map(|k| {
                line(
                    "203.0.113.11",
                    &format!("/p{k}/{batch}?token=FAKE-TOKEN-do-not-use"),
                    "ua",
                    200 + k,
                    &format!("G{batch}{k}"),
                    &format!("outbound|80||reg{batch}.ns.svc.cluster.local"),
                )
            }))
            .collect();
        let batch: Vec<Line<'_>> = Line::batch(&lines);
        p.process(&batch);
    }
    let text = metrics::render(&s, Dialect::Prometheus);
    let istio = metrics::render_istio(&s, Dialect::Prometheus);
    assert!(!text.contains("FAKE-TOKEN") && !istio.contains("FAKE-TOKEN"));
    assert!(
        !text.contains("evil-agent")
            && !text.contains("198.18.")
            && !text.contains("2001:db8:ffff")
    );
    let agg = s.lock();
    assert_eq!(
        agg.lines[0], 101_000,
        "{:?} {:?} {:?}",
        agg.lines, agg.parse_errors, agg.client_errors
    );
    // What the caps leave, derived from the input. Codes are one list for all lines: the first
    // 16 distinct are 100..=115 (unregistered i = 0..16 of the first batch); of the 100,000
    // unregistered lines with code 100 + i % 900, 16 × 112 have one of those (100,000 =
    // 111 × 900 + 100, so residues 0..100 occur 112 times); every other line overflows,
    // including all 1,000 registered ones (codes 200..=209).
    let code_overflow = 101_000 - 16 * 112;
    // Flags and destinations are interned for registered lines only: 1,000 distinct flags
    // (`G{batch}{k}`) under a cap of 8; one destination per batch (`reg{batch}`, 10 lines)
    // under a cap of 4.
    let flags_overflow = 1_000 - 8;
    let destination_overflow = (100 - 4) * 10;
    for (label, want) in [
        ("code", code_overflow),
        ("response_flags", flags_overflow),
        ("destination", destination_overflow),
        ("country", 0),
        ("asn", 0),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!("vpslens_label_overflow_total{{label=\"{label}\"}}")
            ),
            Some(want),
            "{label}"
        );
    }
    // Unregistered series: every path is route `other`, codes 100..=115 + other.
    let unreg = sample_lines(&text, "vpslens_unregistered_requests_total");
    assert_eq!(unreg, 17, "{unreg} unregistered series");
    // jp-01's series (node, route other, GET, code other, flags, destination): batch 0 gives
    // 8 interned flags + other with reg0, batches 1..=3 flags other with reg1..=reg3, the rest
    // flags other with destination other.
    let series = 8 + 1 + 3 + 1;
    // `/metrics` sums them by (node, route, method, code): one line.
    assert_eq!(sample_lines(&text, "vpslens_node_requests_total"), 1);
    assert!(
        text.lines().count() < 5_000,
        "{} exposition lines",
        text.lines().count()
    );
    // Bounded memory, judged by what the aggregator holds (its own self-metrics and interner
    // sizes), not by the process's RSS: 101k distinct hostile values must not be retained.
    assert_eq!(
        sample(&text, "vpslens_aggregate_series"),
        Some(series as u64)
    );
    // Histogram sets are per (node, code, flags, destination): the same 13 here.
    assert_eq!(
        sample(&text, "vpslens_aggregate_distribution_sets"),
        Some(series as u64)
    );
    assert_eq!(agg.series_len(), series);
    assert_eq!(agg.flags.values().len(), 1 + 8, "{:?}", agg.flags.values());
    assert_eq!(agg.destinations.values().len(), 1 + 4);
    // Routes: the interner's reserved `other` (id 0), the 6 templates and the pipeline's own
    // `other` id; no path a client sent.
    assert_eq!(
        agg.routes.values().len(),
        1 + 6 + 1,
        "{:?}",
        agg.routes.values()
    );
    assert_eq!(agg.unregistered_top.len(), 500);
}

#[test]
fn node_id_mismatch_is_counted_for_the_sending_node_only() {
    let s = shared(Limits::default());
    let mut p = LineProcessor::new(s.clone());
    let lines = [
        // jp-01's address claiming jp-02's node_id (stale registry or a leaked token).
        line(
            "203.0.113.11",
            "/api/v1/server/UniProxy/config?node_id=2&node_type=vless&token=FAKE-TOKEN-do-not-use",
            "ua",
            200,
            "-",
            "c",
        ),
        line(
            "203.0.113.11",
            "/api/v1/server/UniProxy/config?node_id=1&node_type=vless&token=FAKE-TOKEN-do-not-use",
            "ua",
            200,
            "-",
            "c",
        ),
        line(
            "203.0.113.12",
            "/api/v1/server/UniProxy/user?node_id=2&node_type=vless&token=FAKE-TOKEN-do-not-use",
            "ua",
            200,
            "-",
            "c",
        ),
        // An unregistered client claiming jp-01's id is not a node mismatch.
        line(
            "192.0.2.50",
            "/api/v1/server/UniProxy/user?node_id=1&node_type=vless&token=FAKE-TOKEN-do-not-use",
            "ua",
            200,
            "-",
            "c",
        ),
    ];
    let batch: Vec<Line<'_>> = Line::batch(&lines);
    p.process(&batch);
    let text = metrics::render(&s, Dialect::Prometheus);
    let mismatches: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vpslens_node_identity_mismatch_total{"))
        .collect();
    assert_eq!(
        mismatches,
        ["vpslens_node_identity_mismatch_total{node=\"jp-01\"} 1"]
    );
    let top = s.lock().unregistered_top.top(10);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].address.to_string(), "192.0.2.50");
}
