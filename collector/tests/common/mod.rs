//! Shared set-up for the end-to-end tests: a real Envoy configured like an Istio ingress
//! gateway (PROXY protocol, `use_remote_address`), a stub Xboard upstream, `vpslens run` on
//! Envoy's live access log and a real Prometheus scraping `/metrics` and `/metrics/istio`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::envoy::{EnvoyGateway, EnvoyOptions};
use vpslens_testkit::process::free_port;
use vpslens_testkit::prometheus::{Prometheus, PrometheusOptions};
use vpslens_testkit::upstream::XboardStub;
use vpslens_testkit::vpslens::Vpslens;

/// The fake panel token used in every request; it must never leave the access log.
pub const TOKEN: &str = "FAKE-TOKEN-do-not-use";

/// The registry used by the end-to-end tests (same nodes as `fixtures/registry.yaml`).
pub const REGISTRY: &str = r#"nodes:
  - name: jp-01
    addresses: ["203.0.113.11"]
    node_id: 1
    labels: {app: xrayr, region: jp, provider: vultr}
  - name: jp-02
    addresses: ["203.0.113.12"]
    node_id: 2
    labels: {app: xrayr, region: jp, provider: vultr}
  - name: us-01
    addresses: ["198.51.100.0/28"]
    node_id: 3
    labels: {app: xrayr, region: us, provider: aws}
  - name: de-01
    addresses: ["2001:db8:1::/64"]
    node_id: 4
    labels: {app: v2bx, region: de, provider: hetzner}
"#;

/// One planned request and who must be credited.
pub struct Planned {
    pub req: TestRequest,
    /// Registered node that must be credited, or `None` for unregistered.
    pub node: Option<&'static str>,
    /// Status the stub is told to answer.
    pub code: u16,
}

fn xrayr(path: &str, node_id: u32) -> String {
    format!("/api/v1/server/UniProxy/{path}?node_id={node_id}&node_type=vless&token={TOKEN}")
}

/// A deterministic plan: several nodes (IPv4 and IPv6), 5xx and 4xx answers, an unregistered
/// client, and one request from us-01 that forges `X-Forwarded-For: 203.0.113.11` (jp-01's
/// address) and must still be credited to us-01.
pub fn plan(rounds: u32) -> Vec<Planned> {
    let mut v = Vec::new();
    let mut push = |ip: &str, node: Option<&'static str>, id: u32, path: &str, code: u16| {
        let req = TestRequest::get(&xrayr(path, id))
            .from_str_ip(ip)
            .unwrap()
            .force_status(code);
        v.push(Planned { req, node, code });
    };
    for r in 0..rounds {
        push("203.0.113.11", Some("jp-01"), 1, "config", 200);
        push("203.0.113.11", Some("jp-01"), 1, "user", 200);
        push("203.0.113.12", Some("jp-02"), 2, "config", 200);
        push(
            "203.0.113.12",
            Some("jp-02"),
            2,
            "user",
            if r % 2 == 0 { 503 } else { 500 },
        );
        push("198.51.100.5", Some("us-01"), 3, "config", 200);
        push(
            "198.51.100.6",
            Some("us-01"),
            3,
            "alive",
            if r % 3 == 0 { 404 } else { 200 },
        );
        push("2001:db8:1::10", Some("de-01"), 4, "config", 200);
        push(
            "2001:db8:1::10",
            Some("de-01"),
            4,
            "push",
            if r == 0 { 422 } else { 200 },
        );
        push("192.0.2.50", None, 5, "config", 200);
    }
    let forged = TestRequest::get(&xrayr("config", 3))
        .from_str_ip("198.51.100.5")
        .unwrap()
        .header("X-Forwarded-For", "203.0.113.11")
        .force_status(200);
    v.push(Planned {
        req: forged,
        node: Some("us-01"),
        code: 200,
    });
    v
}

/// Expected requests per node (and `"(unregistered)"`) for a plan.
pub fn expected(plan: &[Planned]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut m: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for p in plan {
        let e = m
            .entry(p.node.unwrap_or("(unregistered)").to_owned())
            .or_default();
        e.0 += 1;
        if p.code >= 500 || p.code == 0 {
            e.1 += 1;
        }
        if (400..500).contains(&p.code) {
            e.2 += 1;
        }
    }
    m
}

/// The running stack.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub stub: XboardStub,
    pub envoy: EnvoyGateway,
    pub vpslens: Vpslens,
    pub listen: SocketAddr,
    pub prom: Prometheus,
    pub registry: PathBuf,
    pub state: PathBuf,
}

/// Starts the stack; `extra` are extra `vpslens run` flags.
pub fn start(extra: &[&str]) -> Result<Stack> {
    let dir = tempfile::tempdir()?;
    let stub = XboardStub::start()?;
    let envoy = EnvoyGateway::start(EnvoyOptions::new(stub.addr()))?;
    let registry = dir.path().join("nodes.yaml");
    std::fs::write(&registry, REGISTRY)?;
    let state = dir.path().join("state");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let vpslens = spawn_vpslens(&registry, &state, listen, envoy.access_log_path(), extra)?;
    let prom = Prometheus::start_with(
        PrometheusOptions::new(&[listen], Duration::from_millis(500))
            .extra_job("vpslens-istio", "/metrics/istio"),
    )?;
    Ok(Stack {
        dir,
        stub,
        envoy,
        vpslens,
        listen,
        prom,
        registry,
        state,
    })
}

