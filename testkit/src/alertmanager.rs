//! A real Alertmanager (clustering disabled) with temp storage.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{free_port, tail, wait_for_value, ChildGuard};

/// Minimal config: one no-op receiver, fast grouping.
pub const DEFAULT_CONFIG: &str = "\
route:
  receiver: devnull
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: devnull
";

/// A running Alertmanager; killed on drop.
#[derive(Debug)]
pub struct Alertmanager {
    child: ChildGuard,
    dir: TempDir,
    addr: SocketAddr,
}

impl Alertmanager {
    /// Starts Alertmanager with [`DEFAULT_CONFIG`].
    pub fn start() -> Result<Self> {
        Self::start_with_config(DEFAULT_CONFIG)
    }

    /// Starts Alertmanager with the given YAML config and waits for `/-/ready`.
    pub fn start_with_config(config_yaml: &str) -> Result<Self> {
        let bin = crate::bins::alertmanager()?;
        let dir = tempfile::Builder::new()
            .prefix("vpslens-alertmanager-")
            .tempdir()?;
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config_yaml)?;
        let mut last_err = None;
        for attempt in 0..3 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let stderr = dir.path().join(format!("stderr-{attempt}.log"));
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn");
            let mut child = ChildGuard::spawn_logged(
                "alertmanager",
                &mut cmd,
                &dir.path().join(format!("stdout-{attempt}.log")),
                &stderr,
            )?;
            let url = format!("http://{addr}/-/ready");
            let ready = wait_for_value(
                "alertmanager /-/ready",
                Duration::from_secs(30),
                Duration::from_millis(100),
                || {
                    child.ensure_running()?;
                    Ok(crate::http::get(&url)
                        .ok()
                        .filter(|(c, _)| *c == 200)
                        .map(|_| ()))
                },
            );
            match ready {
                Ok(()) => return Ok(Self { child, dir, addr }),
                Err(e) => {
                    let log = tail(&stderr, 30);
                    let in_use = log.contains("address already in use");
                    last_err = Some(e.context(format!("alertmanager failed to start:\n{log}")));
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("alertmanager failed to start")))
    }

    /// Listen address (pass to [`crate::PrometheusOptions::alertmanager`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The temp dir holding config and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Alertmanager pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Current alerts (`GET /api/v2/alerts`).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let url = format!("{}/api/v2/alerts", self.url());
        let (code, body) = crate::http::get(&url)?;
        anyhow::ensure!(code == 200, "GET {url}: {code}: {body}");
        serde_json::from_str(&body).with_context(|| format!("GET {url}: bad JSON {body}"))
    }

    /// Waits until an alert with `labels.alertname == name` is present.
    pub fn wait_for_alert(&self, name: &str, timeout: Duration) -> Result<Value> {
        wait_for_value(
            &format!("alert {name} in alertmanager"),
            timeout,
            Duration::from_millis(250),
            || {
                Ok(self
                    .alerts()?
                    .into_iter()
                    .find(|a| a["labels"]["alertname"] == name))
            },
        )
    }
}
