//! A real Prometheus server (temp config + TSDB) and `promtool` helpers.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::process::{wait_for_value, ChildGuard, ManagedServer};

/// One instant-vector sample returned by [`Prometheus::query`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series labels (including `__name__` when present).
    pub labels: BTreeMap<String, String>,
    /// Sample value.
    pub value: f64,
}

impl Sample {
    /// Label value, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Options for [`Prometheus::start_with`].
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// Scrape targets (loopback), all in one job.
    pub targets: Vec<SocketAddr>,
    /// Job name of the scrape config (default `vpslens`).
    pub job_name: String,
    /// Global scrape interval (scrape timeout is set equal to it).
    pub scrape_interval: Duration,
    /// Rule evaluation interval.
    pub evaluation_interval: Duration,
    /// Rule files to load (`rule_files`).
    pub rule_files: Vec<PathBuf>,
    /// Alertmanager to send alerts to (`host:port`, loopback).
    pub alertmanager: Option<SocketAddr>,
    /// Pass `--web.enable-lifecycle` (allows [`Prometheus::reload`]).
    pub enable_lifecycle: bool,
    /// Wait until every target has `up == 1` before returning (default true).
    pub wait_targets_up: bool,
    /// Startup timeout (default 30 s).
    pub startup_timeout: Duration,
    /// Extra scrape jobs over the same targets: `(job_name, metrics_path)`.
    pub extra_jobs: Vec<(String, String)>,
    /// Labels added to every target of the main job and of `extra_jobs` (e.g. `pod`).
    pub target_labels: BTreeMap<String, String>,
    /// Further scrape configs, verbatim (`scrape_configs` entries).
    pub extra_scrape_configs: Vec<Value>,
}

impl PrometheusOptions {
    /// Defaults for the given targets and scrape interval.
    pub fn new(targets: &[SocketAddr], scrape_interval: Duration) -> Self {
        Self {
            targets: targets.to_vec(),
            job_name: "vpslens".to_owned(),
            scrape_interval,
            evaluation_interval: scrape_interval,
            rule_files: Vec::new(),
            alertmanager: None,
            enable_lifecycle: true,
            wait_targets_up: true,
            startup_timeout: Duration::from_secs(30),
            extra_jobs: Vec::new(),
            target_labels: BTreeMap::new(),
            extra_scrape_configs: Vec::new(),
        }
    }

    /// Adds a label to every target of the main job and the extra jobs.
    pub fn target_label(mut self, name: &str, value: &str) -> Self {
        self.target_labels.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Adds a scrape config verbatim.
    pub fn scrape_config(mut self, config: Value) -> Self {
        self.extra_scrape_configs.push(config);
        self
    }

    /// Adds a scrape job over the same targets with another `metrics_path`.
    pub fn extra_job(mut self, job: &str, metrics_path: &str) -> Self {
        self.extra_jobs
            .push((job.to_owned(), metrics_path.to_owned()));
        self
    }

    /// Adds a rule file.
    pub fn rule_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.rule_files.push(p.into());
        self
    }

    /// Sets the Alertmanager address.
    pub fn alertmanager(mut self, addr: SocketAddr) -> Self {
        self.alertmanager = Some(addr);
        self
    }

    /// Renders `prometheus.yml` (as JSON, which is valid YAML).
    pub fn config(&self) -> Value {
        let dur = |d: Duration| format!("{}ms", d.as_millis().max(1));
        let targets: Vec<String> = self.targets.iter().map(ToString::to_string).collect();
        let mut cfg = json!({
            "global": {
                "scrape_interval": dur(self.scrape_interval),
                "scrape_timeout": dur(self.scrape_interval),
                "evaluation_interval": dur(self.evaluation_interval),
            },
            "rule_files": self.rule_files.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>(),
            "scrape_configs": [{
                "job_name": self.job_name,
                "static_configs": [{ "targets": targets, "labels": self.target_labels }]
            }]
        });
        for (job, path) in &self.extra_jobs {
            if let Some(jobs) = cfg["scrape_configs"].as_array_mut() {
                jobs.push(json!({
                    "job_name": job,
                    "metrics_path": path,
                    "static_configs": [{ "targets": targets, "labels": self.target_labels }]
                }));
            }
        }
        if let Some(jobs) = cfg["scrape_configs"].as_array_mut() {
            jobs.extend(self.extra_scrape_configs.iter().cloned());
        }
        if let Some(am) = self.alertmanager {
            cfg["alerting"] = json!({
                "alertmanagers": [{ "static_configs": [{ "targets": [am.to_string()] }] }]
            });
        }
        cfg
    }
}

