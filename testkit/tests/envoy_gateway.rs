//! Proves the Envoy harness behaves like an Istio ingress gateway behind an
//! NLB with PROXY protocol. Fails (never skips) if Envoy is missing.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use vpslens_testkit::envoy::{CLUSTER_NAME, ROUTE_NAME};
use vpslens_testkit::fixtures::text_line_facts;
use vpslens_testkit::{
    send, send_many, EnvoyGateway, EnvoyOptions, LogFormat, TestRequest, XboardStub,
};

const CONFIG: &str =
    "/api/v1/server/UniProxy/config?node_id=1&node_type=vless&token=FAKE-TOKEN-do-not-use";
const WAIT: Duration = Duration::from_secs(10);

fn setup(format: LogFormat) -> Result<(XboardStub, EnvoyGateway)> {
    let stub = XboardStub::start()?;
    let gw = EnvoyGateway::start(EnvoyOptions::new(stub.addr()).log_format(format))?;
    Ok((stub, gw))
}

#[test]
fn proxy_protocol_source_is_the_client_and_xff_is_appended() -> Result<()> {
    let (stub, gw) = setup(LogFormat::Json)?;
    let req = TestRequest::get(CONFIG)
        .from_str_ip("203.0.113.11")?
        .header("X-Forwarded-For", "198.51.100.99");
    let codes = send_many(gw.listener_addr(), &[req.clone(), req.clone(), req])?;
    assert_eq!(codes, vec![200, 200, 200]);

    let forced = TestRequest::post("/api/v1/server/UniProxy/push?node_id=2")
        .from_str_ip("203.0.113.12")?
        .body("{}")
        .force_status(503);
    assert_eq!(send(gw.listener_addr(), &forced)?, 503);

    let recs = gw.wait_for_json_records(4, WAIT)?;
    assert_eq!(recs.len(), 4);
    for r in &recs[..3] {
        let remote = r["downstream_remote_address"].as_str().context("remote")?;
        assert!(remote.starts_with("203.0.113.11:"), "{r}");
        assert_eq!(r["x_forwarded_for"], "198.51.100.99,203.0.113.11", "{r}");
        // Typed JSON: numeric operators are JSON numbers.
        assert_eq!(r["response_code"], 200);
        assert!(r["duration"].is_u64() && r["bytes_sent"].is_u64(), "{r}");
        assert_eq!(r["upstream_cluster"], CLUSTER_NAME);
        assert_eq!(r["route_name"], ROUTE_NAME);
        assert_eq!(r["method"], "GET");
        assert_eq!(r["path"], CONFIG);
        assert_eq!(r["protocol"], "HTTP/1.1");
        assert_eq!(r["response_flags"], "-");
        assert_eq!(r["user_agent"], vpslens_testkit::client::XRAYR_USER_AGENT);
        // Missing values are JSON null, not "-".
        assert_eq!(r["requested_server_name"], Value::Null);
    }
    assert_eq!(recs[3]["response_code"], 503);
    assert_eq!(recs[3]["response_code_details"], "via_upstream");
    assert!(recs[3]["downstream_remote_address"]
        .as_str()
        .unwrap_or_default()
        .starts_with("203.0.113.12:"));
    assert_eq!(stub.request_count(), 4);
    Ok(())
}

#[test]
fn ipv6_source_text_format_and_quoted_user_agent() -> Result<()> {
    let (_stub, gw) = setup(LogFormat::Text)?;
    let req = TestRequest::get(CONFIG)
        .from_str_ip("2001:db8:1::10")?
        .user_agent(Some("ua with \"quote\""));
    assert_eq!(send(gw.listener_addr(), &req)?, 200);
    let lines = gw.wait_for_log_lines(1, WAIT)?;
    let line = &lines[0];
    let f = text_line_facts(line)?;
    assert_eq!(f.code, 200);
    assert_eq!(f.remote.ip().to_string(), "2001:db8:1::10");
    assert!(line.contains("\"2001:db8:1::10\""), "XFF appended: {line}");
    assert!(line.contains("\"ua with \"quote\"\""), "{line}");
    assert!(line.ends_with(&format!(" - {ROUTE_NAME}")), "{line}");
    assert!(line.contains(&format!(" {CLUSTER_NAME} ")), "{line}");
    Ok(())
}

#[test]
fn client_disconnect_is_logged_as_code_0_dc() -> Result<()> {
    let (_stub, gw) = setup(LogFormat::Json)?;
    let req = TestRequest::get(CONFIG)
        .from_str_ip("198.51.100.5")?
        .delay_ms(1000)
        .disconnect_after(Duration::from_millis(100));
    assert_eq!(send(gw.listener_addr(), &req)?, 0);
    let recs = gw.wait_for_json_records(1, WAIT)?;
    assert_eq!(recs[0]["response_code"], 0, "{}", recs[0]);
    assert_eq!(recs[0]["response_flags"], "DC");
    assert_eq!(
        recs[0]["response_code_details"],
        "downstream_remote_disconnect"
    );
    assert_eq!(recs[0]["upstream_service_time"], Value::Null);
    Ok(())
}

#[test]
fn forced_statuses_and_latency() -> Result<()> {
    let (_stub, gw) = setup(LogFormat::Json)?;
    for code in [500u16, 404, 422, 304] {
        let r = TestRequest::get(CONFIG).force_status(code);
        assert_eq!(send(gw.listener_addr(), &r)?, code);
    }
    let slow = TestRequest::get(CONFIG).delay_ms(300);
    assert_eq!(send(gw.listener_addr(), &slow)?, 200);
    let recs = gw.wait_for_json_records(5, WAIT)?;
    let codes: Vec<u64> = recs
        .iter()
        .filter_map(|r| r["response_code"].as_u64())
        .collect();
    assert_eq!(codes, vec![500, 404, 422, 304, 200]);
    let d = recs[4]["duration"].as_u64().context("duration")?;
    assert!((300..3000).contains(&d), "duration {d}");
    // upstream_service_time is a header value: a JSON *string*.
    assert!(recs[4]["upstream_service_time"].is_string());
    Ok(())
}

#[test]
fn reopen_logs_after_rename() -> Result<()> {
    let (_stub, gw) = setup(LogFormat::Json)?;
    assert_eq!(send(gw.listener_addr(), &TestRequest::get(CONFIG))?, 200);
    gw.wait_for_log_lines(1, WAIT)?;
    let rotated = gw.dir().join("access.log.1");
    std::fs::rename(gw.access_log_path(), &rotated)?;
    gw.reopen_logs()?;
    assert_eq!(send(gw.listener_addr(), &TestRequest::get(CONFIG))?, 200);
    let lines = gw.wait_for_log_lines(1, WAIT)?;
    assert_eq!(lines.len(), 1);
    assert_eq!(std::fs::read_to_string(&rotated)?.lines().count(), 1);
    Ok(())
}