/// Starts Envoy in front of a stub Xboard and `vpslens run --config <config>` on Envoy's
/// access log (no Prometheus): writes [`REGISTRY`] to `dir/nodes.yaml`, keeps vpslens' state in
/// `dir/state` and listens on a free port. Returns `(stub, envoy, vpslens, listen)`.
pub fn start_with_config(
    dir: &Path,
    config: &Path,
) -> Result<(XboardStub, EnvoyGateway, Vpslens, SocketAddr)> {
    let stub = XboardStub::start()?;
    let envoy = EnvoyGateway::start(EnvoyOptions::new(stub.addr()))?;
    let registry = dir.join("nodes.yaml");
    std::fs::write(&registry, REGISTRY)?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let config_s = config.display().to_string();
    let vpslens = spawn_vpslens(
        &registry,
        &dir.join("state"),
        listen,
        envoy.access_log_path(),
        &["--config", &config_s],
    )?;
    Ok((stub, envoy, vpslens, listen))
}

/// Spawns `vpslens run` and waits until it serves metrics.
pub fn spawn_vpslens(
    registry: &Path,
    state: &Path,
    listen: SocketAddr,
    log: &Path,
    extra: &[&str],
) -> Result<Vpslens> {
    let listen_s = listen.to_string();
    let registry_s = registry.display().to_string();
    let state_s = state.display().to_string();
    let log_s = log.display().to_string();
    let mut args = vec![
        "run",
        "--registry",
        &registry_s,
        "--listen",
        &listen_s,
        "--state-dir",
        &state_s,
        "--read-from",
        "beginning",
    ];
    args.extend_from_slice(extra);
    args.push(&log_s);
    let mut v = Vpslens::run_with_env(
        Path::new(env!("CARGO_BIN_EXE_vpslens")),
        &args,
        &[("VPSLENS_LOG", "debug")],
    )?;
    v.wait_for_metrics(listen, Duration::from_secs(20))
        .context("vpslens did not serve /metrics")?;
    Ok(v)
}

/// Sends every planned request and checks the stub answered as told.
pub fn drive(stack: &Stack, plan: &[Planned]) -> Result<()> {
    for p in plan {
        let code = send(stack.envoy.listener_addr(), &p.req)?;
        anyhow::ensure!(
            code == p.code,
            "gateway answered {code}, planned {}",
            p.code
        );
    }
    Ok(())
}

/// Waits until Prometheus' per-node totals equal `want` (node → requests).
pub fn wait_node_totals(
    prom: &Prometheus,
    want: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>> {
    let samples = prom.wait_for(
        "sum by (node) (vpslens_node_requests_total)",
        |s| {
            let got: BTreeMap<String, u64> = s
                .iter()
                .map(|x| (x.label("node").unwrap_or("").to_owned(), x.value as u64))
                .collect();
            &got == want
        },
        Duration::from_secs(60),
    );
    let got = prom.query("sum by (node) (vpslens_node_requests_total)")?;
    let got: BTreeMap<String, u64> = got
        .iter()
        .map(|x| (x.label("node").unwrap_or("").to_owned(), x.value as u64))
        .collect();
    samples
        .with_context(|| format!("per-node totals never matched: want {want:?}, got {got:?}"))?;
    Ok(got)
}

/// Sum of a PromQL query grouped by one label.
pub fn by_label(prom: &Prometheus, promql: &str, label: &str) -> Result<BTreeMap<String, f64>> {
    Ok(prom
        .query(promql)?
        .iter()
        .map(|s| (s.label(label).unwrap_or("").to_owned(), s.value))
        .collect())
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What [`fast_rules`] changes in `k8s/alerts/vpslens-rules.yaml` for tests against a live
/// stack: every duration shrinks so that alerts fire within seconds; expressions, labels,
/// thresholds on rates/ratios and annotations stay as they are. Silence needs no edit: it is a
/// multiple of `vpslens_node_poll_interval_seconds`, so the test runs vpslens with
/// `default_poll_interval_seconds: 1` ([`FAST_POLL_CONFIG`]).
/// vpslens config for live alert tests: nodes are expected every second.
pub const FAST_POLL_CONFIG: &str = "default_poll_interval_seconds: 1\n";

pub const FAST_RULE_EDITS: &[(&str, &str)] = &[
    ("[10m]", "[30s]"),
    ("[5m]", "[10s]"),
    ("[1h]", "[1m]"),
    ("offset 3m", "offset 3s"),
    ("offset 5m", "offset 10s"),
];

/// Writes a copy of the alert rules with [`FAST_RULE_EDITS`] applied and every `for: <N>m`
/// shortened to `for: 1s` into `dir`; panics if an edit no longer matches the rule file (so the
/// list cannot silently go stale). Returns the copy's path.
pub fn fast_rules(dir: &Path) -> PathBuf {
    let src = repo().join("k8s/alerts/vpslens-rules.yaml");
    let mut text = std::fs::read_to_string(&src).unwrap();
    for (from, to) in FAST_RULE_EDITS {
        assert!(
            text.contains(from),
            "{}: no {from:?} any more",
            src.display()
        );
        text = text.replace(from, to);
    }
    let mut out = String::new();
    let mut shortened = 0;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(d) = t.strip_prefix("for: ") {
            assert!(
                d.ends_with('m') || d.ends_with('s'),
                "unexpected `for:` {d:?} in {}",
                src.display()
            );
            out.push_str(&line[..line.len() - t.len()]);
            out.push_str("for: 1s\n");
            shortened += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(shortened >= 10, "only {shortened} `for:` lines");
    let path = dir.join("vpslens-rules.fast.yaml");
    std::fs::write(&path, out).unwrap();
    path
}
