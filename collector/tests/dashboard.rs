//! The Grafana dashboards (`dashboards/vpslens-fleet.json`, `dashboards/vpslens-node.json`), their
//! provisioning files, and the PromQL of the alert rules (`k8s/alerts/vpslens-rules.yaml`):
//!
//! - every dashboard has the `${datasource}` variable as the data source of every panel and
//!   target, a current schemaVersion, unique panel ids;
//! - every panel query, variable query and rule expression uses only metric names that
//!   `collector/src/export/metrics.rs` defines (read from that file), plus `envoy_server_live`
//!   of the gateway's own Envoy for `VpslensNotReading`;
//! - `promtool` parses every expression (after substituting the dashboard variables);
//! - against a real Prometheus that scrapes vpslens fed by a real Envoy (and that Envoy's own
//!   `/stats/prometheus`), every panel and variable query returns data, every rule expression
//!   evaluates, and every series selector inside a rule expression returns data.
//!
//! A missing `promtool`/`prometheus`/`envoy` fails the test (never skips): run
//! `scripts/install-deps.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::envoy::{EnvoyGateway, EnvoyOptions};
use vpslens_testkit::process::free_port;
use vpslens_testkit::prometheus::{Prometheus, PrometheusOptions};
use vpslens_testkit::upstream::XboardStub;

const DASHBOARDS: [&str; 2] = ["vpslens-fleet.json", "vpslens-node.json"];

/// Histogram families (their `_bucket`, `_sum`, `_count` series are allowed).
const HISTOGRAMS: &[&str] = &["vpslens_node_request_duration_seconds"];

/// Metrics a rule may use that vpslens does not export: the gateway Envoy's liveness (Istio's
/// merged metrics on :15020 include Envoy's `server.*` stats). The live test scrapes a real
/// Envoy's `/stats/prometheus` and requires it there.
const FOREIGN: &[&str] = &["envoy_server_live"];

/// Grafana variables and the concrete values substituted for the checks.
const VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("$node", "jp-01|jp-02"),
    ("$region", ".*"),
    ("$app", ".*"),
];

fn dashboards_dir() -> PathBuf {
    common::repo().join("dashboards")
}

fn dashboard(name: &str) -> Value {
    let path = dashboards_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every family name `metrics.rs` renders (the quoted `vpslens_…` strings in that file).
fn exported_metrics() -> BTreeSet<String> {
    let path = common::repo().join("collector/src/export/metrics.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeSet::new();
    for part in text.split('"').skip(1).step_by(2) {
        if part.starts_with("vpslens_") && part.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')
        {
            out.insert(part.to_owned());
        }
    }
    assert!(
        out.len() >= 20,
        "only {} names in {}",
        out.len(),
        path.display()
    );
    for h in HISTOGRAMS {
        assert!(out.contains(*h), "{h} not in metrics.rs");
    }
    out
}

/// All panels, including those nested in (collapsed) rows.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// `(where, expr)` for every panel target.
fn panel_exprs(name: &str, d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(
            !targets.is_empty(),
            "{name}: panel {title:?} has no targets"
        );
        for t in targets {
            let r = t["refId"].as_str().unwrap_or("?");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "{name}: panel {title:?} target {r}: empty expr"
            );
            out.push((
                format!("{name}: panel {title:?} target {r}"),
                expr.to_string(),
            ));
        }
    }
    out
}

/// `(name, selector)` for every query variable (`label_values(SELECTOR, label)` → `SELECTOR`).
fn variable_selectors(name: &str, d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let var = v["name"].as_str().unwrap_or("?").to_string();
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or_default();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','))
            .map(|(sel, _label)| sel.trim())
            .unwrap_or_else(|| panic!("variable {var}: not label_values(SELECTOR, label): {q}"));
        assert!(!inner.is_empty(), "variable {var}: empty selector");
        out.push((format!("{name}: variable {var}"), inner.to_string()));
    }
    out
}

/// `(where, expr)` for every rule of the alert rule file.
fn rule_exprs() -> Vec<(String, String)> {
    let path = common::repo().join("k8s/alerts/vpslens-rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Value = serde_norway::from_str(&text).unwrap();
    let mut out = Vec::new();
    for g in v["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("rule {name}"),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(out.len() >= 13, "only {} rules", out.len());
    out
}

fn all_dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        out.extend(panel_exprs(name, &d));
        out.extend(variable_selectors(name, &d));
    }
    out
}

