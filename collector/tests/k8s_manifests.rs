//! The Kubernetes manifests under `k8s/sidecar/`, `k8s/daemonset/` and `k8s/alerts/`: every
//! YAML document parses, the vpslens config and registry inside the ConfigMaps load with
//! vpslens's own code, the container arguments parse with its CLI, and the pieces agree with
//! each other (access-log path, mounts, port, probes, provider names, scrape job) and with
//! Istio's default JSON access-log format that the fixtures were generated with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use serde_json::Value;
use vpslens::cli::{Cli, Command};
use vpslens::config::{FileConfig, Overrides, Settings};
use vpslens::resolve::Registry;
use vpslens_testkit::envoy::ISTIO_JSON_FIELDS;

fn k8s() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s")
}

/// Every YAML document of `file` (relative to `k8s/`).
fn docs(file: &str) -> Vec<Value> {
    let path = k8s().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn doc(file: &str) -> Value {
    let mut d = docs(file);
    assert_eq!(d.len(), 1, "{file}: expected one YAML document");
    d.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"))
}

fn find<'a>(list: &'a Value, name: &str, what: &str) -> &'a Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("{what}: no entry named {name:?} in {list}"))
}

/// The ConfigMap's `config.yaml`, loaded and merged exactly as `vpslens run` does, and its
/// registry file loaded with the registry code.
fn load_configmap(file: &str) -> (Value, FileConfig, Settings) {
    let cm = doc(file);
    assert_eq!(cm["kind"], "ConfigMap", "{file}");
    let data = &cm["data"];
    let config_text = str_of(&data["config.yaml"], "config.yaml");
    let file_config: FileConfig = serde_norway::from_str(config_text)
        .unwrap_or_else(|e| panic!("{file}: config.yaml rejected by vpslens: {e}"));
    let settings = Settings::merge(file_config.clone(), Overrides::default())
        .unwrap_or_else(|e| panic!("{file}: config.yaml invalid: {e}"));

    let registry = settings
        .registry
        .clone()
        .expect("config.yaml sets registry");
    let key = registry.file_name().unwrap().to_string_lossy().into_owned();
    let nodes = str_of(&data[key.as_str()], &key);
    let reg = Registry::from_bytes(&registry, nodes.as_bytes())
        .unwrap_or_else(|e| panic!("{file}: {key} rejected by vpslens: {e}"));
    assert!(!reg.nodes().is_empty(), "{file}: empty registry");
    for n in reg.nodes() {
        for label in ["app", "region", "provider"] {
            assert!(
                n.labels.contains_key(label),
                "{file}: node {} has no {label} label (the dashboard filters on it)",
                n.name
            );
        }
    }
    (cm, file_config, settings)
}

/// `(provider name, path, labels)` of every `envoyFileAccessLog` provider in a mesh config.
fn providers(mesh_config: &Value) -> Vec<(String, String, BTreeMap<String, String>)> {
    mesh_config["extensionProviders"]
        .as_array()
        .expect("extensionProviders")
        .iter()
        .map(|p| {
            let log = &p["envoyFileAccessLog"];
            let labels = log["logFormat"]["labels"]
                .as_object()
                .expect("logFormat.labels")
                .iter()
                .map(|(k, v)| (k.clone(), str_of(v, k).to_string()))
                .collect();
            (
                str_of(&p["name"], "provider name").to_string(),
                str_of(&log["path"], "path").to_string(),
                labels,
            )
        })
        .collect()
}

