//! Issue 7: results are identical whether lines are parsed on one thread or several.
//!
//! `vpslens replay` runs over the same log with `--parse-threads 1` and `--parse-threads 4`;
//! the per-node table, the `/metrics` text and the `/metrics/istio` text must be byte-for-byte
//! equal (except the registry load timestamps, which are the wall clock of each run).
//! The log mixes the bundled Envoy fixtures (JSON), rewritten client addresses (registered
//! and unregistered), malformed lines and a TEXT-format file, in batches large enough to be
//! split across threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A few thousand lines: fixture lines with the client address rotated through registered and
/// unregistered addresses, plus malformed ones.
fn build_log(dir: &Path) -> std::path::PathBuf {
    let fixture =
        std::fs::read_to_string(format!("{ROOT}/fixtures/access-istio-json.log")).unwrap();
    let clients = [
        "203.0.113.11",
        "203.0.113.12",
        "198.51.100.3",
        "192.0.2.50",
        "192.0.2.77",
        "2001:db8::9",
    ];
    let mut out = String::new();
    let mut n = 0usize;
    for round in 0..24 {
        for line in fixture.lines() {
            n += 1;
            let c = clients[(n * 7 + round) % clients.len()];
            let c = if c.contains(':') {
                format!("[{c}]")
            } else {
                c.to_owned()
            };
            // Rewrite the downstream address (key order is Envoy's, alphabetical).
            let line = match line.find("\"downstream_remote_address\":\"") {
                Some(at) => {
                    let start = at + "\"downstream_remote_address\":\"".len();
                    let end = start + line[start..].find('"').unwrap();
                    format!(
                        "{}{c}:{}{}",
                        &line[..start],
                        40000 + n % 20000,
                        &line[end..]
                    )
                }
                None => line.to_owned(),
            };
            out.push_str(&line);
            out.push('\n');
            if n.is_multiple_of(97) {
                out.push_str("{\"start_time\":\"not a time\",\"response_code\":200}\n");
            }
            if n.is_multiple_of(131) {
                out.push_str("{truncated\n");
            }
        }
    }
    let path = dir.join("access.log");
    std::fs::write(&path, out).unwrap();
    path
}

/// Runs replay; returns (table, /metrics without the registry's wall-clock samples,
/// /metrics/istio).
fn replay(threads: u32, logs: &[&Path], dir: &Path) -> (String, String, String) {
    let m = dir.join(format!("metrics-{threads}.prom"));
    let i = dir.join(format!("istio-{threads}.prom"));
    let out = Command::new(env!("CARGO_BIN_EXE_vpslens"))
        .arg("replay")
        .arg("--parse-threads")
        .arg(threads.to_string())
        .arg("--registry")
        .arg(format!("{ROOT}/fixtures/registry.yaml"))
        .arg("--metrics-out")
        .arg(&m)
        .arg("--istio-out")
        .arg(&i)
        .args(logs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: String = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        // Registry load times are the wall clock of each run; everything else must match.
        .filter(|l| !(l.starts_with("vpslens_registry_") && l.contains("_timestamp_seconds")))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        String::from_utf8(out.stdout).unwrap(),
        metrics,
        std::fs::read_to_string(&i).unwrap(),
    )
}

#[test]
fn one_thread_and_four_threads_give_the_same_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let json = build_log(dir.path());
    let text = Path::new(ROOT).join("fixtures/access-istio-text.log");
    let logs = [json.as_path(), text.as_path()];
    let one = replay(1, &logs, dir.path());
    let four = replay(4, &logs, dir.path());
    // The run must have real content: every node of the registry and the malformed lines.
    assert!(
        one.0.contains("jp-01") && one.0.contains("(unregistered)"),
        "{}",
        one.0
    );
    assert!(one
        .1
        .contains("vpslens_parse_errors_total{reason=\"bad_timestamp\"}"));
    assert!(one.2.contains("istio_requests_total{"));
    assert_eq!(one.0, four.0, "per-node table differs");
    assert_eq!(one.1, four.1, "/metrics differs");
    assert_eq!(one.2, four.2, "/metrics/istio differs");
}