/// `vpslens_…` / `istio_…` / `envoy_…` identifiers in `expr` (`[a-z_]+` at a name boundary).
fn metric_names(expr: &str) -> Vec<String> {
    selectors(expr).into_iter().map(|(n, _)| n).collect()
}

/// `(metric name, full selector)` for every `vpslens_…`/`istio_…`/`envoy_…` vector selector:
/// the name plus its `{…}` matchers when present.
fn selectors(expr: &str) -> Vec<(String, String)> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let prefixed = [&b"vpslens_"[..], b"istio_", b"envoy_"]
            .iter()
            .any(|p| b[i..].starts_with(p));
        if boundary && prefixed {
            let end = b[i..]
                .iter()
                .position(|c| !(c.is_ascii_lowercase() || *c == b'_'))
                .map_or(b.len(), |n| i + n);
            let name = expr[i..end].to_string();
            let mut sel_end = end;
            if b.get(end) == Some(&b'{') {
                sel_end = b[end..]
                    .iter()
                    .position(|c| *c == b'}')
                    .map_or(b.len(), |n| end + n + 1);
            }
            out.push((name, expr[i..sel_end].to_string()));
            i = sel_end;
        } else {
            i += 1;
        }
    }
    out
}

fn known(exported: &BTreeSet<String>, name: &str) -> bool {
    exported.contains(name)
        || FOREIGN.contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut s = expr.to_string();
    for (var, val) in vars {
        s = s.replace(&format!("${{{}}}", &var[1..]), val);
        s = s.replace(var, val);
    }
    s
}

#[test]
fn metric_name_scanner_finds_names_and_selectors() {
    let e = "histogram_quantile(0.9, sum by (le) (rate(vpslens_node_request_duration_seconds_bucket{x=\"istio-system\"}[1m]))) / vpslens_nope_total and on (pod) envoy_server_live";
    assert_eq!(
        metric_names(e),
        [
            "vpslens_node_request_duration_seconds_bucket",
            "vpslens_nope_total",
            "envoy_server_live"
        ]
    );
    assert_eq!(
        selectors(e)[0].1,
        "vpslens_node_request_duration_seconds_bucket{x=\"istio-system\"}"
    );
    let exported = exported_metrics();
    assert!(exported.contains("vpslens_node_identity_mismatch_total"));
    assert!(known(
        &exported,
        "vpslens_node_request_duration_seconds_count"
    ));
    assert!(!known(&exported, "vpslens_node_requests_total_count"));
    assert!(!known(&exported, "vpslens_nope_total"));
    assert!(!known(&exported, "envoy_cluster_upstream_rq_total"));
}

