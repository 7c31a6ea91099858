//! The alerting artefacts under `k8s/alerts/`, checked with the real tools:
//! - `promtool check rules` and `promtool test rules` (the unit tests prove every alert fires
//!   when it should and stays silent when it should not);
//! - `amtool check-config` on the Alertmanager example (`k8s/alertmanager/`) and
//!   `amtool config routes test` for where each alert is routed (inhibition with a real
//!   Prometheus and Alertmanager: `alertmanager_inhibit.rs`);
//! - the `PrometheusRule` copy carries exactly the plain rule file's groups.
//!
//! A missing `promtool`/`amtool` fails the test (never skips): run `scripts/install-deps.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The alerts an operator of the fleet relies on; each must exist and be unit-tested.
const ALERTS: [&str; 14] = [
    "VpsNodeSilent",
    "VpsNodeNeverSeen",
    "VpsNodeErrorRateHigh",
    "VpsNodeLatencyHigh",
    "VpsNodeLatencyOutlier",
    "VpsNodeIdentityMismatch",
    "VpsFleetSilent",
    "VpslensUnregisteredTraffic",
    "VpslensUnregisteredTrafficSpike",
    "VpslensDown",
    "VpslensNotReading",
    "VpslensParseErrors",
    "VpslensRegistryReloadFailing",
    "VpslensCheckpointFailing",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn alerts_dir() -> PathBuf {
    repo().join("k8s").join("alerts")
}

fn alertmanager_dir() -> PathBuf {
    repo().join("k8s").join("alertmanager")
}

/// Runs `tool args…` in `dir`: (success, stdout, stderr).
fn try_run(name: &str, args: &[&str], dir: &Path) -> (bool, String, String) {
    let bin = vpslens_testkit::bins::require(name);
    let out = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tool args…` in `dir` and returns stdout; panics with the full output on failure.
fn run(name: &str, args: &[&str], dir: &Path) -> String {
    let (ok, stdout, stderr) = try_run(name, args, dir);
    assert!(
        ok,
        "`{name} {}` (in {}) failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        dir.display(),
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
        &["check-config", "alertmanager.yml"],
        &alertmanager_dir(),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `amtool config routes test --verify.receivers=R labels…`: true when the alert lands at R.
fn routes_to(receiver: &str, labels: &[&str]) -> bool {
    let verify = format!("--verify.receivers={receiver}");
    let mut args = vec![
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        verify.as_str(),
    ];
    args.extend_from_slice(labels);
    let (ok, stdout, stderr) = try_run("amtool", &args, &alertmanager_dir());
    if !ok {
        assert!(
            stdout.contains("did not match") || stderr.contains("did not match"),
            "amtool failed for another reason:\n{stdout}\n{stderr}"
        );
    }
    ok
}

#[test]
fn amtool_routes_critical_alerts_to_oncall_and_the_rest_to_ops() {
    let oncall = [
        "alertname=VpsNodeSilent severity=critical node=jp-01",
        "alertname=VpsFleetSilent severity=critical",
        "alertname=VpslensDown severity=critical instance=gw-a:9464 job=vpslens",
        "alertname=VpslensNotReading severity=critical namespace=istio-system pod=gw-a",
    ];
    let ops = [
        "alertname=VpsNodeNeverSeen severity=warning node=jp-01",
        "alertname=VpsNodeErrorRateHigh severity=warning node=jp-01",
        "alertname=VpsNodeLatencyHigh severity=warning node=jp-01",
        "alertname=VpsNodeLatencyOutlier severity=warning node=jp-01",
        "alertname=VpsNodeIdentityMismatch severity=warning node=jp-01",
        "alertname=VpslensUnregisteredTraffic severity=warning",
        "alertname=VpslensUnregisteredTrafficSpike severity=warning",
        "alertname=VpslensParseErrors severity=warning instance=gw-a:9464",
        "alertname=VpslensRegistryReloadFailing severity=warning instance=gw-a:9464",
        "alertname=VpslensCheckpointFailing severity=warning instance=gw-a:9464",
    ];
    for a in oncall {
        let labels: Vec<&str> = a.split(' ').collect();
        assert!(routes_to("fleet-oncall", &labels), "{a} must page");
        assert!(
            !routes_to("fleet-ops", &labels),
            "{a} must not go to ops only"
        );
    }
    for a in ops {
        let labels: Vec<&str> = a.split(' ').collect();
        assert!(routes_to("fleet-ops", &labels), "{a} must go to ops");
        assert!(!routes_to("fleet-oncall", &labels), "{a} must not page");
    }
}

#[test]
fn the_rule_file_has_exactly_these_alerts_and_inhibitions_name_them() {
    let plain = load_yaml(&alerts_dir().join("vpslens-rules.yaml"));
    let names: BTreeSet<String> = rules(&plain)
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = ALERTS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(names, want);
    let am = load_yaml(&alertmanager_dir().join("alertmanager.yml"));
    let text = serde_json::to_string(&am["inhibit_rules"]).unwrap();
    for name in [
        "VpslensDown",
        "VpslensNotReading",
        "VpsFleetSilent",
        "VpsNodeSilent",
    ] {
        assert!(text.contains(name), "no inhibit rule with {name}: {text}");
    }
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
