//! A real Alertmanager (clustering disabled) with temp storage.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{wait_for_value, ManagedServer};

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
    child: ManagedServer,
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
        let data = dir.path().to_owned();
        let (child, addr) = ManagedServer::start_on_free_port(
            "alertmanager",
            dir.path(),
            Duration::from_secs(30),
            |addr, attempt| {
                let mut cmd = Command::new(&bin);
                cmd.arg(format!("--config.file={}", cfg.display()))
                    .arg(format!(
                        "--storage.path={}",
                        data.join(format!("data-{attempt}")).display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--cluster.listen-address=")
                    .arg("--log.level=warn");
                cmd
            },
            |addr| {
                crate::http::get(&format!("http://{addr}/-/ready"))
                    .is_ok_and(|(code, _)| code == 200)
            },
        )?;
        Ok(Self { child, dir, addr })
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
        self.child.pid()
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