#[test]
fn every_dashboard_and_rule_query_uses_only_exported_metrics() {
    let exported = exported_metrics();
    let exprs: Vec<_> = all_dashboard_exprs()
        .into_iter()
        .chain(rule_exprs())
        .collect();
    assert!(exprs.len() >= 60, "only {} queries", exprs.len());
    let mut bad = Vec::new();
    for (at, expr) in &exprs {
        let names = metric_names(expr);
        if names.is_empty() && !expr.contains("up{job=\"vpslens\"}") {
            bad.push(format!("{at}: uses no vpslens metric: {expr}"));
        }
        for n in names.iter().filter(|n| !known(&exported, n)) {
            bad.push(format!("{at}: unknown metric {n}: {expr}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn exactly_two_dashboards_with_datasource_variable_and_current_schema() {
    let mut found: Vec<String> = std::fs::read_dir(dashboards_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    assert_eq!(found, DASHBOARDS);
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let schema = d["schemaVersion"].as_u64().unwrap_or(0);
        assert!(
            (39..=41).contains(&schema),
            "{name}: schemaVersion {schema}"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{name}: uid"
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |n: &str| {
            vars.iter()
                .find(|v| v["name"] == n)
                .unwrap_or_else(|| panic!("{name}: variable {n} missing"))
        };
        let ds = var("datasource");
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        let node = var("node");
        assert_eq!(node["type"], "query", "{name}");
        assert_eq!(node["datasource"]["uid"], "${datasource}", "{name}");
        for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title:?}");
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title:?}");
            }
        }
        let ids: Vec<_> = panels(&d).iter().map(|p| p["id"].as_u64()).collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{name}: duplicate panel ids");
    }
    // Fleet overview: multi-value node filter; node detail: exactly one node.
    let fleet = dashboard("vpslens-fleet.json");
    let detail = dashboard("vpslens-node.json");
    let node_var = |d: &Value| {
        d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "node")
            .unwrap()
            .clone()
    };
    assert_eq!(node_var(&fleet)["multi"], true);
    assert_eq!(node_var(&detail)["multi"], false);
    let titles = |d: &Value| -> Vec<String> {
        panels(d)
            .iter()
            .filter_map(|p| p["title"].as_str().map(str::to_owned))
            .collect()
    };
    let ft = titles(&fleet);
    for want in [
        "Request rate by node",
        "Error % by node (5xx + no response)",
        "Latency p50 by node",
        "Latency p99 by node",
        "Silent nodes (details)",
        "Top unregistered traffic by country",
    ] {
        assert!(ft.iter().any(|t| t == want), "fleet overview: no {want:?}");
    }
    let country = panel_exprs("fleet", &fleet)
        .into_iter()
        .find(|(at, _)| at.contains("by country"))
        .unwrap()
        .1;
    assert_eq!(
        country,
        "topk(10, sum by (country) (rate(vpslens_unregistered_requests_total[5m])))"
    );
    let dt = titles(&detail);
    for want in [
        "Requests by route",
        "Requests by status code",
        "Errors by route and code",
    ] {
        assert!(dt.iter().any(|t| t == want), "node detail: no {want:?}");
    }
}