fn istio_default_json() -> BTreeMap<String, String> {
    ISTIO_JSON_FIELDS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn telemetry_provider(file: &str) -> String {
    let t = doc(file);
    assert_eq!(t["apiVersion"], "telemetry.istio.io/v1", "{file}");
    assert_eq!(t["kind"], "Telemetry", "{file}");
    assert_eq!(
        t["spec"]["selector"]["matchLabels"]["istio"], "ingressgateway",
        "{file}"
    );
    let p = &t["spec"]["accessLogging"][0]["providers"];
    assert_eq!(p.as_array().map(Vec::len), Some(1), "{file}: {p}");
    str_of(&p[0]["name"], "provider").to_string()
}

fn check_vpslens_container(c: &Value, what: &str) {
    let args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| str_of(a, "arg").to_string())
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("vpslens".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("{what}: `vpslens {}` rejected: {e}", args.join(" ")));
    let Command::Run(run) = cli.command else {
        panic!("{what}: not `vpslens run`")
    };
    assert_eq!(
        run.common.config.as_deref(),
        Some(Path::new("/etc/vpslens/config.yaml")),
        "{what}"
    );
    let port = find(&c["ports"], "http-metrics", what);
    assert_eq!(port["containerPort"], 9464, "{what}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{what} {probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"], "http-metrics",
            "{what} {probe}"
        );
    }
    assert!(
        c["resources"]["requests"].is_object(),
        "{what}: no requests"
    );
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{what}: no memory limit"
    );
    assert!(str_of(&c["image"], "image").starts_with("ghcr.io/example/vpslens:"));
}

fn mount<'a>(c: &'a Value, path: &str, what: &str) -> &'a Value {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {path}"))
}

fn check_podmonitor(file: &str, match_label: (&str, &str)) {
    let pm = doc(file);
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1", "{file}");
    assert_eq!(pm["kind"], "PodMonitor", "{file}");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"][match_label.0], match_label.1,
        "{file}"
    );
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(ep["port"], "http-metrics", "{file}");
    assert_eq!(ep["path"], "/metrics", "{file}");
    let job = ep["relabelings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["targetLabel"] == "job")
        .unwrap_or_else(|| panic!("{file}: no job relabeling"));
    assert_eq!(
        job["replacement"], "vpslens",
        "{file}: alerts use up{{job=\"vpslens\"}}"
    );
}

#[test]
fn every_yaml_file_parses() {
    let mut n = 0;
    for dir in ["sidecar", "daemonset", "alerts"] {
        for e in std::fs::read_dir(k8s().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if ext == "yaml" || ext == "yml" {
                let rel = p
                    .strip_prefix(k8s())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                assert!(!docs(&rel).is_empty(), "{rel}: no YAML document");
                n += 1;
            }
        }
    }
    assert!(n >= 15, "only {n} YAML files");
}

