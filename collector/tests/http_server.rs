//! The HTTP surface against hostile and real clients, with the real `vpslens run` process:
//! slowloris, file-descriptor exhaustion, a real Prometheus scraping over TLS with basic auth and
//! with mutual TLS (exporter-toolkit web config), config reloads, the `/api/*` listener split and
//! the log formats. Certificates are made at test time with rcgen; nothing secret is committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vpslens_testkit::process::{free_port, wait_for_value, wait_until};
use vpslens_testkit::prometheus::{Prometheus, PrometheusOptions};
use vpslens_testkit::vpslens::Vpslens;

/// The liveness bound of the issue: `/metrics` answers within 2 s, as a per-request timeout.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound for waits on conditions (a failing test ends here; passing ones end sooner).
const PATIENCE: Duration = Duration::from_secs(60);

/// An Istio JSON access-log line from jp-01 (203.0.113.11).
fn line(i: usize) -> String {
    format!(
        r#"{{"authority":"panel.example.com","bytes_received":0,"bytes_sent":190,"connection_termination_details":null,"downstream_local_address":"127.0.0.1:8443","downstream_remote_address":"203.0.113.11:{}","duration":1,"method":"GET","path":"/api/v1/server/UniProxy/config?node_id=1&node_type=vless","protocol":"HTTP/1.1","request_id":"req-{i}","requested_server_name":null,"response_code":200,"response_code_details":"via_upstream","response_flags":"-","route_name":"xboard-route","start_time":"2026-11-23T07:47:54.218Z","upstream_cluster":"outbound|80||xboard.airport-prod.svc.cluster.local","upstream_host":"127.0.0.1:45667","upstream_local_address":"127.0.0.1:59988","upstream_service_time":"1","upstream_transport_failure_reason":null,"user_agent":"go-resty/2.7.0","x_forwarded_for":"203.0.113.11"}}"#,
        10_000 + i % 50_000
    )
}