/// A running Prometheus; killed on drop, TSDB removed.
#[derive(Debug)]
pub struct Prometheus {
    child: ManagedServer,
    dir: TempDir,
    addr: SocketAddr,
    client: reqwest::blocking::Client,
    opts: PrometheusOptions,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every `scrape_interval` and waits
    /// until all targets are up.
    pub fn start(targets: &[SocketAddr], scrape_interval: Duration) -> Result<Self> {
        Self::start_with(PrometheusOptions::new(targets, scrape_interval))
    }

    /// Starts Prometheus with full options.
    pub fn start_with(opts: PrometheusOptions) -> Result<Self> {
        for t in &opts.targets {
            anyhow::ensure!(t.ip().is_loopback(), "target {t} is not loopback");
        }
        let bin = crate::bins::prometheus()?;
        let dir = tempfile::Builder::new()
            .prefix("vpslens-prometheus-")
            .tempdir()?;
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, serde_json::to_string_pretty(&opts.config())?)?;
        let client = crate::http::client(Duration::from_secs(10))?;

        let data = dir.path().to_owned();
        let (child, addr) = ManagedServer::start_on_free_port(
            "prometheus",
            dir.path(),
            opts.startup_timeout,
            |addr, attempt| {
                let mut cmd = Command::new(&bin);
                cmd.arg(format!("--config.file={}", cfg_path.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        data.join(format!("data-{attempt}")).display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--log.level=warn");
                if opts.enable_lifecycle {
                    cmd.arg("--web.enable-lifecycle");
                }
                cmd
            },
            |addr| {
                client
                    .get(format!("http://{addr}/-/ready"))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            },
        )?;
        let p = Self {
            child,
            dir,
            addr,
            client,
            opts,
        };
        if p.opts.wait_targets_up && !p.opts.targets.is_empty() {
            p.wait_targets_up(p.opts.startup_timeout)?;
        }
        Ok(p)
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The temp dir holding config and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prometheus pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    fn api_get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}{}", self.url(), path);
        let resp = self
            .client
            .get(&url)
            .query(query)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let code = resp.status().as_u16();
        let body = resp.text()?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {url}: {code}: non-JSON body {body}"))?;
        if v["status"] != "success" {
            bail!("GET {url}: {code}: {body}");
        }
        Ok(v["data"].clone())
    }

    /// Instant query via `/api/v1/query`. Vectors become samples; a scalar
    /// becomes one sample with no labels.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data = self
            .api_get("/api/v1/query", &[("query", promql)])
            .with_context(|| format!("query {promql:?}"))?;
        parse_query_data(&data).with_context(|| format!("query {promql:?}"))
    }

    /// Polls `promql` every 250 ms until `pred(samples)` holds; returns those
    /// samples, or errors after `timeout` showing the last result.
    pub fn wait_for<F>(&self, promql: &str, pred: F, timeout: Duration) -> Result<Vec<Sample>>
    where
        F: Fn(&[Sample]) -> bool,
    {
        let mut last: Option<Vec<Sample>> = None;
        let r = wait_for_value(
            &format!("PromQL {promql:?} to satisfy predicate"),
            timeout,
            Duration::from_millis(250),
            || {
                let s = self.query(promql)?;
                if pred(&s) {
                    Ok(Some(s))
                } else {
                    last = Some(s);
                    Ok(None)
                }
            },
        );
        r.with_context(|| format!("last result: {last:?}"))
    }

    /// Waits until every configured target has `up == 1`.
    pub fn wait_targets_up(&self, timeout: Duration) -> Result<()> {
        let n = self.opts.targets.len();
        let q = format!("up{{job=\"{}\"}}", self.opts.job_name);
        self.wait_for(
            &q,
            |s| s.len() == n && s.iter().all(|x| x.value == 1.0),
            timeout,
        )
        .map(|_| ())
    }

    /// `/api/v1/targets` data.
    pub fn targets(&self) -> Result<Value> {
        self.api_get("/api/v1/targets", &[])
    }

    /// `/api/v1/rules` data.
    pub fn rules(&self) -> Result<Value> {
        self.api_get("/api/v1/rules", &[])
    }

    /// `/api/v1/alerts` data (`{"alerts":[...]}`).
    pub fn alerts(&self) -> Result<Value> {
        self.api_get("/api/v1/alerts", &[])
    }

    /// `POST /-/reload` (needs `enable_lifecycle`).
    pub fn reload(&self) -> Result<()> {
        let url = format!("{}/-/reload", self.url());
        let r = self.client.post(&url).send()?;
        anyhow::ensure!(r.status().is_success(), "reload: {}", r.status());
        Ok(())
    }
}

