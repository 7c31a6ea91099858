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
/// per-node totals equal the lines Envoy wrote, counted from every rotated file, copy and the
/// live file (requests pause around each copytruncate: see `gate`).
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
        // Held for writing around a copytruncate, so no request is in flight while Envoy's
        // buffer drains and the copy is made: otherwise lines Envoy flushes between the copy
        // and the truncation are in no file (copytruncate's own loss), yet vpslens may have
        // read them, and the files stop being the truth.
        let gate = Arc::new(std::sync::RwLock::new(()));
        let senders: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, &(_, ip, id))| {
                let stop = stop.clone();
                let gate = gate.clone();
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
                        let _open = gate.read().expect("gate");
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
                let _closed = gate.write().expect("gate");
                wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
                    envoy_flushed(&stack.envoy)
                })?;
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
        // Everything Envoy buffered is in the files, whole lines only.
        wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            envoy_flushed(&stack.envoy) && lines_by_node(&dir, &nodes).is_ok()
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

/// Envoy holds no access-log bytes in its buffer.
fn envoy_flushed(envoy: &vpslens_testkit::EnvoyGateway) -> bool {
    envoy
        .stats(Some("filesystem.write_total_buffered"))
        .is_ok_and(|s| s.contains("filesystem.write_total_buffered: 0"))
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

/// Issue 14: a crash loop. 30 SIGKILLs at seeded random intervals of 0.2–8 s (log-uniform, so
/// the run stays near a minute) while a writer appends lines and rotates the log (rename +
/// new file, and copytruncate, alternately, every 400 lines). After the last restart the
/// count equals the lines written: no offsets lost between periodic checkpoints, no rotated
/// file left undrained, nothing counted twice. Each race it exposed has a named regression test
/// in `source::tests`: a copytruncate racing a poll
/// (`copytruncate_during_a_poll_does_not_recount_the_copy`), the first line's digest read back
/// from a file truncated meanwhile
/// (`copytruncate_while_the_first_batch_is_applied_keeps_the_first_line_evidence`), a rename
/// racing a restart's first listing
/// (`checkpointed_file_renamed_while_a_restart_lists_files_still_marks_its_copy`), a file
/// truncated and refilled between its proof or check and its read
/// (`restart_resumes_a_file_copytruncated_between_its_proof_and_its_read`,
/// `copytruncate_refilled_past_the_offset_before_the_read_is_not_read_as_a_continuation`).
#[test]
fn sigkill_loop_while_writing_and_rotating_is_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("nodes.yaml");
    std::fs::write(&registry, common::REGISTRY)?;
    let state = dir.path().join("state");
    let log = dir.path().join("access.log");
    std::fs::write(&log, "")?;
    let listen: std::net::SocketAddr =
        format!("127.0.0.1:{}", vpslens_testkit::free_port()?).parse()?;
    let mut vpslens = common::spawn_vpslens(&registry, &state, listen, &log, &[])?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || -> Result<u64> {
            use std::io::Write;
            let mut written = 0u64;
            let mut generation = 0u32;
            while !stop.load(Ordering::Acquire) {
                let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
                let mut batch = String::new();
                for _ in 0..20 {
                    batch.push_str(&envoy_like_line(written));
                    written += 1;
                }
                f.write_all(batch.as_bytes())?;
                drop(f);
                if written.is_multiple_of(400) {
                    generation += 1;
                    let rotated = log.with_file_name(format!("access.log.{generation}"));
                    if generation.is_multiple_of(2) {
                        std::fs::copy(&log, &rotated)?;
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&log)?
                            .set_len(0)?;
                    } else {
                        std::fs::rename(&log, &rotated)?;
                        std::fs::write(&log, "")?;
                    }
                }
                // Load pacing (~2,000 lines/s), not a wait for a condition.
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(written)
        })
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    // Logs of the killed processes, printed if the count is off.
    let mut history = String::new();
    for _ in 0..30 {
        // xorshift64*: a fixed seed, so every run kills at the same moments.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let unit = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        let secs = 0.2 * 40f64.powf(unit); // log-uniform in [0.2, 8)
        std::thread::sleep(Duration::from_secs_f64(secs));
        vpslens.kill_hard()?;
        history.push_str(&vpslens.output());
        vpslens = common::spawn_vpslens(&registry, &state, listen, &log, &[])?;
    }
    stop.store(true, Ordering::Release);
    let written = writer.join().expect("writer thread")?;
    let total = |body: &str| -> f64 {
        body.lines()
            .filter(|l| {
                l.starts_with("vpslens_node_requests_total{") && l.contains("node=\"jp-01\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let body = vpslens
        .wait_for_scrape(
            listen,
            |b| total(b) >= written as f64,
            Duration::from_secs(60),
        )
        .with_context_msg(written)?;
    if total(&body) != written as f64 {
        history.push_str(&vpslens.output());
        for l in history
            .lines()
            .filter(|l| l.contains("INFO") || l.contains("WARN"))
        {
            eprintln!("vpslens: {l}");
        }
    }
    assert_eq!(total(&body), written as f64, "lines written {written}");
    let malformed =
        vpslens_testkit::vpslens::metric_value(&body, "vpslens_lines_total{result=\"malformed\"");
    assert_eq!(malformed.unwrap_or(0.0), 0.0);
    vpslens.stop_graceful()?;
    Ok(())
}

trait WithWritten<T> {
    fn with_context_msg(self, written: u64) -> Result<T>;
}

impl<T> WithWritten<T> for Result<T> {
    fn with_context_msg(self, written: u64) -> Result<T> {
        anyhow::Context::with_context(self, || format!("{written} lines written"))
    }
}

/// A line shaped like Envoy's (sorted keys: the first ~300 bytes repeat on every line) from
/// jp-01's address.
fn envoy_like_line(seq: u64) -> String {
    format!(
        "{{\"authority\":\"panel.example.com\",\"bytes_received\":0,\"bytes_sent\":10,\"connection_termination_details\":null,\"downstream_local_address\":\"10.244.0.7:8443\",\"downstream_remote_address\":\"203.0.113.11:40000\",\"duration\":3,\"method\":\"POST\",\"path\":\"/api/v1/server/UniProxy/push?node_id=1&node_type=vless&token={}\",\"protocol\":\"HTTP/1.1\",\"request_id\":\"{seq:08}\",\"response_code\":200,\"response_flags\":\"-\",\"start_time\":\"2026-11-23T05:38:15.940Z\"}}\n",
        common::TOKEN
    )
}
