//! `dashboards/vpslens-nodes.json`: every query uses only metrics vpslens exports, every panel
//! has a non-empty query, the datasource is the `${datasource}` variable, and `promtool` parses
//! every expression (as a recording rule, after substituting the dashboard's variables).
//!
//! A missing `promtool` fails the test (never skips): run `scripts/install-deps.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// Every family vpslens exports (`/metrics` and `/metrics/istio`) that a dashboard may use.
const METRICS: &[&str] = &[
    "vpslens_node_requests_total",
    "vpslens_node_request_duration_seconds",
    "vpslens_node_last_seen_timestamp_seconds",
    "vpslens_node_info",
    "vpslens_unregistered_requests_total",
    "vpslens_lines_total",
    "vpslens_parse_errors_total",
    "vpslens_registry_nodes",
    "vpslens_registry_reloads_total",
    "vpslens_registry_last_reload_successful",
    "vpslens_registry_last_reload_success_timestamp_seconds",
    "vpslens_source_read_lag_bytes",
    "vpslens_source_rotations_total",
    "vpslens_source_truncations_total",
    "vpslens_source_long_lines_skipped_total",
    "vpslens_checkpoint_writes_total",
    "istio_requests_total",
    "istio_request_duration_milliseconds",
];

/// Histogram families (their `_bucket`, `_sum`, `_count` series are allowed).
const HISTOGRAMS: &[&str] = &[
    "vpslens_node_request_duration_seconds",
    "istio_request_duration_milliseconds",
];

/// Grafana variables and the concrete values substituted for `promtool`.
const VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("$node", "jp-01|jp-02"),
    ("$region", ".*"),
    ("$app", ".*"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboard() -> Value {
    let path = repo().join("dashboards").join("vpslens-nodes.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
fn panel_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let r = t["refId"].as_str().unwrap_or("?");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} target {r}: empty expr"
            );
            out.push((format!("panel {title:?} target {r}"), expr.to_string()));
        }
    }
    out
}

/// `(name, query)` for every query variable (`label_values(SELECTOR, label)` → `SELECTOR`).
fn variable_selectors(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or_default();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','))
            .map(|(sel, _label)| sel.trim())
            .unwrap_or_else(|| panic!("variable {name}: not label_values(SELECTOR, label): {q}"));
        assert!(!inner.is_empty(), "variable {name}: empty selector");
        out.push((format!("variable {name}"), inner.to_string()));
    }
    out
}

/// `vpslens_…` / `istio_…` identifiers in `expr` (`[a-z_]+`, starting at a name boundary).
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if boundary && (b[i..].starts_with(b"vpslens_") || b[i..].starts_with(b"istio_")) {
            let end = b[i..]
                .iter()
                .position(|c| !(c.is_ascii_lowercase() || *c == b'_'))
                .map_or(b.len(), |n| i + n);
            out.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn known(name: &str) -> bool {
    METRICS.contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for (var, val) in VARIABLES {
        s = s.replace(&format!("${{{}}}", &var[1..]), val);
        s = s.replace(var, val);
    }
    s
}

#[test]
fn metric_name_scanner_strips_nothing_it_should_not() {
    let e = "histogram_quantile(0.9, sum by (le) (rate(vpslens_node_request_duration_seconds_bucket{x=\"istio-system\"}[1m]))) / vpslens_nope_total";
    assert_eq!(
        metric_names(e),
        [
            "vpslens_node_request_duration_seconds_bucket",
            "vpslens_nope_total"
        ]
    );
    assert!(known("vpslens_node_request_duration_seconds_count"));
    assert!(!known("vpslens_node_requests_total_count"));
    assert!(!known("vpslens_nope_total"));
}

#[test]
fn every_query_is_non_empty_and_uses_only_exported_metrics() {
    let d = dashboard();
    let mut exprs = panel_exprs(&d);
    assert!(exprs.len() >= 20, "only {} panel queries", exprs.len());
    exprs.extend(variable_selectors(&d));
    let mut bad = Vec::new();
    for (at, expr) in &exprs {
        let names = metric_names(expr);
        if names.is_empty() {
            bad.push(format!("{at}: uses no vpslens metric: {expr}"));
        }
        for n in names.iter().filter(|n| !known(n)) {
            bad.push(format!("{at}: unknown metric {n}: {expr}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn datasource_and_variables() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("variable {n} missing"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for n in ["node", "region", "app"] {
        let v = var(n);
        assert_eq!(v["type"], "query", "{n}");
        assert_eq!(v["multi"], true, "{n} must be multi-value");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{n}");
    }
    let (_, node_sel) = variable_selectors(&d)
        .into_iter()
        .find(|(at, _)| at == "variable node")
        .expect("node variable query");
    assert!(node_sel.starts_with("vpslens_node_info"), "{node_sel}");
    for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title:?}");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title:?}");
        }
    }
    let ids: Vec<_> = panels(&d).iter().map(|p| p["id"].as_u64()).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate panel ids");
}

#[test]
fn promtool_parses_every_query() {
    let d = dashboard();
    let mut rules = Vec::new();
    for (i, (at, expr)) in panel_exprs(&d)
        .into_iter()
        .chain(variable_selectors(&d))
        .enumerate()
    {
        let expr = substitute(&expr);
        assert!(
            !expr.contains('$'),
            "{at}: unsubstituted variable in {expr}"
        );
        rules.push(
            json!({"record": format!("dashboard:query_{i}"), "expr": expr, "labels": {"at": at}}),
        );
    }
    // JSON is YAML: promtool reads the rule file as is.
    let file = json!({"groups": [{"name": "dashboard-queries", "rules": rules}]});
    let dir = std::env::temp_dir().join(format!("vpslens-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queries.rules.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();

    let promtool = vpslens_testkit::bins::require("promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
