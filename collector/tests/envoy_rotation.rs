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

/// Issue 14: XrayR-like keep-alive connections (one client `ip:port` each, so Envoy's sorted
/// JSON lines share their first ~300 bytes and every new file's head equals the renamed one's)
/// while the log is renamed + reopened and copytruncated 22 times per round, with a SIGKILL
/// restart (and a rotation while down) in each round. After each of three rounds Prometheus'
/// per-node totals equal the lines Envoy wrote (every rotated file, copy and the live file,
/// counted from the files; copytruncate itself loses what Envoy writes between the copy and
/// the truncation, so the truth is the files, not the requests sent).
#[test]
fn keep_alive_load_through_renames_copytruncates_and_sigkills_three_rounds() -> Result<()> {
    use vpslens_testkit::client::KeepAlive;
    use vpslens_testkit::wait_until;

    let mut stack = common::start(&[])?;
    let gateway = stack.envoy.listener_addr();
    let nodes: [(&str, &str, u16); 4] = [
        ("jp-01", "203.0.113.11", 1),
        ("jp-02", "203.0.113.12", 2),
        ("us-01", "198.51.100.7", 3),
        ("de-01", "2001:db8:1::10", 4),
    ];
    let log = stack.envoy.access_log_path().to_path_buf();
    let dir = log.parent().expect("log dir").to_path_buf();
    let mut generation = 0u32;
    let mut sent_all = 0u64;
    for round in 0..3u16 {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, &(_, ip, id))| {
                let stop = stop.clone();
                let ip = ip.to_owned();
                std::thread::spawn(move || -> Result<u64> {
                    let client = TestRequest::get("/")
                        .from_str_ip(&ip)?
                        .source_port(41_000 + 10 * round + i as u16);
                    let mut conn = KeepAlive::connect(gateway, &client)?;
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let req = TestRequest::post(&format!(
                            "/api/v1/server/UniProxy/push?node_id={id}&node_type=vless&token={}",
                            common::TOKEN
                        ));
                        anyhow::ensure!(conn.send(&req)? == 200, "gateway refused");
                        sent += 1;
                    }
                    Ok(sent)
                })
            })
            .collect();
        for k in 0..22 {
            // Rotate once the live file holds new lines (Envoy flushes every 200 ms).
            wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
                std::fs::metadata(&log).is_ok_and(|m| m.len() > 32 * 1024)
            })?;
            if k % 6 == 5 {
                generation += 1;
                let copy = log.with_file_name(format!("access.log.{generation}"));
                std::fs::copy(&log, &copy)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&log)?
                    .set_len(0)?;
            } else {
                rename_reopen(&log, &stack.envoy, &mut generation)?;
            }
            if k == 11 {
                stack.vpslens.kill_hard()?;
                wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
                    std::fs::metadata(&log).is_ok_and(|m| m.len() > 32 * 1024)
                })?;
                rename_reopen(&log, &stack.envoy, &mut generation)?;
                stack.vpslens =
                    common::spawn_vpslens(&stack.registry, &stack.state, stack.listen, &log, &[])?;
            }
        }
        stop.store(true, Ordering::Release);
        let mut sent = 0;
        for s in senders {
            sent += s.join().expect("sender thread")?;
        }
        sent_all += sent;
        // Everything Envoy buffered is in the files.
        wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            stack
                .envoy
                .stats(Some("filesystem.write_total_buffered"))
                .is_ok_and(|s| s.contains("filesystem.write_total_buffered: 0"))
        })?;
        let truth = lines_by_node(&dir, &nodes)?;
        let written: u64 = truth.values().sum();
        assert!(
            written > 0 && written <= sent_all,
            "round {round}: {written} lines for {sent} requests"
        );
        let got = common::wait_node_totals(&stack.prom, &truth).inspect_err(|_| {
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let m = e.metadata().ok();
                    (
                        e.file_name(),
                        m.map(|m| (std::os::unix::fs::MetadataExt::ino(&m), m.len())),
                    )
                })
                .collect();
            files.sort();
            eprintln!("files: {files:?}");
            for l in stack.vpslens.output().lines() {
                if !l.contains("DEBUG") || l.contains("dropping") {
                    eprintln!("vpslens: {l}");
                }
            }
        })?;
        assert_eq!(got, truth, "round {round}");
        let body = stack.vpslens.scrape(stack.listen)?;
        let metric =
            |name: &str| vpslens_testkit::vpslens::metric_value(&body, name).unwrap_or(0.0);
        assert_eq!(metric("vpslens_lines_total{result=\"malformed\""), 0.0);
        eprintln!("round {round}: {sent} requests, {written} lines in the files, exact");
    }
    stack.vpslens.stop_graceful()?;
    Ok(())
}

fn rename_reopen(
    log: &std::path::Path,
    envoy: &vpslens_testkit::EnvoyGateway,
    generation: &mut u32,
) -> Result<()> {
    *generation += 1;
    std::fs::rename(log, log.with_file_name(format!("access.log.{generation}")))?;
    envoy.reopen_logs()
}

/// Lines per node in every `access.log*` file of `dir`, by `downstream_remote_address`.
fn lines_by_node(
    dir: &std::path::Path,
    nodes: &[(&str, &str, u16)],
) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_name().to_string_lossy().starts_with("access.log") {
            continue;
        }
        for line in std::fs::read_to_string(e.path())?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let addr = v["downstream_remote_address"].as_str().unwrap_or("");
            let ip = match addr.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(""),
                None => addr.rsplit_once(':').map_or(addr, |(ip, _)| ip),
            };
            let node = nodes
                .iter()
                .find(|(_, a, _)| *a == ip)
                .map_or("unregistered", |(n, _, _)| n);
            *out.entry(node.to_owned()).or_insert(0) += 1;
        }
    }
    Ok(out)
}