fn parse_query_data(data: &Value) -> Result<Vec<Sample>> {
    let parse_val = |v: &Value| -> Result<f64> {
        let s = v[1].as_str().context("sample value not a string")?;
        s.parse::<f64>()
            .with_context(|| format!("bad sample value {s:?}"))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .context("vector result not an array")?
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Sample {
                    labels,
                    value: parse_val(&r["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: parse_val(&data["result"])?,
        }]),
        other => bail!("unsupported resultType {other:?}: {data}"),
    }
}

fn run_promtool(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let bin = crate::bins::promtool()?;
    // Output goes to a temp file so a chatty promtool can never block on a pipe.
    let out_file = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(out_file.reopen()?)
        .stderr(out_file.reopen()?)
        .spawn()
        .with_context(|| format!("spawn {} {args:?}", bin.display()))?;
    let pipe = child.stdin.take();
    let mut guard = ChildGuard::new("promtool", child);
    if let (Some(mut pipe), Some(text)) = (pipe, stdin) {
        pipe.write_all(text.as_bytes())
            .context("write promtool stdin")?;
    }
    let status = guard
        .wait_timeout(Duration::from_secs(30))?
        .with_context(|| format!("promtool {args:?} timed out"))?;
    let out = crate::process::read_lossy(out_file.path());
    if !status.success() {
        bail!("promtool {args:?} failed ({status}):\n{out}");
    }
    Ok(out)
}

/// `promtool check metrics` on `text` (stdin). Errors with promtool's output
/// if it reports lint problems or exits non-zero.
pub fn promtool_check_metrics(text: &str) -> Result<String> {
    let out = run_promtool(&["check", "metrics"], Some(text))?;
    if !out.trim().is_empty() {
        bail!("promtool check metrics reported problems:\n{out}");
    }
    Ok(out)
}

/// `promtool check rules <file>`.
pub fn promtool_check_rules(path: &Path) -> Result<String> {
    run_promtool(&["check", "rules", &path.to_string_lossy()], None)
}

/// `promtool check config <file>`.
pub fn promtool_check_config(path: &Path) -> Result<String> {
    run_promtool(&["check", "config", &path.to_string_lossy()], None)
}

/// `promtool test rules <file>` (rule unit tests).
pub fn promtool_test_rules(path: &Path) -> Result<String> {
    run_promtool(&["test", "rules", &path.to_string_lossy()], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vector_and_scalar() -> Result<()> {
        let v: Value = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1.5,"1"]},{"metric":{},"value":[1.5,"+Inf"]}]}"#,
        )?;
        let s = parse_query_data(&v)?;
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("job"), Some("x"));
        assert_eq!(s[0].value, 1.0);
        assert!(s[1].value.is_infinite());
        let v: Value = serde_json::from_str(r#"{"resultType":"scalar","result":[1.5,"NaN"]}"#)?;
        assert!(parse_query_data(&v)?[0].value.is_nan());
        Ok(())
    }
}
