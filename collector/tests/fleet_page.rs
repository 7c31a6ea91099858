//! Issue 17: the fleet page at `/` in a real headless Chromium, `/api/nodes`,
//! `/api/unregistered` and `vpslens status`, all against a real Envoy → `vpslens run` stack.
//!
//! Five nodes, one per status: jp-01 polls and then stops (silent after
//! 3 × the test's `default_poll_interval_seconds`), jp-02 keeps polling and gets 503s (erroring), us-01 keeps
//! polling with a forged `X-Forwarded-For: <jp-01's address>` and jp-01's `node_id`
//! (identity mismatch — credited to us-01, jp-01 stays silent), de-01 keeps polling fine (ok),
//! sg-01 never polls from its address (never seen) — it polls from an unregistered address
//! instead, which `/api/unregistered` and the page show claiming sg-01's `node_id`.
//!
//! Set `VPSLENS_SCREENSHOT=/path.png` to keep the page's screenshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::envoy::{EnvoyGateway, EnvoyOptions};
use vpslens_testkit::process::{free_port, wait_for_value};
use vpslens_testkit::upstream::XboardStub;

/// Seconds without a request before a node is silent, in this test (the default is 180).
/// The fleet's poll interval in this test (config `default_poll_interval_seconds`).
const POLL_INTERVAL: u64 = 4;
/// Silent after 3 poll intervals (the alert rule's and `fleet`'s default multiple).
const SILENT_AFTER: u64 = 3 * POLL_INTERVAL;

const REGISTRY_EXTRA: &str = r#"  - name: sg-01
    addresses: ["203.0.113.20"]
    node_id: 5
    labels: {app: xrayr, region: sg, provider: vultr}
"#;

fn req(ip: &str, node_id: u32, path: &str, code: u16) -> TestRequest {
    TestRequest::get(&format!(
        "/api/v1/server/UniProxy/{path}?node_id={node_id}&node_type=vless&token={}",
        common::TOKEN
    ))
    .from_str_ip(ip)
    .unwrap()
    .force_status(code)
}

/// One round of the nodes that keep polling: de-01 fine, jp-02 failing, us-01 forging.
fn keep_polling(gw: SocketAddr, with_jp01: bool) -> Result<()> {
    send(gw, &req("2001:db8:1::10", 4, "config", 200))?;
    send(gw, &req("203.0.113.12", 2, "user", 503))?;
    let forged = req("198.51.100.5", 1, "config", 200).header("X-Forwarded-For", "203.0.113.11");
    send(gw, &forged)?;
    send(gw, &req("192.0.2.50", 5, "config", 200))?;
    if with_jp01 {
        send(gw, &req("203.0.113.11", 1, "config", 200))?;
    }
    Ok(())
}

/// Sends [`keep_polling`] rounds on a thread until the flag is cleared.
fn poller(gw: SocketAddr, with_jp01: bool) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let run = Arc::new(AtomicBool::new(true));
    let r = run.clone();
    let h = std::thread::spawn(move || {
        while r.load(Ordering::Relaxed) {
            keep_polling(gw, with_jp01).unwrap();
            std::thread::sleep(Duration::from_millis(300)); // a node's poll period, not a wait
        }
    });
    (run, h)
}

fn api_nodes(listen: SocketAddr) -> Result<serde_json::Value> {
    let (code, body) = vpslens_testkit::http::get(&format!("http://{listen}/api/nodes"))?;
    anyhow::ensure!(code == 200, "/api/nodes answered {code}");
    Ok(serde_json::from_str(&body)?)
}

fn status_cmd(listen: SocketAddr) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vpslens"))
        .args(["status", "--url", &format!("http://{listen}")])
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

