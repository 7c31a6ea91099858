//! Live-mode latency: how long after a line is written does `/metrics` count it?
//!
//! `live-latency VPSLENS_BIN [LINES] [PORT]` starts `vpslens run` on a fresh log (`--read-from
//! end`, default `poll_interval_ms` 250), then appends one Istio JSON line at a time (each
//! `write` + flush, as Envoy's flush does) at irregular intervals and polls `/metrics` every
//! millisecond until `vpslens_lines_total{result="ok"}` reaches the number written. Prints
//! p50, p90, p99 and max of write → visible, in milliseconds. Defaults: 300 lines, port 19465.
//! The poll interval is a fallback; lines are read on inotify events, so latency is expected
//! well below it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vpslens_lines_total{result="ok"}` from `/metrics`, if the endpoint answers.
fn ok_lines(port: u16) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("vpslens_lines_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .ok_or("usage: live-latency VPSLENS_BIN [LINES] [PORT]")?;
    let lines: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let port: u16 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(19_465);
    let dir = std::env::temp_dir().join(format!("vpslens-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("access.log");
    let registry = dir.join("registry.yaml");
    std::fs::write(&registry, vpslens_benches::registry_yaml(3000))?;
    let mut file = std::fs::File::create(&log)?;
    let _child = Kill(
        Command::new(bin)
            .args(["run", "--read-from", "end", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--registry")
            .arg(&registry)
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let start = Instant::now();
    while ok_lines(port).is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err("vpslens did not answer on /metrics".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut lat = Vec::with_capacity(usize::try_from(lines)?);
    for seq in 0..lines {
        // Irregular gaps (5..=45 ms) so writes do not line up with any poll period.
        std::thread::sleep(Duration::from_millis(5 + (seq * 7919) % 41));
        let line = vpslens_benches::line(seq, 3000, 20);
        let t = Instant::now();
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        file.flush()?;
        loop {
            if ok_lines(port).is_some_and(|n| n > seq) {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("line {seq} not visible after 10 s").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or(f64::NAN)
    };
    println!(
        "live-latency: {} lines, write -> /metrics visible: p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
        lat.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
