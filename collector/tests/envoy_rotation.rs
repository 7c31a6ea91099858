//! Issue "tailing that never loses or double-counts": a real Envoy writes its access log under
//! load while the test rotates it (rename + `POST /reopen_logs`) many times and restarts
//! vpslens mid-run, once gracefully (SIGTERM) and once hard (SIGKILL). Prometheus' per-node
//! totals must equal the requests sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use vpslens_testkit::client::{send, TestRequest};

#[test]
fn rotations_and_restarts_under_load_lose_and_double_count_nothing() -> Result<()> {
    let mut stack = common::start(&[])?;
    let gateway = stack.envoy.listener_addr();
    let nodes = [
        ("jp-01", "203.0.113.11"),
        ("jp-02", "203.0.113.12"),
        ("us-01", "198.51.100.7"),
        ("de-01", "2001:db8:1::10"),
    ];
    // The sender runs until the rotations are done (bounded: 20 000 requests).
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(BTreeMap<String, u64>, usize)> {
            let mut sent: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) && i < 20_000 {
                let (node, ip) = nodes[i % nodes.len()];
                let req = TestRequest::post(&format!(
                    "/api/v1/server/UniProxy/push?node_id={}&node_type=vless&token={}",
                    i % nodes.len() + 1,
                    common::TOKEN
                ))
                .from_str_ip(ip)?
                .force_status(if i % 7 == 0 { 503 } else { 200 });
                send(gateway, &req)?;
                *sent.entry(node.to_owned()).or_default() += 1;
                i += 1;
            }
            Ok((sent, i))
        })
    };

    let log = stack.envoy.access_log_path().to_path_buf();
    let mut rotations = 0;
    while rotations < 20 {
        std::thread::sleep(Duration::from_millis(150));
        rotations += 1;
        let rotated = log.with_file_name(format!("access.log.{rotations}"));
        std::fs::rename(&log, &rotated)?;
        stack.envoy.reopen_logs()?;
        if rotations == 6 {
            stack.vpslens.stop_graceful()?;
            stack.vpslens =
                common::spawn_vpslens(&stack.registry, &stack.state, stack.listen, &log, &[])?;
        }
        if rotations == 14 {
            stack.vpslens.kill_hard()?;
            // Rotate once more while it is down.
            std::thread::sleep(Duration::from_millis(200));
            rotations += 1;
            std::fs::rename(&log, log.with_file_name(format!("access.log.{rotations}")))?;
            stack.envoy.reopen_logs()?;
            stack.vpslens =
                common::spawn_vpslens(&stack.registry, &stack.state, stack.listen, &log, &[])?;
        }
    }
    stop.store(true, Ordering::Release);
    let (sent, total) = sender.join().expect("sender thread")?;
    assert!(
        !sender_finished_early(total),
        "load ended before the rotations: {total} requests"
    );
    assert_eq!(sent.values().sum::<u64>(), total as u64);

    let got = common::wait_node_totals(&stack.prom, &sent)?;
    assert_eq!(got, sent);
    let errors = common::by_label(
        &stack.prom,
        r#"sum by (node) (vpslens_node_requests_total{code="503"})"#,
        "node",
    )?;
    assert_eq!(errors.values().sum::<f64>(), total.div_ceil(7) as f64);
    let body = stack.vpslens.scrape(stack.listen)?;
    let metric = |name: &str| vpslens_testkit::vpslens::metric_value(&body, name).unwrap_or(0.0);
    assert!(
        metric("vpslens_source_rotations_total") >= 1.0,
        "rotations not seen"
    );
    assert_eq!(metric("vpslens_lines_total{result=\"malformed\""), 0.0);
    stack.vpslens.stop_graceful()?;
    Ok(())
}

fn sender_finished_early(total: usize) -> bool {
    total >= 20_000
}
