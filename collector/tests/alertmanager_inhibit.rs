//! The Alertmanager example (`k8s/alertmanager/alertmanager.yml`) stops a node-silence storm:
//! a real Envoy writes the access log, `vpslens run` tails it, a real Prometheus scrapes vpslens
//! and evaluates the alert rules (a copy with every duration shrunk to seconds, see
//! `common::fast_rules`; expressions unchanged; vpslens expects a poll every second through
//! `default_poll_interval_seconds: 1`, so the silence thresholds need no edit) and sends its
//! alerts to a real Alertmanager running the example config verbatim. Alertmanager's
//! `/api/v2/alerts` then shows:
//!
//! 1. one node stops polling: `VpsNodeSilent{node="jp-02"}` is active, not inhibited;
//! 2. every node stops: `VpsFleetSilent` is active and inhibits jp-02's node alert; jp-01's
//!    silence never becomes a node alert (nobody was seen after its deadline);
//! 3. traffic resumes, then vpslens is killed: `VpslensDown` is active and inhibits the node
//!    alerts, which Prometheus still fires (the rules themselves suppress nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::envoy::{EnvoyGateway, EnvoyOptions};
use vpslens_testkit::process::{free_port, wait_for_value};
use vpslens_testkit::prometheus::{Prometheus, PrometheusOptions};
use vpslens_testkit::upstream::XboardStub;
use vpslens_testkit::Alertmanager;

const WAIT: Duration = Duration::from_secs(90);

fn poll(gateway: SocketAddr, ip: &str, node_id: u32) -> Result<()> {
    let path = format!(
        "/api/v1/server/UniProxy/config?node_id={node_id}&node_type=vless&token={}",
        common::TOKEN
    );
    let code = send(gateway, &TestRequest::get(&path).from_str_ip(ip)?)?;
    anyhow::ensure!(code == 200, "gateway answered {code}");
    Ok(())
}

/// Polls as node jp-01 every 300 ms while `on` is set.
fn poller(
    gateway: SocketAddr,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if on.load(Ordering::Relaxed) {
                poll(gateway, "203.0.113.11", 1).expect("jp-01 poll");
            }
            thread::sleep(Duration::from_millis(300));
        }
    })
}

fn find<'a>(alerts: &'a [Value], name: &str, node: Option<&str>) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == name && node.is_none_or(|n| a["labels"]["node"] == n))
}

/// Waits until Alertmanager's alert list satisfies `pred`; returns that list.
fn wait_am(am: &Alertmanager, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    let r = wait_for_value(what, WAIT, Duration::from_millis(250), || {
        let alerts = am.alerts()?;
        if pred(&alerts) {
            Ok(Some(alerts))
        } else {
            last = alerts;
            Ok(None)
        }
    });
    r.unwrap_or_else(|e| panic!("{e:#}\nlast alerts: {last:#?}"))
}

fn state(a: &Value) -> &str {
    a["status"]["state"].as_str().unwrap_or("?")
}

