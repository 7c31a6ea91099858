//! Live mode's steady-state cost (issue 14), driven through a real Envoy.
//!
//! `live-cost VPSLENS_BIN OUT_DIR [RATE] [LOAD_SECONDS] [IDLE_SECONDS] [LATENCY_SECONDS]`
//! starts testkit's Envoy (Istio JSON format, file flush every 100 ms) in front of a stub Xboard
//! and `vpslens run --read-from end` on its access log, then, with `RATE` requests/s (default
//! 2,000) over 8 kept-alive connections (XrayR-like: each one client `ip:port`):
//! 1. cost: `LOAD_SECONDS` (60) of load while `/metrics` is scraped every `COST_SCRAPE_S`
//!    (default 15, the shipped scrape interval), until every logged line is counted;
//! 2. latency: `LATENCY_SECONDS` (15) of load while a probe scrapes `/metrics` every
//!    `SCRAPE_MS` (default 100);
//! 3. idle: no writes, no scrapes, for `IDLE_SECONDS` (30).
//!
//! Prints vpslens' CPU seconds (utime + stime from `/proc/PID/stat`) during phase 1 and per
//! 100,000 lines (the probe's frequent scrapes are not in it: they are not what a deployment
//! pays), its idle CPU in % of one core, and phase 2's request completion → counted on
//! `/metrics` latency percentiles (includes Envoy's 100 ms flush and the scrape step).
//! `POLL_MS` sets vpslens' `poll_interval_ms` (default: vpslens' own).
//! Copies the access log to `OUT_DIR/access.log` so `benches/live-cost.sh` can replay the same
//! lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vpslens_testkit::client::{KeepAlive, TestRequest};
use vpslens_testkit::{free_port, EnvoyGateway, EnvoyOptions, Vpslens, XboardStub};

type Error = Box<dyn std::error::Error + Send + Sync>;

const CLIENTS: [(&str, u32); 8] = [
    ("203.0.113.11", 1),
    ("203.0.113.12", 2),
    ("198.51.100.7", 3),
    ("2001:db8:1::10", 4),
    ("203.0.113.11", 1),
    ("203.0.113.12", 2),
    ("198.51.100.7", 3),
    ("192.0.2.50", 5),
];

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32, tick: f64) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 overall.
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = f.get(12).ok_or("no stime")?.parse()?;
    Ok((utime + stime) / tick)
}

