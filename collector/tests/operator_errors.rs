//! Issue 18, "no silent failures for operators": every case an operator hit without a word now
//! gives an error (input that cannot be right) or a warning plus a metric (input that may be
//! right). Each test runs the real binary and asserts the message or the exit code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use vpslens_testkit::process::{free_port, wait_until};
use vpslens_testkit::vpslens::{metric_value, Vpslens};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vpslens"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn vpslens(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("VPSLENS_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const REGISTRY: &str = "nodes:\n  - name: jp-01\n    addresses: [203.0.113.11]\n    labels: {poll_interval_seconds: '10'}\n  - name: jp-02\n    addresses: [203.0.113.12]\n";

#[test]
fn replay_from_a_copied_binary_in_an_empty_dir_prints_the_fixture_table() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vpslens");
    std::fs::copy(bin(), &copy).unwrap();
    // The source checkout is hidden (an empty tmpfs over it, in a private mount namespace):
    // the binary must not fall back to the fixtures at their compile-time path.
    let checkout = repo("").canonicalize().unwrap();
    let out = Command::new("unshare")
        .args([
            "-r",
            "-m",
            "sh",
            "-c",
            r#"mount -t tmpfs none "$1" && exec "$2" replay"#,
            "sh",
        ])
        .arg(&checkout)
        .arg(&copy)
        .current_dir(dir.path())
        .env("VPSLENS_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("fixtures/expected.json")).unwrap())
            .unwrap();
    let requests = |name: &str| -> u64 {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in:\n{table}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    for (node, truth) in expected["nodes"].as_object().unwrap() {
        assert_eq!(
            requests(node),
            truth["requests"].as_u64().unwrap(),
            "{node}\n{table}"
        );
    }
    assert_eq!(
        requests("(unregistered)"),
        expected["unregistered"]["requests"].as_u64().unwrap()
    );
    let total = expected["total_requests"].as_u64().unwrap();
    assert!(table.contains(&format!("lines: ok={total} ")), "{table}");
}

#[test]
fn trusted_hops_without_client_ip_xff_exits_2() {
    let out = vpslens(&["replay", "--trusted-hops", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only applies with client_ip: xff"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn client_ip_xff_trusted_hops_1_on_the_fixture_warns_with_the_reason() {
    let out = vpslens(&["replay", "--client-ip", "xff", "--trusted-hops", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("222 of 223 lines had no usable client"), "{e}");
    assert!(e.contains("client_ip: downstream"), "{e}");
}

#[test]
fn replay_of_a_glob_matching_nothing_or_only_gz_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("nodes.yaml");
    std::fs::write(&reg, REGISTRY).unwrap();
    let reg = reg.to_str().unwrap();
    let none = dir.path().join("*.log");
    let out = vpslens(&["replay", "--registry", reg, none.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("matches no file"), "{}", stderr(&out));
    std::fs::write(dir.path().join("old.log.gz"), b"\x1f\x8b").unwrap();
    let gz = dir.path().join("old.log*");
    let out = vpslens(&["replay", "--registry", reg, gz.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only compressed files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn registry_cidr_with_host_bits_or_catch_all_exits_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let log = repo("fixtures/access-istio-json.log");
    for (addr, says) in [
        ("203.0.113.1/24", "host bits set"),
        ("0.0.0.0/0", "shorter than /8"),
        ("'::/0'", "shorter than /16"),
    ] {
        let reg = dir.path().join("nodes.yaml");
        std::fs::write(
            &reg,
            format!("nodes:\n  - name: jp-01\n    addresses: [{addr}]\n"),
        )
        .unwrap();
        let out = vpslens(&[
            "replay",
            "--registry",
            reg.to_str().unwrap(),
            log.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{addr}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains("registry node `jp-01`") && e.contains(says),
            "{addr}: {e}"
        );
    }
}

#[test]
fn port_in_use_names_the_address_and_touches_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("nodes.yaml");
    std::fs::write(&reg, REGISTRY).unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, b"").unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let state = dir.path().join("state");
    let out = vpslens(&[
        "run",
        "--listen",
        &addr,
        "--registry",
        reg.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains(&format!("cannot listen on {addr}")), "{e}");
    assert!(e.contains("in use"), "{e}");
    assert!(!e.contains("checkpoint"), "{e}");
    assert!(!state.exists(), "state dir touched before the bind");
}

#[test]
fn unwritable_state_dir_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("nodes.yaml");
    std::fs::write(&reg, REGISTRY).unwrap();
    let port = free_port().unwrap().to_string();
    let out = vpslens(&[
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--registry",
        reg.to_str().unwrap(),
        "--state-dir",
        "/proc/nope",
        "access.log",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("state_dir /proc/nope is not writable"),
        "{}",
        stderr(&out)
    );
}

fn start(args: &[&str]) -> (Vpslens, SocketAddr) {
    let mut v = Vpslens::run_with_env(bin(), args, &[("VPSLENS_LOG", "info")]).unwrap();
    // `--listen localhost:P` may resolve to ::1 or 127.0.0.1: read back what was bound.
    let mut bound = None;
    wait_until(WAIT, POLL, || {
        assert!(v.try_wait().unwrap().is_none(), "exited: {}", v.stderr());
        bound = v
            .stderr()
            .lines()
            .find(|l| l.contains("vpslens running"))
            .and_then(|l| l.split("listening on ").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse::<SocketAddr>().ok());
        bound.is_some()
    })
    .unwrap();
    let addr = bound.unwrap();
    v.wait_for_metrics(addr, WAIT).unwrap();
    (v, addr)
}

#[test]
fn live_mode_says_what_it_skips_ignores_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("nodes.yaml");
    std::fs::write(&reg, REGISTRY).unwrap();
    let log = dir.path().join("access.log");
    std::fs::copy(repo("fixtures/access-istio-json.log"), &log).unwrap();
    let size = std::fs::metadata(&log).unwrap().len();
    let missing = dir.path().join("not-yet.log");
    let state = dir.path().join("state");
    let listen = format!("localhost:{}", free_port().unwrap());
    let args = |read_from: &'static str| {
        vec![
            "run".to_owned(),
            "--listen".into(),
            listen.clone(),
            "--registry".into(),
            reg.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--read-from".into(),
            read_from.into(),
            log.display().to_string(),
            missing.display().to_string(),
        ]
    };
    // First start, default read_from end, no checkpoint: says how much it skips; the missing
    // path is a warning and a metric; host names are accepted for --listen.
    let a = args("end");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (mut v, addr) = start(&a);
    let e = v.stderr();
    assert!(
        e.contains(&format!("skipping {size} bytes already in 1 file(s)")),
        "{e}"
    );
    assert!(e.contains("matches no file yet"), "{e}");
    let body = v.scrape(addr).unwrap();
    assert_eq!(
        metric_value(&body, "vpslens_source_files_followed"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric_value(&body, r#"vpslens_node_poll_interval_seconds{node="jp-01""#),
        Some(10.0)
    );
    assert_eq!(
        metric_value(&body, r#"vpslens_node_poll_interval_seconds{node="jp-02""#),
        Some(60.0)
    );
    v.stop_graceful().unwrap();
    assert!(state.join("checkpoint.json").exists());

    // Second start with --read-from beginning: ignored because of the checkpoint, said so.
    let a = args("beginning");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (v, addr) = start(&a);
    assert!(
        v.stderr().contains("is ignored: checkpoint"),
        "{}",
        v.stderr()
    );
    v.wait_for_scrape(
        addr,
        |b| metric_value(b, "vpslens_checkpoint_last_write_timestamp_seconds").is_some(),
        WAIT,
    )
    .unwrap();
    // The state dir becomes unwritable (a file in its place): a metric, not just a log line,
    // once there is something to save (an idle tailer does not rewrite an unchanged
    // checkpoint).
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    let line = std::fs::read_to_string(repo("fixtures/access-istio-json.log")).unwrap();
    let line = line.lines().next().unwrap().to_owned() + "\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let body = v
        .wait_for_scrape(
            addr,
            |b| metric_value(b, "vpslens_checkpoint_last_write_successful") == Some(0.0),
            WAIT,
        )
        .unwrap();
    assert!(metric_value(&body, "vpslens_checkpoint_failures_total").unwrap() >= 1.0);
    // Readiness names it but stays 200 (it gates the gateway pod's readiness).
    let (code, text) = vpslens_testkit::http::get(&format!("http://{addr}/readyz")).unwrap();
    assert_eq!((code, text.as_str()), (200, "ready\ncheckpoint: failing\n"));
}

#[test]
fn corrupt_checkpoint_needs_the_flag_and_the_flag_says_what_it_loses() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("nodes.yaml");
    std::fs::write(&reg, REGISTRY).unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, b"").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("checkpoint.json"), b"{not json").unwrap();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let mut args = vec![
        "run",
        "--listen",
        &listen,
        "--registry",
        reg.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        log.to_str().unwrap(),
    ];
    let out = vpslens(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run once with --discard-corrupt-checkpoint"),
        "{}",
        stderr(&out)
    );
    args.push("--discard-corrupt-checkpoint");
    let (v, _) = start(&args);
    assert!(
        v.stderr().contains("lost: the file offsets"),
        "{}",
        v.stderr()
    );
    let moved: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoint.json.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(std::fs::read(moved[0].path()).unwrap(), b"{not json");
}