fn append(path: &Path, from: usize, n: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for i in from..from + n {
        text.push_str(&line(i));
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// Sum of `vpslens_node_requests_total{node="jp-01",…}`.
fn jp01(body: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with("vpslens_node_requests_total{node=\"jp-01\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// A vpslens run on a scratch log with checkpoints every second.
struct Setup {
    vp: Vpslens,
    addr: SocketAddr,
    log: PathBuf,
    checkpoint: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `vpslens run` (through `wrapper`, e.g. `prlimit`, if given) with `extra` appended to
/// its config file and `args` after `run`. Does not wait for it to serve.
fn start_with(extra: &str, args: &[&str], wrapper: &[&str], env: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let registry = dir.path().join("nodes.yaml");
    std::fs::write(&registry, common::REGISTRY).unwrap();
    let state = dir.path().join("state");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "registry: {}\nsources: [{}]\nstate_dir: {}\nread_from: beginning\ncheckpoint_interval_seconds: 1\npoll_interval_ms: 50\nlisten: {addr}\n{extra}",
            registry.display(),
            log.display(),
            state.display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_vpslens");
    let cfg = config.to_str().unwrap().to_owned();
    let mut argv: Vec<&str> = wrapper.to_vec();
    let program = if wrapper.is_empty() {
        bin
    } else {
        argv.push(bin);
        argv.remove(0)
    };
    argv.extend(["run", "--config", &cfg]);
    argv.extend(args);
    let vp = Vpslens::run_with_env(Path::new(program), &argv, env).unwrap();
    Setup {
        vp,
        addr,
        log,
        checkpoint: state.join("checkpoint.json"),
        _dir: dir,
    }
}

fn start(extra: &str, args: &[&str]) -> Setup {
    let mut s = start_with(extra, args, &[], &[]);
    s.vp.wait_for_metrics(s.addr, PATIENCE).unwrap();
    s
}

/// A fresh-connection client (no pooling) with the issue's 2 s bound per request.
fn plain_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `GET /metrics` within 2 s on a new connection; panics otherwise.
fn scrape_within_2s(client: &reqwest::blocking::Client, addr: SocketAddr) -> String {
    let started = Instant::now();
    let r = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap_or_else(|e| {
            panic!(
                "/metrics failed or took over 2 s ({:?}): {e}",
                started.elapsed()
            )
        });
    assert_eq!(r.status(), 200);
    r.text().unwrap()
}

/// Every file `offset` in the checkpoint file (empty if it does not exist or does not parse).
fn checkpoint_offsets(path: &Path) -> Vec<u64> {
    fn walk(v: &Value, out: &mut Vec<u64>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "offset" {
                        out.extend(x.as_u64());
                    }
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            walk(&v, &mut out);
        }
    }
    out
}

/// The largest file offset in the checkpoint (0 without one).
fn checkpoint_offset(path: &Path) -> u64 {
    checkpoint_offsets(path).into_iter().max().unwrap_or(0)
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Opens a connection that sends a partial request header and never finishes it.
fn slowloris(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: vpslens\r\nX-Slow: ")
        .ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Whether the server closed `s` (EOF or reset); never blocks.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// 1,000 connections holding partial request headers, reopened as soon as the server closes
/// them and trickling a byte per round, while a scraper thread scrapes `/metrics` with `client`
/// (each within 2 s) and lines are appended. Runs until every original attacker was closed by
/// the server, attackers were reopened `reopens` times and the checkpoint moved 5 times.
/// Returns (scrapes, slowest scrape, reopened, checkpoint offsets seen).
fn attack(
    s: &Setup,
    client: &reqwest::blocking::Client,
    reopens: usize,
    written: &mut usize,
) -> (u32, Duration, usize, BTreeSet<u64>) {
    let mut attackers: Vec<TcpStream> = Vec::new();
    wait_until(PATIENCE, Duration::ZERO, || {
        attackers.extend(slowloris(s.addr));
        attackers.len() == 1000
    })
    .unwrap();
    let original: BTreeSet<usize> = (0..attackers.len()).collect();
    // A scraper on its own thread, all along: every scrape within 2 s.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicU32::new(0));
    let scraper = {
        let (stop, done, addr, client) = (stop.clone(), done.clone(), s.addr, client.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                scrape_within_2s(&client, addr);
                slowest = slowest.max(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            slowest
        })
    };
    let mut closed_once = BTreeSet::new();
    let mut reopened = 0;
    let mut offsets = BTreeSet::new();
    let deadline = Instant::now() + PATIENCE * 2;
    // Until every original attacker was closed by the server, attackers were reopened 3,000
    // times (they kept coming back) and the checkpoint advanced 5 times.
    while closed_once.len() < original.len() || reopened < reopens || offsets.len() < 5 {
        assert!(
            Instant::now() < deadline && !scraper.is_finished(),
            "attackers closed: {} of 1000, reopened {reopened}, checkpoint offsets seen: {offsets:?}",
            closed_once.len()
        );
        // One attacker round per scrape: the attackers trickle and reconnect while scrapes go on.
        let seen = done.load(Ordering::Relaxed);
        wait_until(PATIENCE, Duration::from_millis(1), || {
            done.load(Ordering::Relaxed) > seen || scraper.is_finished()
        })
        .unwrap();
        for (i, a) in attackers.iter_mut().enumerate() {
            if closed_by_server(a) {
                closed_once.insert(i);
                reopened += 1;
                if let Some(n) = slowloris(s.addr) {
                    *a = n;
                }
            } else {
                let _ = a.write(b"a");
            }
        }
        append(&s.log, *written, 3);
        *written += 3;
        offsets.insert(checkpoint_offset(&s.checkpoint));
    }
    stop.store(true, Ordering::Relaxed);
    let slowest = scraper.join().expect("a scrape failed (see above)");
    let scrapes = done.load(Ordering::Relaxed);
    (scrapes, slowest, reopened, offsets)
}

/// Slowloris: 1,000 connections hold partial request headers (reopened as soon as the server
/// closes them, and trickling a byte now and then). `/metrics` answers every scrape within 2 s on
/// a new connection, the tailer keeps counting exactly, and checkpoints keep being written
/// (their offset advancing with the log). Each attacker connection is closed by the server
/// (header-read timeout or shed at the connection cap) and comes back.
#[test]
fn slowloris_neither_starves_metrics_nor_checkpoints() {
    let s = start("web: {header_read_timeout_seconds: 2}\n", &[]);
    let client = plain_client();
    let mut written = 0;
    append(&s.log, written, 10);
    written += 10;
    s.vp.wait_for_scrape(s.addr, |b| jp01(b) == 10, PATIENCE)
        .unwrap();

    let (scrapes, slowest, reopened, offsets) = attack(&s, &client, 3000, &mut written);
    // Counting stayed exact and the checkpoint caught up with the whole log.
    let log_len = std::fs::metadata(&s.log).unwrap().len();
    wait_until(PATIENCE, Duration::from_millis(100), || {
        jp01(&scrape_within_2s(&client, s.addr)) == written as u64
            && checkpoint_offset(&s.checkpoint) == log_len
    })
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.vp.pid().unwrap())).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "slowloris: {hwm}; {scrapes} scrapes answered within 2 s (slowest {slowest:?}); {} checkpoint offsets; {written} lines; attackers reopened {reopened} times",
        offsets.len()
    );
    assert!(
        !s.vp.stderr().contains("Too many open files"),
        "{}",
        s.vp.stderr()
    );
}

/// A flood ten times the connection cap (`max_connections: 100`, 1,000 attackers reconnecting
/// as fast as they are shed): a scraper that keeps its connection alive, as Prometheus does,
/// is never shed while flood connections are there to shed first, so every scrape answers
/// within 2 s without queueing behind the flood in the listen backlog.
#[test]
fn flood_above_the_cap_spares_the_scrapers_kept_alive_connection() {
    let s = start(
        "web: {header_read_timeout_seconds: 2, max_connections: 100}\n",
        &[],
    );
    // Pooled (keep-alive) like Prometheus' scrape client.
    let client = reqwest::blocking::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut written = 10;
    append(&s.log, 0, written);
    wait_until(PATIENCE, Duration::from_millis(100), || {
        jp01(&scrape_within_2s(&client, s.addr)) == 10
    })
    .unwrap();
    let (scrapes, slowest, reopened, _) = attack(&s, &client, 5000, &mut written);
    wait_until(PATIENCE, Duration::from_millis(100), || {
        jp01(&scrape_within_2s(&client, s.addr)) == written as u64
    })
    .unwrap();
    eprintln!(
        "flood above the cap: {scrapes} kept-alive scrapes within 2 s (slowest {slowest:?}); attackers reopened {reopened} times"
    );
}

/// fd exhaustion: `RLIMIT_NOFILE` lowered to 256 and 1,500 connections flooding in (held open,
/// sending nothing). The tailer keeps reading through log rotations (each needs a new
/// descriptor), the registry reloads, counts stay exact and checkpoints are written.
#[test]
fn fd_exhaustion_spares_the_tailer_and_checkpoints() {
    let s = start_with(
        "web: {header_read_timeout_seconds: 600, idle_timeout_seconds: 600}\nrotate_wait_seconds: 1\n",
        &[],
        &["prlimit", "--nofile=256:256", "--"],
        &[],
    );
    let mut vp = s.vp;
    vp.wait_for_metrics(s.addr, PATIENCE).unwrap();
    let client = plain_client();
    let mut flood = Vec::new();
    let mut written = 0;
    append(&s.log, written, 10);
    written += 10;
    wait_until(PATIENCE, Duration::from_millis(100), || {
        checkpoint_offset(&s.checkpoint) > 0
    })
    .unwrap();
    let first_checkpoint = mtime(&s.checkpoint);
    for round in 0..5 {
        // 300 more connections per round: far past the process' descriptor limit.
        for _ in 0..300 {
            if let Ok(c) = TcpStream::connect_timeout(&s.addr, Duration::from_millis(200)) {
                flood.push(c);
            }
        }
        append(&s.log, written, 50);
        written += 50;
        // Rotate: the tailer must open the new file while the flood holds.
        let rotated = s.log.with_extension(format!("log.{round}"));
        std::fs::rename(&s.log, &rotated).unwrap();
        std::fs::write(&s.log, "").unwrap();
        append(&s.log, written, 20);
        written += 20;
        let want = written as u64;
        wait_until(PATIENCE, Duration::from_millis(100), || {
            client
                .get(format!("http://{}/metrics", s.addr))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .is_some_and(|b| jp01(&b) == want)
        })
        .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", vp.stderr()));
    }
    assert!(
        flood.len() >= 1000,
        "only {} connections opened",
        flood.len()
    );
    // The checkpoint was rewritten during the flood and records the current file's end.
    let log_len = std::fs::metadata(&s.log).unwrap().len();
    wait_until(PATIENCE, Duration::from_millis(100), || {
        mtime(&s.checkpoint) > first_checkpoint
            && checkpoint_offsets(&s.checkpoint).contains(&log_len)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?} vs {log_len}", checkpoint_offsets(&s.checkpoint)));
    let pid = vp.pid().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let err = vp.stderr();
    // Nothing ran out of descriptors: neither the tailer, checkpoints and registry, nor accept.
    let starved: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("os error 24"))
        .collect();
    assert!(
        starved.is_empty(),
        "{} lines like: {:?}",
        starved.len(),
        starved.first()
    );
    assert!(vp.try_wait().unwrap().is_none(), "vpslens exited:\n{err}");
    eprintln!(
        "fd exhaustion: {} client connections, vpslens holds {fds} fds (limit 256)",
        flood.len()
    );
}

/// Test PKI: a CA, a server certificate for 127.0.0.1, a client certificate from the CA and a
/// self-signed client certificate the CA never saw.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "vpslens test CA");
        write("ca.pem", &ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        write("server.pem", &server.pem());
        write("server.key", &server_key.serialize_pem());
        let client_key = KeyPair::generate().unwrap();
        let mut cp = CertificateParams::new(vec!["prometheus".to_owned()]).unwrap();
        cp.distinguished_name.push(DnType::CommonName, "prometheus");
        let client = cp.signed_by(&client_key, &issuer).unwrap();
        write("client.pem", &client.pem());
        write("client.key", &client_key.serialize_pem());
        let rogue_key = KeyPair::generate().unwrap();
        let rogue = CertificateParams::new(vec!["prometheus".to_owned()])
            .unwrap()
            .self_signed(&rogue_key)
            .unwrap();
        write("rogue.pem", &rogue.pem());
        write("rogue.key", &rogue_key.serialize_pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// An HTTPS client trusting the CA, with an optional client certificate (`client`/`rogue`).
    fn client(&self, identity: Option<&str>) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0);
        if let Some(id) = identity {
            let mut pem = self.read(&format!("{id}.pem"));
            pem.extend(self.read(&format!("{id}.key")));
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    /// Writes `web.yml` next to the certificates (relative paths, as exporter-toolkit allows).
    fn web_config(&self, yaml: &str) -> String {
        let p = self.dir.path().join("web.yml");
        let tmp = self.dir.path().join("web.yml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

fn status(r: reqwest::Result<reqwest::blocking::Response>) -> Option<u16> {
    r.ok().map(|r| r.status().as_u16())
}

/// Reads whatever a plain-HTTP request gets back from the TLS listener (until EOF/reset).
/// Waits until `client` gets any HTTP status from `url` (failing at once if vpslens exited).
fn wait_answering(s: &mut Setup, what: &str, client: &reqwest::blocking::Client, url: &str) {
    wait_for_value(what, PATIENCE, Duration::from_millis(100), || {
        if let Some(st) = s.vp.try_wait()? {
            anyhow::bail!("vpslens exited with {st}:\n{}", s.vp.stderr());
        }
        Ok(status(client.get(url).send()))
    })
    .unwrap();
}

fn plain_http_answer(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: vpslens\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A real Prometheus scrapes vpslens over TLS with basic auth from its own scrape config
/// (`tls_config.ca_file`, `basic_auth`): `up == 1` and the exact count; the same job with a
/// wrong password is down with 401. A wrong or missing password gets 401 with
/// `WWW-Authenticate: Basic` and the configured headers; plain HTTP gets no HTTP answer.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let pki = Pki::new();
    let web = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  prometheus: {}\n",
        bcrypt_hash("correct horse")
    ));
    let mut s = start_with("", &["--web.config.file", &web], &[], &[]);
    let https = pki.client(None);
    let url = format!("https://{}/metrics", s.addr);
    wait_answering(&mut s, "vpslens over TLS", &https, &url);
    append(&s.log, 0, 7);

    let job = |name: &str, password: &str| {
        json!({
            "job_name": name,
            "scheme": "https",
            "tls_config": {"ca_file": pki.path("ca.pem")},
            "basic_auth": {"username": "prometheus", "password": password},
            "static_configs": [{"targets": [s.addr.to_string()]}],
        })
    };
    let mut opts = PrometheusOptions::new(&[], Duration::from_secs(1))
        .scrape_config(job("tls", "correct horse"))
        .scrape_config(job("wrong", "battery staple"));
    opts.wait_targets_up = false;
    let prom = Prometheus::start_with(opts).unwrap();
    prom.wait_for(
        r#"up{job="tls"}"#,
        |v| v.len() == 1 && v[0].value == 1.0,
        PATIENCE,
    )
    .unwrap();
    prom.wait_for(
        r#"sum(vpslens_node_requests_total{job="tls",node="jp-01"})"#,
        |v| v.len() == 1 && v[0].value == 7.0,
        PATIENCE,
    )
    .unwrap();
    prom.wait_for(
        r#"up{job="wrong"}"#,
        |v| v.len() == 1 && v[0].value == 0.0,
        PATIENCE,
    )
    .unwrap();
    let targets = prom.targets().unwrap();
    let wrong = targets["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["labels"]["job"] == "wrong")
        .unwrap();
    assert!(
        wrong["lastError"].as_str().unwrap().contains("401"),
        "{wrong}"
    );

    for (user, pass) in [
        ("prometheus", Some("battery staple")),
        ("nobody", Some("correct horse")),
        ("prometheus", None),
    ] {
        let mut req = https.get(&url);
        if let Some(p) = pass {
            req = req.basic_auth(user, Some(p));
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401, "{user}/{pass:?}");
        assert_eq!(r.headers()["www-authenticate"], "Basic");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let ok = https
        .get(&url)
        .basic_auth("prometheus", Some("correct horse"))
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-content-type-options"], "nosniff");

    // Plain HTTP while TLS is on: no HTTP answer, and an HTTP client fails.
    let answer = plain_http_answer(s.addr);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(plain_client()
        .get(format!("http://{}/metrics", s.addr))
        .send()
        .is_err());
    assert!(!s.vp.output().contains("correct horse"));
}

/// Mutual TLS with `client_auth_type: RequireAndVerifyClientCert`: Prometheus with a client
/// certificate from the CA scrapes (`up == 1`); without one, or with a certificate the CA did
/// not sign, the handshake fails.
#[test]
fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let web = pki.web_config(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let mut s = start_with(
        "web: {header_read_timeout_seconds: 1}\n",
        &["--web.config.file", &web],
        &[],
        &[],
    );
    let url = format!("https://{}/metrics", s.addr);
    let with_cert = pki.client(Some("client"));
    wait_answering(&mut s, "vpslens over mTLS", &with_cert, &url);
    // A TLS handshake that stops half-way is closed by the header-read timeout.
    let mut stalled = TcpStream::connect(s.addr).unwrap();
    stalled
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .unwrap();
    stalled.set_nonblocking(true).unwrap();
    wait_until(PATIENCE, Duration::from_millis(50), || {
        closed_by_server(&mut stalled)
    })
    .unwrap();
    assert!(
        pki.client(None).get(&url).send().is_err(),
        "no client certificate"
    );
    assert!(
        pki.client(Some("rogue")).get(&url).send().is_err(),
        "certificate not from the CA"
    );

    let job = |name: &str, cert: Option<&str>| {
        let mut tls = json!({"ca_file": pki.path("ca.pem")});
        if let Some(c) = cert {
            tls["cert_file"] = pki.path(&format!("{c}.pem")).into();
            tls["key_file"] = pki.path(&format!("{c}.key")).into();
        }
        json!({
            "job_name": name,
            "scheme": "https",
            "tls_config": tls,
            "static_configs": [{"targets": [s.addr.to_string()]}],
        })
    };
    let mut opts = PrometheusOptions::new(&[], Duration::from_secs(1))
        .scrape_config(job("mtls", Some("client")))
        .scrape_config(job("nocert", None));
    opts.wait_targets_up = false;
    let prom = Prometheus::start_with(opts).unwrap();
    prom.wait_for(
        r#"up{job="mtls"}"#,
        |v| v.len() == 1 && v[0].value == 1.0,
        PATIENCE,
    )
    .unwrap();
    prom.wait_for(
        r#"up{job="nocert"}"#,
        |v| v.len() == 1 && v[0].value == 0.0,
        PATIENCE,
    )
    .unwrap();
}

/// The web config is re-read on change: new users apply without a restart, old ones stop
/// working, an invalid edit fails closed (500) until fixed; an unknown key stops start-up.
#[test]
fn web_config_changes_apply_without_restart() {
    let pki = Pki::new();
    let web = pki.web_config(&format!(
        "basic_auth_users:\n  alice: {}\n",
        bcrypt_hash("pw-a")
    ));
    let s = start_with("", &["--web.config.file", &web], &[], &[]);
    let client = plain_client();
    let get = |user: &str, pass: &str| {
        status(
            client
                .get(format!("http://{}/metrics", s.addr))
                .basic_auth(user, Some(pass))
                .send(),
        )
    };
    // Waits until `user:pass` gets `code` (the file is re-read on change).
    let until = |user: &str, pass: &str, code: u16| {
        wait_until(PATIENCE, Duration::from_millis(100), || {
            get(user, pass) == Some(code)
        })
        .unwrap();
    };
    let only_bob = || {
        pki.web_config(&format!(
            "basic_auth_users:\n  bob: {}\n",
            bcrypt_hash("pw-b")
        ))
    };
    until("alice", "pw-a", 200);
    assert_eq!(get("alice", "wrong"), Some(401));

    only_bob();
    until("bob", "pw-b", 200);
    assert_eq!(
        get("alice", "pw-a"),
        Some(401),
        "removed user still accepted"
    );

    pki.web_config("basic_auth_users:\n  bob: not-a-bcrypt-hash\n");
    until("bob", "pw-b", 500);
    only_bob();
    until("bob", "pw-b", 200);
    assert!(
        s.vp.stderr().contains("not a bcrypt hash"),
        "{}",
        s.vp.stderr()
    );

    let bad = pki.web_config("basic_auth_users: {}\ntls_server_config: {cert_flie: x}\n");
    let mut b = start_with("", &["--web.config.file", &bad], &[], &[]);
    let st = b.vp.wait_exit(PATIENCE).unwrap().expect("exits");
    assert!(!st.success());
    assert!(b.vp.stderr().contains("cert_flie"), "{}", b.vp.stderr());
}

/// `/api/*` on its own listener (`--web.api-listen-address`) or off (`--web.disable-api`);
/// logs are plain text without ANSI colour when stderr is not a terminal, or JSON lines.
#[test]
fn api_listener_split_and_log_formats() {
    let api_addr = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    // `--log.level info` wins over VPSLENS_LOG=warn.
    let mut split = start_with(
        "",
        &[
            "--web.api-listen-address",
            &api_addr.to_string(),
            "--log.level",
            "info",
        ],
        &[],
        &[("VPSLENS_LOG", "warn")],
    );
    split.vp.wait_for_metrics(split.addr, PATIENCE).unwrap();
    let c = plain_client();
    let get = |addr: SocketAddr, path: &str| status(c.get(format!("http://{addr}{path}")).send());
    assert_eq!(get(split.addr, "/metrics"), Some(200));
    assert_eq!(get(split.addr, "/api/nodes"), Some(404));
    assert_eq!(get(split.addr, "/api/unregistered"), Some(404));
    assert_eq!(get(api_addr, "/api/nodes"), Some(200));
    assert_eq!(get(api_addr, "/api/unregistered"), Some(200));
    assert_eq!(get(api_addr, "/metrics"), Some(404));
    let err = split.vp.stderr();
    assert!(err.contains("vpslens running"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in logs off a terminal: {err:?}"
    );
    // Without the flag, VPSLENS_LOG still applies.
    let mut quiet = start_with("", &[], &[], &[("VPSLENS_LOG", "warn")]);
    quiet.vp.wait_for_metrics(quiet.addr, PATIENCE).unwrap();
    assert!(
        !quiet.vp.stderr().contains("vpslens running"),
        "{}",
        quiet.vp.stderr()
    );

    let off = start("web: {api: {enabled: false}}\n", &["--log.format", "json"]);
    assert_eq!(get(off.addr, "/api/nodes"), Some(404));
    assert_eq!(get(off.addr, "/metrics"), Some(200));
    let err = off.vp.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("vpslens running")), "{err}");

    // SIGTERM with an idle new connection, a half-sent header and an idle keep-alive connection
    // open: vpslens exits cleanly at once (the final checkpoint is written after the server).
    let mut off = off;
    let _fresh = TcpStream::connect(off.addr).unwrap();
    let _partial = slowloris(off.addr).unwrap();
    let mut kept = TcpStream::connect(off.addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: vpslens\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let st = off.vp.stop_graceful().unwrap();
    assert!(st.success(), "{st}\n{}", off.vp.stderr());
}