#[test]
fn sidecar_pieces_fit_together() {
    let (cm, cfg, settings) = load_configmap("sidecar/configmap.yaml");
    assert_eq!(settings.listen.port(), 9464);
    assert_eq!(settings.sources, ["/var/log/istio/access.log"]);
    let state = cfg.state_dir.clone().expect("state_dir");

    // Mesh config: both installer flavours define the same provider, with Istio's default
    // JSON format and the path vpslens follows.
    let op = doc("sidecar/meshconfig-istiooperator.yaml");
    assert_eq!(op["kind"], "IstioOperator");
    let from_operator = providers(&op["spec"]["meshConfig"]);
    let from_helm = providers(&doc("sidecar/meshconfig-istiod-values.yaml")["meshConfig"]);
    assert_eq!(
        from_operator, from_helm,
        "IstioOperator and istiod values differ"
    );
    let [(name, path, labels)] = from_operator.as_slice() else {
        panic!("expected one provider: {from_operator:?}")
    };
    assert_eq!(path, &settings.sources[0]);
    assert_eq!(
        labels,
        &istio_default_json(),
        "not Istio's default JSON format"
    );
    assert_eq!(&telemetry_provider("sidecar/telemetry.yaml"), name);

    // Gateway patch.
    let patch = doc("sidecar/gateway-patch.yaml");
    let spec = &patch["spec"]["template"]["spec"];
    let containers = &spec["containers"];
    let proxy = find(containers, "istio-proxy", "istio-proxy");
    let vpslens = find(containers, "vpslens", "vpslens container");
    check_vpslens_container(vpslens, "sidecar");
    let log_dir = Path::new(path).parent().unwrap().to_str().unwrap();
    assert_eq!(log_dir, "/var/log/istio");
    let shared = mount(proxy, log_dir, "istio-proxy")["name"].clone();
    assert_eq!(mount(vpslens, log_dir, "vpslens")["name"], shared);
    assert!(find(&spec["volumes"], str_of(&shared, "volume"), "volumes")["emptyDir"].is_object());
    let state_vol = &mount(vpslens, state.to_str().unwrap(), "vpslens")["name"];
    assert!(find(&spec["volumes"], str_of(state_vol, "volume"), "volumes")["emptyDir"].is_object());
    let registry = settings.registry.as_deref().unwrap();
    let cfg_mount = mount(vpslens, "/etc/vpslens", "vpslens");
    assert!(
        registry.starts_with("/etc/vpslens"),
        "{}",
        registry.display()
    );
    let cfg_vol = find(
        &spec["volumes"],
        str_of(&cfg_mount["name"], "volume"),
        "volumes",
    );
    assert_eq!(cfg_vol["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(cm["metadata"]["namespace"], "istio-system");
    let rotate = find(containers, "access-log-rotate", "rotator");
    assert_eq!(mount(rotate, log_dir, "rotator")["name"], shared);
    assert!(
        str_of(&rotate["command"][2], "script").contains("/reopen_logs"),
        "rotator must ask Envoy to reopen its log"
    );

    check_podmonitor("sidecar/podmonitor.yaml", ("istio", "ingressgateway"));
    let scrape = doc("sidecar/prometheus-scrape-config.yaml");
    assert_eq!(scrape["scrape_configs"][0]["job_name"], "vpslens");
}

#[test]
fn daemonset_pieces_fit_together() {
    let (cm, cfg, settings) = load_configmap("daemonset/configmap.yaml");
    assert_eq!(settings.listen.port(), 9464);
    assert_eq!(
        settings.sources,
        ["/var/log/pods/istio-system_istio-ingressgateway-*/istio-proxy/*.log"]
    );
    let state = cfg.state_dir.clone().expect("state_dir");

    let op = doc("daemonset/meshconfig-istiooperator.yaml");
    let provs = providers(&op["spec"]["meshConfig"]);
    let [(name, path, labels)] = provs.as_slice() else {
        panic!("expected one provider: {provs:?}")
    };
    assert_eq!(path, "/dev/stdout");
    assert_eq!(
        labels,
        &istio_default_json(),
        "not Istio's default JSON format"
    );
    assert_eq!(&telemetry_provider("daemonset/telemetry.yaml"), name);

    let ds = doc("daemonset/daemonset.yaml");
    assert_eq!(ds["kind"], "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert!(spec["serviceAccountName"].is_null(), "no RBAC needed");
    assert_eq!(spec["automountServiceAccountToken"], false);
    let c = find(&spec["containers"], "vpslens", "vpslens container");
    check_vpslens_container(c, "daemonset");
    let logs = mount(c, "/var/log/pods", "vpslens");
    assert_eq!(logs["readOnly"], true);
    let logs_vol = find(&spec["volumes"], str_of(&logs["name"], "volume"), "volumes");
    assert_eq!(logs_vol["hostPath"]["path"], "/var/log/pods");
    let state_mount = mount(c, state.to_str().unwrap(), "vpslens");
    let state_vol = find(
        &spec["volumes"],
        str_of(&state_mount["name"], "volume"),
        "volumes",
    );
    assert_eq!(state_vol["hostPath"]["path"], "/var/lib/vpslens");
    let cfg_mount = mount(c, "/etc/vpslens", "vpslens");
    let cfg_vol = find(
        &spec["volumes"],
        str_of(&cfg_mount["name"], "volume"),
        "volumes",
    );
    assert_eq!(cfg_vol["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(cm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert_eq!(
        doc("daemonset/namespace.yaml")["metadata"]["name"],
        ds["metadata"]["namespace"]
    );
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "vpslens");
    check_podmonitor(
        "daemonset/podmonitor.yaml",
        ("app.kubernetes.io/name", "vpslens"),
    );
}
