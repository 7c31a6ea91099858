//! The alerting artefacts under `k8s/alerts/`, checked with the real tools:
//! - `promtool check rules` and `promtool test rules` (the unit tests prove every alert fires
//!   when it should and stays silent when it should not);
//! - `amtool check-config` on the Alertmanager example;
//! - the `PrometheusRule` copy carries exactly the plain rule file's groups.
//!
//! A missing `promtool`/`amtool` fails the test (never skips): run `scripts/install-deps.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The alerts an operator of the fleet relies on; each must exist and be unit-tested.
const ALERTS: [&str; 7] = [
    "VpsNodeSilent",
    "VpsNodeErrorRateHigh",
    "VpsNodeLatencyHigh",
    "VpslensUnregisteredTraffic",
    "VpslensParseErrors",
    "VpslensRegistryReloadFailing",
    "VpslensDown",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn alerts_dir() -> PathBuf {
    repo().join("k8s").join("alerts")
}

/// Runs `tool args…` in `dir` and returns stdout; panics with the full output on failure.
fn run(name: &str, args: &[&str], dir: &Path) -> String {
    let bin = vpslens_testkit::bins::require(name);
    let out = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{name} {}` (in {}) failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        dir.display(),
        out.status
    );
    stdout
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn promtool_check_rules_accepts_the_rule_file() {
    let out = run(
        "promtool",
        &["check", "rules", "vpslens-rules.yaml"],
        &alerts_dir(),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let out = run(
        "promtool",
        &["test", "rules", "vpslens-rules.test.yaml"],
        &alerts_dir(),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    let out = run(
        "amtool",
        &["check-config", "alertmanager-example.yml"],
        &alerts_dir(),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn prometheusrule_has_exactly_the_plain_groups() {
    let plain = load_yaml(&alerts_dir().join("vpslens-rules.yaml"));
    let wrapped = load_yaml(&alerts_dir().join("prometheusrule.yaml"));
    assert_eq!(wrapped["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(wrapped["kind"], "PrometheusRule");
    assert!(wrapped["metadata"]["name"].is_string(), "{wrapped}");
    assert!(
        plain["groups"].is_array(),
        "vpslens-rules.yaml has no groups"
    );
    assert!(
        plain["groups"] == wrapped["spec"]["groups"],
        "k8s/alerts/prometheusrule.yaml differs from k8s/alerts/vpslens-rules.yaml: run \
         k8s/alerts/generate-prometheusrule.sh"
    );
}

fn rules(plain: &Value) -> Vec<&Value> {
    plain["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn every_alert_exists_with_severity_summary_and_description() {
    let plain = load_yaml(&alerts_dir().join("vpslens-rules.yaml"));
    let rules = rules(&plain);
    for name in ALERTS {
        let r = rules
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("alert {name} missing from vpslens-rules.yaml"));
        let sev = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        for a in ["summary", "description"] {
            let text = r["annotations"][a].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: annotation {a} missing");
            if name.starts_with("VpsNode") {
                assert!(
                    text.contains("{{ $labels.node }}"),
                    "{name}: {a} does not name the node: {text}"
                );
            }
        }
        assert!(r["for"].is_string(), "{name}: no `for:`");
    }
}

#[test]
fn every_alert_is_unit_tested_both_ways() {
    let tests = load_yaml(&alerts_dir().join("vpslens-rules.test.yaml"));
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_array().into_iter().flatten() {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap_or_default().to_string();
            match a["exp_alerts"].as_array() {
                Some(v) if !v.is_empty() => fires.insert(name),
                _ => silent.insert(name),
            };
        }
    }
    for name in ALERTS {
        assert!(fires.contains(name), "no unit test expects {name} to fire");
        assert!(
            silent.contains(name),
            "no unit test expects {name} to stay silent"
        );
    }
}