fn inhibited_by(a: &Value) -> Vec<String> {
    a["status"]["inhibitedBy"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn firing_in_prometheus(prom: &Prometheus, name: &str) -> Vec<String> {
    prom.query(&format!(
        "ALERTS{{alertname=\"{name}\",alertstate=\"firing\"}}"
    ))
    .unwrap()
    .iter()
    .map(|s| s.label("node").unwrap_or("").to_owned())
    .collect()
}

#[test]
fn alertmanager_example_inhibits_node_alerts_while_fleet_silent_or_collector_down() {
    let dir = tempfile::tempdir().unwrap();
    let stub = XboardStub::start().unwrap();
    let envoy = EnvoyGateway::start(EnvoyOptions::new(stub.addr())).unwrap();
    let gateway = envoy.listener_addr();
    let registry = dir.path().join("nodes.yaml");
    std::fs::write(&registry, common::REGISTRY).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, common::FAST_POLL_CONFIG).unwrap();
    let mut vpslens = common::spawn_vpslens(
        &registry,
        &dir.path().join("state"),
        listen,
        envoy.access_log_path(),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();

    let am_config =
        std::fs::read_to_string(common::repo().join("k8s/alertmanager/alertmanager.yml")).unwrap();
    let am = Alertmanager::start_with_config(&am_config).unwrap();
    let mut opts = PrometheusOptions::new(&[listen], Duration::from_millis(500))
        .rule_file(common::fast_rules(dir.path()))
        .alertmanager(am.addr());
    opts.evaluation_interval = Duration::from_secs(1);
    let prom = Prometheus::start_with(opts).unwrap();

    // 1. jp-01 keeps polling, jp-02 polls once and stops.
    let on = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let jp01 = poller(gateway, on.clone(), stop.clone());
    poll(gateway, "203.0.113.12", 2).unwrap();
    let alerts = wait_am(&am, "VpsNodeSilent{jp-02} active in Alertmanager", |a| {
        find(a, "VpsNodeSilent", Some("jp-02")).is_some_and(|x| state(x) == "active")
    });
    let silent = find(&alerts, "VpsNodeSilent", Some("jp-02")).unwrap();
    assert!(inhibited_by(silent).is_empty(), "{silent:#}");
    assert!(
        find(&alerts, "VpsNodeSilent", Some("jp-01")).is_none(),
        "{alerts:#?}"
    );
    assert!(firing_in_prometheus(&prom, "VpsFleetSilent").is_empty());
    assert!(firing_in_prometheus(&prom, "VpslensDown").is_empty());
    // us-01 and de-01 are registered and never poll: VpsNodeNeverSeen, on real data too.
    prom.wait_for(
        r#"ALERTS{alertname="VpsNodeNeverSeen",alertstate="firing"}"#,
        |s| {
            let mut n: Vec<_> = s.iter().filter_map(|x| x.label("node")).collect();
            n.sort_unstable();
            n == ["de-01", "us-01"]
        },
        WAIT,
    )
    .unwrap();

    // 2. jp-01 stops too: the fleet is silent and its alert inhibits the node alert that
    // was already firing; jp-01's own silence never becomes a node alert.
    on.store(false, Ordering::Relaxed);
    let alerts = wait_am(&am, "VpsFleetSilent inhibiting VpsNodeSilent", |a| {
        let (Some(fleet), Some(j2)) = (
            find(a, "VpsFleetSilent", None),
            find(a, "VpsNodeSilent", Some("jp-02")),
        ) else {
            return false;
        };
        state(fleet) == "active" && state(j2) == "suppressed"
    });
    let fleet_fp = find(&alerts, "VpsFleetSilent", None).unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = find(&alerts, "VpsNodeSilent", Some("jp-02")).unwrap();
    assert_eq!(inhibited_by(a), std::slice::from_ref(&fleet_fp), "{a:#}");
    assert!(
        find(&alerts, "VpsNodeSilent", Some("jp-01")).is_none(),
        "jp-01 went silent with the fleet: no node alert of its own\n{alerts:#?}"
    );
    assert_eq!(
        firing_in_prometheus(&prom, "VpsNodeSilent"),
        ["jp-02".to_owned()]
    );
    assert!(inhibited_by(find(&alerts, "VpsFleetSilent", None).unwrap()).is_empty());

    // 3. jp-01 polls again (the fleet recovers), then vpslens dies.
    on.store(true, Ordering::Relaxed);
    prom.wait_for(
        r#"ALERTS{alertname="VpsFleetSilent",alertstate="firing"}"#,
        <[_]>::is_empty,
        WAIT,
    )
    .unwrap();
    // (Rule groups are evaluated at different offsets: wait for the node group too.)
    prom.wait_for(
        r#"ALERTS{alertname="VpsNodeSilent",alertstate="firing"}"#,
        |s| s.len() == 1 && s[0].label("node") == Some("jp-02"),
        WAIT,
    )
    .unwrap();
    vpslens.kill_hard().unwrap();
    let alerts = wait_am(&am, "VpslensDown inhibiting VpsNodeSilent{jp-02}", |a| {
        let (Some(down), Some(j2)) = (
            find(a, "VpslensDown", None),
            find(a, "VpsNodeSilent", Some("jp-02")),
        ) else {
            return false;
        };
        state(down) == "active"
            && down["labels"]["instance"] == listen.to_string()
            && inhibited_by(j2) == [down["fingerprint"].as_str().unwrap_or("-").to_owned()]
    });
    let down = find(&alerts, "VpslensDown", None).unwrap();
    assert!(inhibited_by(down).is_empty(), "{down:#}");
    // The rules did not suppress anything: Prometheus still fires the node alert.
    assert!(
        firing_in_prometheus(&prom, "VpsNodeSilent").contains(&"jp-02".to_owned()),
        "VpsNodeSilent must keep firing at rule level while vpslens is down"
    );

    stop.store(true, Ordering::Relaxed);
    jp01.join().unwrap();
}
