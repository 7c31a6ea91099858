//! Issue "30 concurrent scrapes took 3.7 GB, 20 never-reading clients held 2.95 GB": scrapes of
//! `/metrics/istio` are streamed from a bounded number of renders, so slow and never-reading
//! scrapers cost vpslens a bounded amount of memory, and a normal scrape still gets a complete
//! body once the stuck ones are cut off. The bound here is generous (the bench
//! `benches/prometheus-scale.sh` holds the tight figures); before the fix the same clients took
//! gigabytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use vpslens_testkit::process::{free_port, wait_until};
use vpslens_testkit::vpslens::Vpslens;

const NODES: u32 = 1000;

/// VmHWM or VmRSS of `pid`, in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();
    kb / 1024.0
}

fn node_ip(n: u32) -> String {
    format!("10.{}.{}.{}", 100 + n / 65536, (n / 256) % 256, n % 256)
}

/// A registry of `NODES` nodes and an Istio-JSON access log with five codes, two routes and
/// a spread of durations per node: ~140 istio samples per node in the full shape.
fn write_load(dir: &Path) -> Result<()> {
    let mut reg = String::from("nodes:\n");
    let mut log = String::new();
    for n in 0..NODES {
        let _ = writeln!(
            reg,
            "  - name: node-{n:04}\n    addresses: [\"{}\"]\n    node_id: {}",
            node_ip(n),
            n + 1
        );
        for (i, code) in [200, 200, 304, 404, 500, 503, 200, 200].iter().enumerate() {
            let route = if i % 2 == 0 { "config" } else { "user" };
            let _ = writeln!(
                log,
                r#"{{"bytes_received":{br},"bytes_sent":{bs},"downstream_remote_address":"{ip}:40000","duration":{ms},"method":"GET","path":"/api/v1/server/UniProxy/{route}?node_id={id}&node_type=vless","response_code":{code},"response_flags":"-","start_time":"2026-11-23T07:47:54.218Z","upstream_cluster":"outbound|80||xboard.airport-prod.svc.cluster.local","x_forwarded_for":"{ip}"}}"#,
                br = i * 40,
                bs = 100 + i * 900,
                ip = node_ip(n),
                ms = 2 + i * 37,
                id = n + 1,
            );
        }
    }
    std::fs::write(dir.join("nodes.yaml"), reg)?;
    std::fs::write(dir.join("access.log"), log)?;
    Ok(())
}

/// Sends a GET for `path` (gzip accepted or not) and returns the connection unread.
fn get(addr: SocketAddr, path: &str, gzip: bool) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    let enc = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{enc}Connection: close\r\n\r\n"
    )?;
    Ok(s)
}

#[test]
fn slow_and_never_reading_scrapers_hold_bounded_memory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_load(dir.path())?;
    let cfg = dir.path().join("config.yaml");
    // The full shape (the heavier body) and a short render deadline, so that stuck clients are
    // cut within the test.
    std::fs::write(
        &cfg,
        "istio: {shape: full, max_concurrent_renders: 2, render_timeout_seconds: 4}\n",
    )?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let (listen_s, reg, log, cfg_s) = (
        listen.to_string(),
        dir.path().join("nodes.yaml").display().to_string(),
        dir.path().join("access.log").display().to_string(),
        cfg.display().to_string(),
    );
    let mut v = Vpslens::run(
        Path::new(env!("CARGO_BIN_EXE_vpslens")),
        &[
            "run",
            "--config",
            &cfg_s,
            "--registry",
            &reg,
            "--listen",
            &listen_s,
            "--read-from",
            "beginning",
            &log,
        ],
    )?;
    v.wait_for_metrics(listen, Duration::from_secs(30))?;
    let pid = v.pid().expect("pid");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("http://{listen}/metrics/istio");
    // Every line read: one sample per node per code per reporter.
    wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        client
            .get(format!("http://{listen}/metrics"))
            .send()
            .and_then(reqwest::blocking::Response::text)
            .is_ok_and(|t| {
                t.contains(&format!(
                    "vpslens_lines_total{{result=\"ok\"}} {}",
                    NODES * 8
                ))
            })
    })?;
    let full = client.get(&url).send()?.text()?;
    let full_len = full.len();
    let istio_samples = full.lines().filter(|l| l.starts_with("istio_")).count();
    assert!(
        istio_samples > 100 * NODES as usize,
        "the load makes a large body: {istio_samples} samples, {full_len} bytes"
    );
    drop(full);
    let base_hwm = status_mib(pid, "VmHWM:");

    // 20 clients that ask and never read, 10 that read 4 KiB a second.
    let mut stuck = Vec::new();
    for i in 0..20 {
        stuck.push(get(listen, "/metrics/istio", i % 2 == 0)?);
    }
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let mut s = get(listen, "/metrics/istio", false).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = 0usize;
                for _ in 0..8 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                got
            })
        })
        .collect();
    for t in slow {
        t.join().unwrap();
    }
    // Every stuck render is cut at its deadline and frees its slot: a normal scrape then gets
    // the whole body again.
    let metric = |name: &str| -> f64 {
        client
            .get(format!("http://{listen}/metrics"))
            .send()
            .and_then(reqwest::blocking::Response::text)
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with(name) && l.contains("endpoint=\"/metrics/istio\""))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        metric("vpslens_scrapes_cut_total") + metric("vpslens_scrapes_rejected_total") >= 20.0
    })?;
    let mut again = 0;
    wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        again = client
            .get(&url)
            .send()
            .and_then(reqwest::blocking::Response::text)
            .map_or(0, |t| t.len());
        again == full_len
    })?;
    let hwm = status_mib(pid, "VmHWM:");
    drop(stuck);
    eprintln!(
        "body {full_len} B, {istio_samples} istio samples; VmHWM {base_hwm:.1} MiB after one scrape, {hwm:.1} MiB after 30 slow/stuck scrapers (cut {}, rejected {})",
        metric("vpslens_scrapes_cut_total"),
        metric("vpslens_scrapes_rejected_total")
    );
    // Generous: one whole body is ~100 MB here; 30 of them would be gigabytes.
    #[allow(clippy::cast_precision_loss)]
    let body_mib = full_len as f64 / 1048576.0;
    assert!(
        hwm < base_hwm + 0.5 * body_mib,
        "VmHWM {hwm:.1} MiB (was {base_hwm:.1} after one scrape; body {body_mib:.1} MiB)"
    );
    Ok(())
}
