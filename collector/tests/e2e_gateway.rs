//! Issue "foundation": a real Envoy access log in, per-VPS metrics out, checked in a real
//! Prometheus with PromQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use vpslens_testkit::prometheus::promtool_check_metrics;

#[test]
fn per_node_counts_errors_and_forged_xff_through_envoy_and_prometheus() -> Result<()> {
    let mut stack = common::start(&[])?;
    let plan = common::plan(6);
    common::drive(&stack, &plan)?;
    stack
        .envoy
        .wait_for_log_lines(plan.len(), Duration::from_secs(20))?;

    let exp = common::expected(&plan);
    let want: BTreeMap<String, u64> = exp
        .iter()
        .filter(|(n, _)| n.as_str() != "(unregistered)")
        .map(|(n, e)| (n.clone(), e.0))
        .collect();
    // Exact per-node request counts.
    common::wait_node_totals(&stack.prom, &want)?;

    // Exact per-node 5xx (and code 0) counts.
    let errors = common::by_label(
        &stack.prom,
        r#"sum by (node) (vpslens_node_requests_total{code=~"5..|0"})"#,
        "node",
    )?;
    let want_errors: BTreeMap<String, f64> = exp
        .iter()
        .filter(|(n, e)| n.as_str() != "(unregistered)" && e.1 > 0)
        .map(|(n, e)| (n.clone(), e.1 as f64))
        .collect();
    assert_eq!(errors, want_errors);

    // The forged left-most X-Forwarded-For (jp-01's address, sent by us-01) went to us-01:
    // jp-01 has exactly its own requests and us-01 one more than its rounds.
    assert_eq!(want["jp-01"], 12);
    assert_eq!(want["us-01"], 13);

    // Unregistered traffic is counted without any per-IP label.
    let unreg = stack
        .prom
        .query("sum(vpslens_unregistered_requests_total)")?;
    assert_eq!(unreg[0].value, exp["(unregistered)"].0 as f64);
    let series = stack.prom.query("vpslens_unregistered_requests_total")?;
    for s in &series {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["__name__", "code", "instance", "job", "route"],
            "{:?}",
            s.labels
        );
    }

    // Every registered node has an info series, with its registry labels.
    let info = common::by_label(&stack.prom, "vpslens_node_info", "node")?;
    assert_eq!(info.len(), 4);
    let de = stack.prom.query(r#"vpslens_node_info{node="de-01"}"#)?;
    assert_eq!(de[0].label("region"), Some("de"));
    assert_eq!(de[0].label("node_id"), Some("4"));

    // Latency histogram exists per node and last-seen is recent.
    let counts = common::by_label(
        &stack.prom,
        "sum by (node) (vpslens_node_request_duration_seconds_count)",
        "node",
    )?;
    assert_eq!(counts.len(), 4);
    let age = stack
        .prom
        .query("time() - max(vpslens_node_last_seen_timestamp_seconds)")?;
    assert!(age[0].value < 120.0, "last seen {}s ago", age[0].value);

    // Nothing malformed; no parse errors.
    let bad = stack
        .prom
        .query(r#"sum(vpslens_lines_total{result!="ok"})"#)?;
    assert_eq!(bad[0].value, 0.0);

    // The exposition passes promtool's lint, and the token is nowhere.
    let body = stack.vpslens.scrape(stack.listen)?;
    promtool_check_metrics(&body)?;
    let (_, istio) = vpslens_testkit::http::get(&format!("http://{}/metrics/istio", stack.listen))?;
    let (_, nodes) = vpslens_testkit::http::get(&format!("http://{}/api/nodes", stack.listen))?;
    assert!(nodes.contains("\"name\":\"jp-01\""), "{nodes}");
    // The busiest unregistered client is listed (JSON only, never a label).
    let (_, top) =
        vpslens_testkit::http::get(&format!("http://{}/api/unregistered", stack.listen))?;
    let top: serde_json::Value = serde_json::from_str(&top)?;
    assert_eq!(top[0]["address"], "192.0.2.50", "{top}");
    assert_eq!(top[0]["requests"], exp["(unregistered)"].0);
    stack.vpslens.stop_graceful()?;
    let logs = stack.vpslens.output();
    assert!(
        logs.contains("DEBUG") || logs.contains("INFO"),
        "vpslens logged nothing?"
    );
    for (what, text) in [
        ("metrics", &body),
        ("istio", &istio),
        ("api", &nodes),
        ("logs", &logs),
    ] {
        assert!(!text.contains(common::TOKEN), "token leaked into {what}");
        assert!(!text.contains("token="), "query string leaked into {what}");
    }
    Ok(())
}
