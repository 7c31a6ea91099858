//! Proves the Prometheus / Alertmanager / promtool harness works.
//! Fails (never skips) if a binary is missing.

use std::time::Duration;

use anyhow::Result;
use vpslens_testkit::http::StaticServer;
use vpslens_testkit::prometheus::promtool_check_rules;
use vpslens_testkit::{promtool_check_metrics, Alertmanager, Prometheus, PrometheusOptions};

const METRICS: &str = "\
# HELP vpslens_test_requests_total Test counter.
# TYPE vpslens_test_requests_total counter
vpslens_test_requests_total{node=\"jp-01\"} 3
vpslens_test_requests_total{node=\"jp-02\"} 5
";

#[test]
fn prometheus_scrapes_and_queries() -> Result<()> {
    let server = StaticServer::start(METRICS)?;
    let prom = Prometheus::start(&[server.addr()], Duration::from_secs(1))?;
    let s = prom.wait_for(
        "sum by (node) (vpslens_test_requests_total)",
        |s| s.len() == 2,
        Duration::from_secs(15),
    )?;
    let jp02 = s
        .iter()
        .find(|x| x.label("node") == Some("jp-02"))
        .map(|x| x.value);
    assert_eq!(jp02, Some(5.0));
    let scalar = prom.query("scalar(sum(vpslens_test_requests_total))")?;
    assert_eq!(scalar[0].value, 8.0);
    assert!(server.hits() >= 1);
    Ok(())
}

#[test]
fn promtool_accepts_good_and_rejects_bad_metrics() -> Result<()> {
    promtool_check_metrics(METRICS)?;
    // Counter without _total suffix and no HELP: promtool lints this.
    let bad = "# TYPE foo counter\nfoo 1\n";
    let err = promtool_check_metrics(bad).err().map(|e| format!("{e:#}"));
    assert!(err.is_some(), "promtool should reject {bad:?}");
    Ok(())
}

#[test]
fn alert_reaches_alertmanager() -> Result<()> {
    let server = StaticServer::start(METRICS)?;
    let am = Alertmanager::start()?;
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: test\n    rules:\n      - alert: VpslensTestAlert\n        expr: vpslens_test_requests_total{node=\"jp-02\"} > 4\n        labels: {severity: warning}\n        annotations: {summary: test}\n",
    )?;
    promtool_check_rules(&rules)?;
    let prom = Prometheus::start_with(
        PrometheusOptions::new(&[server.addr()], Duration::from_secs(1))
            .rule_file(&rules)
            .alertmanager(am.addr()),
    )?;
    let alert = am.wait_for_alert("VpslensTestAlert", Duration::from_secs(25))?;
    assert_eq!(alert["labels"]["node"], "jp-02");
    assert_eq!(alert["labels"]["severity"], "warning");
    drop(prom);
    Ok(())
}