#[test]
fn fleet_page_api_and_status_show_silent_erroring_mismatched_and_unregistered_nodes() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let stub = XboardStub::start()?;
    let envoy = EnvoyGateway::start(EnvoyOptions::new(stub.addr()))?;
    let gw = envoy.listener_addr();
    let registry = dir.path().join("nodes.yaml");
    std::fs::write(&registry, format!("{}{REGISTRY_EXTRA}", common::REGISTRY))?;
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "default_poll_interval_seconds: {POLL_INTERVAL}\nfleet: {{rate_window_seconds: 60, \
             identity_mismatch_window_seconds: 60}}\n"
        ),
    )?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let config_s = config.display().to_string();
    let mut vpslens = common::spawn_vpslens(
        &registry,
        &dir.path().join("state"),
        listen,
        envoy.access_log_path(),
        &["--config", &config_s],
    )?;

    // Phase 1: every node but sg-01 polls, jp-01 included: nothing is silent, exit code 0.
    let (run, h) = poller(gw, true);
    let want1: BTreeMap<String, String> = [
        ("de-01", "ok"),
        ("jp-01", "ok"),
        ("jp-02", "erroring"),
        ("sg-01", "never_seen"),
        ("us-01", "identity_mismatch"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    let mut last = BTreeMap::new();
    wait_for_value(
        "phase-1 statuses",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            last = vpslens_testkit::vpslens::node_statuses(&api_nodes(listen)?);
            Ok((last == want1).then_some(()))
        },
    )
    .map_err(|e| e.context(format!("last statuses {last:?}")))?;
    let out = status_cmd(listen);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!table.contains('\x1b'), "colour on a pipe:\n{table}");
    run.store(false, Ordering::Relaxed);
    h.join().unwrap();

    // Phase 2: jp-01 stops; the others go on. jp-01 turns silent.
    let (run, h) = poller(gw, false);
    let mut want2 = want1.clone();
    want2.insert("jp-01".into(), "silent".into());
    let api = wait_for_value(
        "jp-01 silent",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            let v = api_nodes(listen)?;
            last = vpslens_testkit::vpslens::node_statuses(&v);
            Ok((last == want2).then_some(v))
        },
    )
    .map_err(|e| e.context(format!("last statuses {last:?}")))?;

    // /api/nodes: worst first, ages and rates in base units, rounded.
    let names: Vec<&str> = api["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jp-01", "jp-02", "us-01", "sg-01", "de-01"]);
    let jp01 = &api["nodes"][0];
    assert!(jp01["last_seen_age_seconds"].as_f64().unwrap() > SILENT_AFTER as f64);
    assert_eq!(jp01["silent_after_seconds"], SILENT_AFTER);
    assert_eq!(api["default_poll_interval_seconds"], POLL_INTERVAL);
    assert_eq!(api["status_counts"]["silent"], 1);
    let us01 = &api["nodes"][2];
    assert!(us01["identity_mismatches_in_window"].as_u64().unwrap() > 0);
    let jp02 = &api["nodes"][1];
    assert_eq!(jp02["error_ratio"], 1.0);
    for n in api["nodes"].as_array().unwrap() {
        for f in ["p50_seconds", "p99_seconds", "requests_per_second"] {
            if let Some(x) = n[f].as_f64() {
                let text = n[f].to_string();
                let decimals = text.split('.').nth(1).map_or(0, str::len);
                assert!(decimals <= 4, "{f} = {text} not rounded");
                assert!(x >= 0.0);
            }
        }
    }
    // The unregistered address claims sg-01's node_id.
    let (_, top) = vpslens_testkit::http::get(&format!("http://{listen}/api/unregistered"))?;
    let top: serde_json::Value = serde_json::from_str(&top)?;
    assert_eq!(top[0]["address"], "192.0.2.50", "{top}");
    assert_eq!(top[0]["claimed_node_id"], 5, "{top}");
    assert_eq!(top[0]["claimed_node"], "sg-01", "{top}");

    // The page in a real browser: rows, statuses, the unregistered claim, self-health.
    let dom = vpslens_testkit::chromium::dump_dom(&format!("http://{listen}/"))?;
    for (node, st) in &want2 {
        let row = format!("<tr data-node=\"{node}\" data-status=\"{st}\">");
        assert!(dom.contains(&row), "no {row} in\n{dom}");
    }
    let order: Vec<usize> = names
        .iter()
        .map(|n| dom.find(&format!("data-node=\"{n}\"")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "not worst first");
    assert!(dom.contains("<tr data-address=\"192.0.2.50\">"), "{dom}");
    assert!(
        dom.contains("<td class=\"n claimed\">5</td><td>sg-01</td>"),
        "{dom}"
    );
    assert!(dom.contains("id=\"health\""));
    assert!(dom.contains("<dd id=\"parse-errors\">none</dd>"), "{dom}");
    assert!(!dom.contains(common::TOKEN), "token on the page");
    // Filtered by label in the browser: only the jp nodes.
    let jp = vpslens_testkit::chromium::dump_dom(&format!("http://{listen}/?label=region%3Djp"))?;
    assert_eq!(jp.matches("<tr data-node=").count(), 2, "{jp}");
    let shot = std::env::var_os("VPSLENS_SCREENSHOT")
        .map_or_else(|| dir.path().join("fleet.png"), Into::into);
    vpslens_testkit::chromium::screenshot(
        &format!("http://{listen}/"),
        Path::new(&shot),
        1280,
        720,
    )?;

    // `vpslens status`: the same table, exit code 1 because jp-01 is silent.
    let out = status_cmd(listen);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{table}");
    let first: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&first[..3], ["silent", "jp-01", "1"], "{table}");
    for (node, st) in &want2 {
        assert!(
            table.lines().any(|l| l
                .split_whitespace()
                .take(2)
                .eq([st.as_str(), node.as_str()])),
            "no {st} {node} row in\n{table}"
        );
    }
    assert!(table.contains("silent=1"), "{table}");
    run.store(false, Ordering::Relaxed);
    h.join().unwrap();

    // A daemon that is not there, or something that is not vpslens: exit code 2.
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    assert_eq!(status_cmd(closed).status.code(), Some(2));
    let not_vpslens = status_cmd(stub.addr());
    assert_eq!(not_vpslens.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_vpslens.stderr).contains("cannot read the daemon"));

    vpslens.stop_graceful()?;
    assert!(!vpslens.output().contains(common::TOKEN));
    Ok(())
}
