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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
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
    let rss_before = rss_kib();
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
    // Routes: 6 templates + other; codes: 16 + other.
    let unreg = sample_lines(&text, "vpslens_unregistered_requests_total");
    assert!(unreg <= 7 * 17, "{unreg} unregistered series");
    let node = sample_lines(&text, "vpslens_node_requests_total");
    assert!(node <= 2 * 7 * 10 * 17, "{node} node series");
    assert!(agg.series_len() <= 2 * 7 * 10 * 17 * 9 * 5);
    assert_eq!(agg.unregistered_top.len(), 500);
    assert!(agg.code_overflow > 0 && agg.flags.overflow > 0 && agg.destinations.overflow > 0);
    assert!(text.contains("vpslens_label_overflow_total{label=\"code\"}"));
    assert!(
        text.lines().count() < 5_000,
        "{} exposition lines",
        text.lines().count()
    );
    drop(agg);
    // Bounded memory: 101k distinct hostile values must not be retained.
    let growth = rss_kib().saturating_sub(rss_before);
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
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