/// Sum of `vpslens_node_requests_total` plus unregistered requests: every line counted.
fn counted(body: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix("vpslens_lines_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let bin = PathBuf::from(args.get(1).ok_or("usage: live-cost VPSLENS_BIN OUT_DIR")?);
    let out = PathBuf::from(args.get(2).ok_or("usage: live-cost VPSLENS_BIN OUT_DIR")?);
    let rate: f64 = args.get(3).map_or(Ok(2000.0), |s| s.parse())?;
    let load_s: f64 = args.get(4).map_or(Ok(60.0), |s| s.parse())?;
    let idle_s: f64 = args.get(5).map_or(Ok(30.0), |s| s.parse())?;
    let latency_s: f64 = args.get(6).map_or(Ok(15.0), |s| s.parse())?;
    let cost_scrape_s: f64 = std::env::var("COST_SCRAPE_S").map_or(Ok(15.0), |v| v.parse())?;
    let tick: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()?
            .stdout,
    )?
    .trim()
    .parse()?;

    // Scrape step (ms) of the latency probe; `SCRAPE_MS` (default 100).
    let scrape_ms: u64 = std::env::var("SCRAPE_MS").map_or(Ok(100), |v| v.parse())?;
    let stub = XboardStub::start()?;
    let mut opts = EnvoyOptions::new(stub.addr());
    opts.file_flush_interval_ms = 100;
    let envoy = EnvoyGateway::start(opts)?;
    std::fs::create_dir_all(&out)?;
    let registry = out.join("registry.yaml");
    std::fs::write(&registry, vpslens_testkit::fixtures::registry_yaml())?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let state = out.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let log = envoy.access_log_path().to_path_buf();
    let (listen_s, registry_s, state_s, log_s) = (
        listen.to_string(),
        registry.display().to_string(),
        state.display().to_string(),
        log.display().to_string(),
    );
    // `POLL_MS` sets `poll_interval_ms` (through a config file) to compare settings.
    let config = out.join("config.yaml");
    let config_s = config.display().to_string();
    let mut args = vec![
        "run",
        "--registry",
        &registry_s,
        "--listen",
        &listen_s,
        "--state-dir",
        &state_s,
        "--read-from",
        "end",
    ];
    if let Ok(ms) = std::env::var("POLL_MS") {
        std::fs::write(
            &config,
            format!("poll_interval_ms: {}\n", ms.parse::<u64>()?),
        )?;
        args.extend(["--config", &config_s]);
    }
    args.push(&log_s);
    let mut vpslens = Vpslens::run(&bin, &args)?;
    vpslens.wait_for_metrics(listen, Duration::from_secs(30))?;
    let pid = vpslens.pid().ok_or("vpslens pid")?;

    let gateway = envoy.listener_addr();

    // 1. Cost: load with scrapes at the deployment's interval.
    let cpu0 = cpu_seconds(pid, tick)?;
    let t_cost = Instant::now();
    let cost = run_phase(
        gateway,
        listen,
        rate,
        load_s,
        Duration::from_secs_f64(cost_scrape_s),
    )?;
    let sent_cost = cost.sent;
    wait_counted(listen, sent_cost)?;
    let cpu1 = cpu_seconds(pid, tick)?;
    let live_wall = t_cost.elapsed().as_secs_f64();

    // 2. Latency: load with a fine scrape probe.
    let lat_phase = run_phase(
        gateway,
        listen,
        rate,
        latency_s,
        Duration::from_millis(scrape_ms),
    )?;
    let sent = sent_cost + lat_phase.sent;
    wait_counted(listen, sent)?;

    // 3. Idle: no writes, no scrapes.
    let idle0 = cpu_seconds(pid, tick)?;
    let t_idle = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(idle_s));
    let idle1 = cpu_seconds(pid, tick)?;
    let idle_pct = 100.0 * (idle1 - idle0) / t_idle.elapsed().as_secs_f64();

    // Latency: the k-th completed request of phase 2 is visible at the first scrape counting
    // ≥ (phase 1's lines + k) lines.
    let mut done = lat_phase.done;
    done.sort();
    let scrapes = lat_phase.scrapes;
    let mut lat = Vec::with_capacity(done.len());
    let mut j = 0;
    for (k, t) in done.iter().enumerate() {
        while j < scrapes.len() && scrapes[j].1 < sent_cost + k as u64 + 1 {
            j += 1;
        }
        if let Some(&(seen, _)) = scrapes.get(j) {
            lat.push(seen.saturating_duration_since(*t).as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(f64::total_cmp);

    std::fs::copy(&log, out.join("access.log"))?;
    vpslens.stop_graceful()?;
    let cpu_live = cpu1 - cpu0;
    println!(
        "cost phase: lines counted   {sent_cost} in {live_wall:.1} s ({:.0}/s), scrape every {cost_scrape_s} s",
        sent_cost as f64 / live_wall
    );
    println!("vpslens CPU during load     {cpu_live:.2} s");
    println!(
        "CPU s per 100k live lines   {:.3}",
        cpu_live * 100_000.0 / sent_cost as f64
    );
    println!("idle CPU                    {idle_pct:.3} % of one core over {idle_s:.0} s");
    println!(
        "completion -> visible (ms)  p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}  (Envoy flush 100 ms, scrape step {scrape_ms} ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!("LINES={sent}");
    println!("LINES_COST={sent_cost}");
    println!("CPU_LIVE={cpu_live:.3}");
    Ok(())
}

/// What one load phase did: requests sent, their completion times and the scrapes taken.
struct Phase {
    sent: u64,
    done: Vec<Instant>,
    scrapes: Vec<(Instant, u64)>,
}

/// Sends `rate` requests/s for `secs` over [`CLIENTS`] while scraping `/metrics` every
/// `scrape_every` (counted lines per scrape).
fn run_phase(
    gateway: SocketAddr,
    listen: SocketAddr,
    rate: f64,
    secs: f64,
    scrape_every: Duration,
) -> Result<Phase, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let scrapes: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let scraper = {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now() + scrape_every;
            while !stop.load(Ordering::Acquire) {
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    // Scrape pacing, checking for the end of the phase every 100 ms.
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                    continue;
                }
                next += scrape_every;
                if let Ok(body) = vpslens_testkit::http::scrape(listen) {
                    let now = Instant::now();
                    if let Ok(mut s) = scrapes.lock() {
                        s.push((now, counted(&body)));
                    }
                }
            }
        })
    };
    let start = Instant::now();
    let per_conn = rate / CLIENTS.len() as f64;
    let senders: Vec<_> = CLIENTS
        .iter()
        .enumerate()
        .map(|(i, &(ip, id))| {
            let done = done.clone();
            let ip = ip.to_owned();
            std::thread::spawn(move || -> Result<u64, Error> {
                let client = TestRequest::get("/")
                    .from_str_ip(&ip)?
                    .source_port(45_000 + i as u16);
                let mut conn = KeepAlive::connect(gateway, &client)?;
                let mut n = 0u64;
                loop {
                    // Paced: request n goes out at start + n / per_conn seconds.
                    let due = start + Duration::from_secs_f64(n as f64 / per_conn);
                    if due.duration_since(start).as_secs_f64() >= secs {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let req = TestRequest::post(&format!(
                        "/api/v1/server/UniProxy/push?node_id={id}&node_type=vless&token=FAKE-TOKEN-do-not-use"
                    ));
                    conn.send(&req)?;
                    let t = Instant::now();
                    done.lock().map_err(|_| "poisoned")?.push(t);
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut sent = 0;
    for s in senders {
        sent += s.join().map_err(|_| "sender panicked")??;
    }
    // The probe runs until this phase's lines are counted (the latency of the last ones).
    let until = Instant::now() + Duration::from_secs(60);
    while scrape_every < Duration::from_secs(1)
        && Instant::now() < until
        && scrapes
            .lock()
            .map_err(|_| "poisoned")?
            .last()
            .is_none_or(|&(_, c)| c < sent)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    let _ = scraper.join();
    let done = std::mem::take(&mut *done.lock().map_err(|_| "poisoned")?);
    let scrapes = std::mem::take(&mut *scrapes.lock().map_err(|_| "poisoned")?);
    Ok(Phase {
        sent,
        done,
        scrapes,
    })
}

/// Scrapes every 250 ms until `/metrics` counts `lines` lines (60 s at most).
fn wait_counted(listen: SocketAddr, lines: u64) -> Result<(), Error> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let body = vpslens_testkit::http::scrape(listen)?;
        if counted(&body) >= lines {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("vpslens did not count {lines} lines").into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