#[test]
fn provisioning_files_point_grafana_at_the_dashboards() {
    let read = |f: &str| -> Value {
        let p = dashboards_dir().join("provisioning").join(f);
        serde_norway::from_str(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let prov = read("dashboards.yaml");
    assert_eq!(prov["apiVersion"], 1);
    let p = &prov["providers"][0];
    assert_eq!(p["type"], "file");
    assert!(p["options"]["path"].as_str().unwrap().starts_with('/'));
    let ds = read("datasource.yaml");
    assert_eq!(ds["apiVersion"], 1);
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    assert!(ds["datasources"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with("http"));
}

#[test]
fn promtool_parses_every_dashboard_and_rule_query() {
    let mut rules = Vec::new();
    for (i, (at, expr)) in all_dashboard_exprs()
        .into_iter()
        .chain(rule_exprs())
        .enumerate()
    {
        let expr = substitute(&expr, VARIABLES);
        assert!(
            !expr.contains('$'),
            "{at}: unsubstituted variable in {expr}"
        );
        rules.push(json!({"record": format!("query:n{i}"), "expr": expr, "labels": {"at": at}}));
    }
    // JSON is YAML: promtool reads the rule file as is.
    let file = json!({"groups": [{"name": "queries", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.rules.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let promtool = vpslens_testkit::bins::require("promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        out.status.success(),
        "promtool rejects a query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And a broken query is rejected (the check can fail).
    let broken = json!({"groups": [{"name": "q", "rules": [{"record": "x:y", "expr": "sum by (node (vpslens_node_info)"}]}]});
    std::fs::write(&path, broken.to_string()).unwrap();
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "promtool accepted a broken query");
}

/// The end-to-end registry plus `sg-01`, registered but never seen (so the silent-node panels
/// have a row).
fn registry() -> String {
    format!(
        "{}  - name: sg-01\n    addresses: [\"192.0.2.200\"]\n    node_id: 9\n    labels: {{app: xrayr, region: sg, provider: aws}}\n",
        common::REGISTRY
    )
}

#[test]
fn every_query_returns_data_from_vpslens_fed_by_real_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let stub = XboardStub::start().unwrap();
    let envoy = EnvoyGateway::start(EnvoyOptions::new(stub.addr())).unwrap();
    let reg = dir.path().join("nodes.yaml");
    std::fs::write(&reg, registry()).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let _vpslens = common::spawn_vpslens(
        &reg,
        &dir.path().join("state"),
        listen,
        envoy.access_log_path(),
        &[],
    )
    .unwrap();
    // vpslens and the gateway's Envoy as in one gateway pod: the same namespace/pod labels
    // (VpslensNotReading joins on them).
    let pod_labels = json!({"namespace": "istio-system", "pod": "istio-ingressgateway-test"});
    let prom = Prometheus::start_with(
        PrometheusOptions::new(&[listen], Duration::from_millis(500))
            .target_label("namespace", "istio-system")
            .target_label("pod", "istio-ingressgateway-test")
            .scrape_config(json!({
                "job_name": "envoy-stats",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [envoy.admin_addr().to_string()], "labels": pod_labels}]
            })),
    )
    .unwrap();

    // Traffic: the end-to-end plan (4 nodes, 5xx, 4xx, an unregistered client), one request
    // from jp-01's address claiming node_id 2 (identity mismatch) and a malformed line.
    let plan = common::plan(3);
    for p in &plan {
        assert_eq!(send(envoy.listener_addr(), &p.req).unwrap(), p.code);
    }
    let path = format!(
        "/api/v1/server/UniProxy/config?node_id=2&node_type=vless&token={}",
        common::TOKEN
    );
    let mismatch = TestRequest::get(&path).from_str_ip("203.0.113.11").unwrap();
    assert_eq!(send(envoy.listener_addr(), &mismatch).unwrap(), 200);
    envoy
        .wait_for_log_lines(plan.len() + 1, Duration::from_secs(20))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(envoy.access_log_path())
        .unwrap()
        .write_all(b"{\"this is\": not an access-log line\n")
        .unwrap();
    let ready = [
        "vpslens_node_identity_mismatch_total",
        r#"vpslens_lines_total{result="malformed"} > 0"#,
        r#"envoy_server_live{job="envoy-stats"} == 1"#,
        // two samples after the traffic, so rate() has data
        "count_over_time(vpslens_node_requests_total[1m]) > 2",
    ];
    for q in ready {
        prom.wait_for(q, |s| !s.is_empty(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{q}: {e:#}"));
    }
    // A few more scrapes so every rate window has several samples after the last change: wait
    // until Prometheus holds four scrapes of vpslens taken after the one that saw the malformed
    // line (scrape timestamps, not a sleep).
    let scraped_at = |prom: &Prometheus| -> f64 {
        prom.query(r#"timestamp(vpslens_lines_total{result="malformed"})"#)
            .ok()
            .and_then(|s| s.first().map(|x| x.value))
            .unwrap_or(0.0)
    };
    let seen = scraped_at(&prom);
    assert!(seen > 0.0, "no scrape with the malformed line");
    vpslens_testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        scraped_at(&prom) >= seen + 4.0 * 0.5
    })
    .unwrap();

    let mut empty = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        // The node detail dashboard shows one node: jp-02 has 5xx answers.
        let node = if name == "vpslens-node.json" {
            "jp-02"
        } else {
            "jp-01|jp-02|sg-01"
        };
        let mut vars = VARIABLES.to_vec();
        vars.retain(|(v, _)| *v != "$node");
        vars.insert(0, ("$node", node));
        for (at, expr) in panel_exprs(name, &d) {
            let q = substitute(&expr, &vars);
            match prom.query(&q) {
                Ok(s) if !s.is_empty() => {}
                Ok(_) => empty.push(format!("{at}: no data: {q}")),
                Err(e) => empty.push(format!("{at}: error {e:#}")),
            }
        }
        for (at, sel) in variable_selectors(name, &d) {
            let q = format!("count({})", substitute(&sel, &vars));
            if prom.query(&q).map(|s| s.is_empty()).unwrap_or(true) {
                empty.push(format!("{at}: no data: {q}"));
            }
        }
    }
    for (at, expr) in rule_exprs() {
        if let Err(e) = prom.query(&expr) {
            empty.push(format!("{at}: error {e:#}"));
        }
        let mut sels: Vec<String> = selectors(&expr).into_iter().map(|(_, s)| s).collect();
        if expr.contains("up{job=\"vpslens\"}") {
            sels.push("up{job=\"vpslens\"}".to_owned());
        }
        for sel in sels {
            let q = format!("count({sel})");
            if prom.query(&q).map(|s| s.is_empty()).unwrap_or(true) {
                empty.push(format!("{at}: selector without data: {sel}"));
            }
        }
    }
    assert!(empty.is_empty(), "{}", empty.join("\n"));
}
