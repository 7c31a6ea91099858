//! The Kubernetes manifests under `k8s/` (base, mesh, overlays/deployment, helm, daemonset,
//! alerts): every YAML document parses, the vpslens config and registry inside the ConfigMaps
//! load with vpslens's own code, the container arguments parse with its CLI, the pieces agree
//! with each other (access-log path, mounts, port, probes, provider names, scrape job, Helm
//! values = Deployment patch), the containers are locked down, and the mesh config's access-log
//! format, run in a real Envoy, writes lines vpslens parses without the node token.
//! (Schema validation and kustomize rendering: `k8s_validate.rs`.)
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
        .file
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
    for dir in [
        "base",
        "mesh",
        "overlays/deployment",
        "helm",
        "daemonset",
        "alerts",
        "alertmanager",
        "kiali",
    ] {
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
    assert!(n >= 25, "only {n} YAML files");
}

#[test]
fn sidecar_pieces_fit_together() {
    let (cm, cfg, settings) = load_configmap("base/configmap.yaml");
    assert_eq!(
        vpslens::config::split_listen(&settings.file.listen)
            .unwrap()
            .1,
        9464
    );
    assert_eq!(settings.file.sources, ["/var/log/istio/access.log"]);
    let state = cfg.state_dir.clone().expect("state_dir");

    // Mesh config: both installer flavours define the same provider, with Istio's default
    // JSON format and the path vpslens follows.
    let op = doc("mesh/meshconfig-istiooperator.yaml");
    assert_eq!(op["kind"], "IstioOperator");
    let from_operator = providers(&op["spec"]["meshConfig"]);
    let from_helm = providers(&doc("mesh/istiod-values.yaml")["meshConfig"]);
    assert_eq!(
        from_operator, from_helm,
        "IstioOperator and istiod values differ"
    );
    let [(name, path, labels)] = from_operator.as_slice() else {
        panic!("expected one provider: {from_operator:?}")
    };
    assert_eq!(path, &settings.file.sources[0]);
    assert_eq!(
        labels,
        &sidecar_json(),
        "not Istio's default JSON format with the query-less path"
    );
    assert_eq!(&telemetry_provider("base/telemetry.yaml"), name);

    // Gateway patch.
    let patch = doc("overlays/deployment/gateway-patch.yaml");
    assert_eq!(patch["kind"], "Deployment");
    assert_eq!(patch["metadata"]["name"], "istio-ingressgateway");
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
    let registry = settings.file.registry.as_deref().unwrap();
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

    check_podmonitor("base/podmonitor.yaml", ("istio", "ingressgateway"));
    let scrape = doc("base/prometheus-scrape-config.yaml");
    assert_eq!(scrape["scrape_configs"][0]["job_name"], "vpslens");

    // The Helm chart values carry exactly the patch's containers and volumes.
    let values = doc("helm/gateway-values.yaml");
    assert_eq!(values["volumes"], spec["volumes"]);
    assert_eq!(values["volumeMounts"], proxy["volumeMounts"]);
    let extra: Vec<Value> = containers
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] != "istio-proxy")
        .cloned()
        .collect();
    assert_eq!(values["additionalContainers"], Value::Array(extra.clone()));
    for c in &extra {
        check_locked_down(c, str_of(&c["name"], "name"));
    }

    // Service and ServiceMonitor reach the vpslens port of the gateway pods.
    let svc = doc("base/service.yaml");
    assert_eq!(svc["spec"]["selector"]["istio"], "ingressgateway");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9464);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    let sm = doc("base/servicemonitor.yaml");
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        svc["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    let eps = sm["spec"]["endpoints"].as_array().unwrap();
    let jobs: Vec<(&str, &str)> = eps
        .iter()
        .map(|e| {
            let job = e["relabelings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["targetLabel"] == "job")
                .unwrap();
            (
                e["path"].as_str().unwrap(),
                job["replacement"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [("/metrics", "vpslens"), ("/metrics/istio", "vpslens-istio")]
    );

    // NetworkPolicy: every TCP port of the gateway pods stays open except 9464, which only the
    // monitoring namespace reaches.
    let np = doc("base/networkpolicy.yaml");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["istio"],
        "ingressgateway"
    );
    let rules = np["spec"]["ingress"].as_array().unwrap();
    let open_to_all: Vec<(u64, u64)> = rules
        .iter()
        .filter(|r| r["from"].is_null())
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .filter(|p| p["protocol"] == "TCP")
        .map(|p| {
            let a = p["port"].as_u64().unwrap();
            (a, p["endPort"].as_u64().unwrap_or(a))
        })
        .collect();
    for port in [80, 443, 8080, 8443, 15021, 15090, 9463, 9465, 65535] {
        assert!(
            open_to_all.iter().any(|(a, b)| (*a..=*b).contains(&port)),
            "gateway port {port} blocked"
        );
    }
    assert!(
        !open_to_all.iter().any(|(a, b)| (*a..=*b).contains(&9464)),
        "9464 open to all"
    );
    let metrics_rule = rules.iter().find(|r| !r["from"].is_null()).unwrap();
    assert_eq!(metrics_rule["ports"][0]["port"], 9464);
    assert_eq!(
        metrics_rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    // RBAC: read-only access to WorkloadEntries, bound to the gateway's service account.
    let rbac = docs("base/rbac.yaml");
    let role = rbac.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["networking.istio.io"], "resources": ["workloadentries"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = rbac.iter().find(|d| d["kind"] == "RoleBinding").unwrap();
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["namespace"], "istio-system");
}

/// Non-root, read-only root filesystem, no capabilities, no privilege escalation, the
/// runtime's seccomp profile, resource requests and a memory limit.
fn check_locked_down(c: &Value, what: &str) {
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert!(sc["runAsUser"].as_u64().unwrap_or(0) > 0, "{what}: uid 0");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert!(c["resources"]["requests"].is_object(), "{what}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
}

/// Istio's default JSON fields with `path` replaced by the query-less path plus `node_id` and
/// `node_type` (the mesh config in `k8s/mesh/`).
fn sidecar_json() -> BTreeMap<String, String> {
    let mut m = istio_default_json();
    m.insert(
        "path".to_owned(),
        "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%?node_id=%QUERY_PARAM(node_id)%&node_type=%QUERY_PARAM(node_type)%".to_owned(),
    );
    m
}

/// Envoy command operators in `text` that log the request path with its query string
/// (`%REQ(:PATH)%`, `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`, …; `%REQ_WITHOUT_QUERY(…)%` is fine).
fn raw_path_operators(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("%REQ(") {
        let arg = &rest[at + 5..];
        let arg = &arg[..arg.find(')').unwrap_or(arg.len())];
        if arg.to_ascii_uppercase().contains("PATH") {
            found.push(arg);
        }
        rest = &rest[at + 5..];
    }
    found
}

/// Every string value in a YAML document (comments are not values).
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// No access-log format shipped under `k8s/` logs the request path with its query string,
/// which carries the panel `token` (regression: the DaemonSet's provider logged
/// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`, writing the token into /var/log/pods). Checks every
/// string value of every YAML file (comments may name Istio's default to explain why it is not
/// used) and every fenced code block of the READMEs.
#[test]
fn no_shipped_access_log_format_logs_the_raw_query() {
    assert_eq!(
        raw_path_operators(r#"path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" m: "%REQ(:METHOD)%""#),
        ["X-ENVOY-ORIGINAL-PATH?:PATH"]
    );
    let mut formats = 0;
    let mut stack = vec![k8s()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(k8s())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            let mut texts: Vec<String> = Vec::new();
            if ext == "yaml" || ext == "yml" {
                for d in docs(&rel) {
                    let mut out = Vec::new();
                    strings(&d, &mut out);
                    texts.extend(out.into_iter().map(str::to_owned));
                }
            } else if ext == "md" {
                let text = std::fs::read_to_string(&p).unwrap();
                let mut fenced = false;
                for line in text.lines() {
                    if line.trim_start().starts_with("```") {
                        fenced = !fenced;
                    } else if fenced {
                        texts.push(line.to_owned());
                    }
                }
            }
            for t in &texts {
                formats += usize::from(t.contains("REQ_WITHOUT_QUERY("));
                let raw = raw_path_operators(t);
                assert!(
                    raw.is_empty(),
                    "{rel}: logs the path with its query ({raw:?}): {t}"
                );
            }
        }
    }
    // mesh/ (IstioOperator, istiod values), base/README.md and daemonset/ at least.
    assert!(formats >= 4, "only {formats} query-less path formats found");
}

/// The mesh config's access-log format in a real Envoy: the node token never reaches the log,
/// vpslens still attributes every request and checks `node_id`.
#[test]
fn mesh_access_log_format_in_real_envoy_drops_the_token_and_keeps_node_id() {
    use vpslens_testkit::client::{send, TestRequest};
    use vpslens_testkit::envoy::{EnvoyGateway, EnvoyOptions};
    use vpslens_testkit::upstream::XboardStub;

    let op = doc("mesh/meshconfig-istiooperator.yaml");
    let [(_, _, labels)] = providers(&op["spec"]["meshConfig"]).try_into().unwrap();
    let stub = XboardStub::start().unwrap();
    let mut opts = EnvoyOptions::new(stub.addr());
    opts.json_fields = Some(labels.into_iter().collect());
    let envoy = EnvoyGateway::start(opts).unwrap();
    let token = "FAKE-TOKEN-k8s-manifests";
    let reqs = [
        // jp-01 (node_id 1) polls as itself, then with node_id 3 (us-01's id): a mismatch.
        ("203.0.113.11", "config?node_id=1&node_type=vless"),
        ("203.0.113.11", "user?node_id=1&node_type=vless"),
        ("203.0.113.11", "config?node_id=3&node_type=vless"),
        // A request without query parameters.
        ("198.51.100.5", "alive"),
    ];
    for (ip, q) in reqs {
        let sep = if q.contains('?') { '&' } else { '?' };
        let path = format!("/api/v1/server/UniProxy/{q}{sep}token={token}");
        let req = if q == "alive" {
            TestRequest::post(&path)
        } else {
            TestRequest::get(&path)
        };
        let code = send(envoy.listener_addr(), &req.from_str_ip(ip).unwrap()).unwrap();
        assert_eq!(code, 200);
    }
    let lines = envoy
        .wait_for_log_lines(reqs.len(), std::time::Duration::from_secs(20))
        .unwrap();
    let log = lines.join("\n");
    assert!(!log.contains(token), "token in the access log:\n{log}");
    assert!(
        log.contains("\"path\":\"/api/v1/server/UniProxy/config?node_id=1&node_type=vless\""),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("nodes.yaml");
    let cm = doc("base/configmap.yaml");
    std::fs::write(&reg, str_of(&cm["data"]["nodes.yaml"], "nodes.yaml")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpslens"))
        .args(["replay", "--registry"])
        .arg(&reg)
        .args(["--metrics-out", "-"])
        .arg(envoy.access_log_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(token));
    let sample = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        sample("vpslens_node_requests_total{node=\"jp-01\""),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample("vpslens_node_requests_total{node=\"us-01\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample("vpslens_node_identity_mismatch_total{node=\"jp-01\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample("vpslens_lines_total{result=\"malformed\"}"),
        0.0,
        "{text}"
    );
}

#[test]
fn daemonset_pieces_fit_together() {
    let (cm, cfg, settings) = load_configmap("daemonset/configmap.yaml");
    assert_eq!(
        vpslens::config::split_listen(&settings.file.listen)
            .unwrap()
            .1,
        9464
    );
    assert_eq!(
        settings.file.sources,
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
        &sidecar_json(),
        "not Istio's default JSON format with the query-less path"
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
