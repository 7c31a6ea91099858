//! Running the vpslens collector binary under test.
//!
//! Collector integration tests pass `env!("CARGO_BIN_EXE_vpslens")`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Result;
use tempfile::TempDir;

use crate::process::{read_lossy, wait_for_value, ManagedServer};

/// A running collector with stdout/stderr captured to files; killed on drop.
#[derive(Debug)]
pub struct Vpslens {
    child: ManagedServer,
    dir: TempDir,
}

impl Vpslens {
    /// Spawns `bin args...`.
    pub fn run(bin: &Path, args: &[&str]) -> Result<Self> {
        Self::run_with_env(bin, args, &[])
    }

    /// Spawns `bin args...` with extra environment variables.
    pub fn run_with_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("vpslens-run-").tempdir()?;
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ManagedServer::spawn("vpslens", &mut cmd, dir.path(), "")?;
        Ok(Self { child, dir })
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// A scratch dir that lives as long as this handle.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> &Path {
        self.child.stdout_path()
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> &Path {
        self.child.stderr_path()
    }

    /// Captured stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(self.child.stdout_path())
    }

    /// Captured stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(self.child.stderr_path())
    }

    /// stdout + stderr, e.g. to assert a secret never appears.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// `Ok(Some(status))` if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.child_mut().try_wait()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.child.child_mut().wait_timeout(timeout)
    }

    /// SIGTERM and wait up to 10 s; errors (after SIGKILL) if it did not exit.
    pub fn stop_graceful(&mut self) -> Result<ExitStatus> {
        self.stop_graceful_timeout(Duration::from_secs(10))
    }

    /// SIGTERM and wait up to `timeout`.
    pub fn stop_graceful_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.child.child_mut().terminate(timeout)
    }

    /// SIGKILL and reap.
    pub fn kill_hard(&mut self) -> Result<ExitStatus> {
        self.child.child_mut().kill()
    }

    /// `GET http://<addr>/metrics` (200 required).
    pub fn scrape(&self, addr: SocketAddr) -> Result<String> {
        crate::http::scrape(addr)
    }

    /// Polls `/metrics` until it answers (the process must stay alive).
    pub fn wait_for_metrics(&mut self, addr: SocketAddr, timeout: Duration) -> Result<String> {
        self.child
            .wait_ready(&format!("vpslens /metrics on {addr}"), timeout, || {
                Ok(crate::http::scrape(addr).ok())
            })
    }

    /// Polls `/metrics` until `pred(body)` holds; returns the body.
    pub fn wait_for_scrape<F: Fn(&str) -> bool>(
        &self,
        addr: SocketAddr,
        pred: F,
        timeout: Duration,
    ) -> Result<String> {
        let mut last = String::new();
        let r = wait_for_value(
            &format!("vpslens /metrics on {addr} to satisfy predicate"),
            timeout,
            Duration::from_millis(100),
            || {
                let body = crate::http::scrape(addr)?;
                if pred(&body) {
                    Ok(Some(body))
                } else {
                    last = body;
                    Ok(None)
                }
            },
        );
        r.map_err(|e| e.context(format!("last scrape:\n{last}")))
    }
}

/// Finds the value of the first sample line `name{labels...} value` whose
/// text starts with `series` (exact metric name plus optional label prefix),
/// e.g. `metric_value(body, r#"vpslens_requests_total{node="jp-01""#)`.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(series)
                && matches!(
                    l.as_bytes().get(series.len()),
                    Some(b'{' | b' ' | b',' | b'}')
                )
        })
        .and_then(|l| {
            let rest = &l[series.len()..];
            let after = rest.rfind('}').map_or(rest, |i| &rest[i + 1..]);
            after.split_whitespace().next()
        })
        .and_then(|v| v.parse().ok())
}

/// Node name → `status` from a `/api/nodes` JSON document (`{"nodes": [{"name", "status", …}]}`);
/// empty if the document has no such array.
pub fn node_statuses(doc: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    doc["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                n["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn finds_metric_values() {
        let body = "# HELP x y\nfoo_total{node=\"a\",code=\"200\"} 3\nfoo_total{node=\"b\"} 4\nfoo 1.5 1700000000000\nfoobar 9\n";
        assert_eq!(metric_value(body, "foo_total{node=\"b\""), Some(4.0));
        assert_eq!(metric_value(body, "foo_total{node=\"a\""), Some(3.0));
        assert_eq!(metric_value(body, "foo"), Some(1.5));
        assert_eq!(metric_value(body, "nope"), None);
    }
}
