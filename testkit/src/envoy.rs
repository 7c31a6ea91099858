//! A real Envoy configured like an Istio ingress gateway behind an AWS NLB.
//!
//! * listener on `127.0.0.1:<ephemeral>` with the
//!   `envoy.filters.listener.proxy_protocol` listener filter (what Istio's
//!   `gatewayTopology.proxyProtocol: {}` adds);
//! * `http_connection_manager` with `use_remote_address: true` and
//!   `xff_num_trusted_hops` (default 0), so `%DOWNSTREAM_REMOTE_ADDRESS%` is the
//!   PROXY-header source and Envoy appends it to `X-Forwarded-For`;
//! * one route [`ROUTE_NAME`] for `/` to the cluster [`CLUSTER_NAME`]
//!   (the stub Xboard upstream);
//! * a file access log in Istio's default JSON or TEXT format.
//!
//! Ports are chosen by the kernel (port 0) and discovered through the admin
//! API, so there is no free-port race. The process is killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::process::{read_lossy, tail, wait_for_value, ManagedServer};

/// The upstream cluster name, exactly as Istio names it.
pub const CLUSTER_NAME: &str = "outbound|80||xboard.airport-prod.svc.cluster.local";
/// The route name (`%ROUTE_NAME%`).
pub const ROUTE_NAME: &str = "xboard-route";
/// The HCM stat prefix (as on an Istio gateway's 8443 listener).
pub const STAT_PREFIX: &str = "outbound_0.0.0.0_8443";

/// Istio's default TEXT access-log format (`meshConfig.accessLogFormat` unset).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON access-log fields (`accessLogEncoding: JSON`).
pub const ISTIO_JSON_FIELDS: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// Access-log encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Istio's default JSON (`json_format`, typed values).
    #[default]
    Json,
    /// Istio's default TEXT format ([`ISTIO_TEXT_FORMAT`]).
    Text,
}

/// Options for [`EnvoyGateway::start`].
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Where the `outbound|80||xboard...` cluster points (the stub upstream).
    pub upstream: SocketAddr,
    /// Access-log encoding.
    pub log_format: LogFormat,
    /// HCM `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// Add the PROXY protocol listener filter (default true).
    pub proxy_protocol: bool,
    /// `allow_requests_without_proxy_protocol` on that filter (default false).
    pub allow_requests_without_proxy_protocol: bool,
    /// Access-log path (default `<tempdir>/access.log`).
    pub access_log_path: Option<PathBuf>,
    /// Envoy binary (default: [`crate::bins::envoy`]).
    pub envoy_bin: Option<PathBuf>,
    /// `--file-flush-interval-msec` (default 200).
    pub file_flush_interval_ms: u32,
    /// Route timeout (default 15 s, Envoy's default).
    pub route_timeout: Duration,
    /// Startup timeout (default 30 s).
    pub startup_timeout: Duration,
    /// JSON access-log fields replacing Istio's defaults (with [`LogFormat::Json`]), e.g. the
    /// `logFormat.labels` of a mesh config. `%REQ_WITHOUT_QUERY(…)%` works (the formatter
    /// extension Istio adds for it is configured).
    pub json_fields: Option<Vec<(String, String)>>,
}

impl EnvoyOptions {
    /// Defaults (JSON log, PROXY protocol required, 0 trusted hops) for `upstream`.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            log_format: LogFormat::Json,
            xff_num_trusted_hops: 0,
            proxy_protocol: true,
            allow_requests_without_proxy_protocol: false,
            access_log_path: None,
            envoy_bin: None,
            file_flush_interval_ms: 200,
            route_timeout: Duration::from_secs(15),
            startup_timeout: Duration::from_secs(30),
            json_fields: None,
        }
    }

    /// Sets the access-log format.
    pub fn log_format(mut self, f: LogFormat) -> Self {
        self.log_format = f;
        self
    }

    /// Sets `xff_num_trusted_hops`.
    pub fn xff_num_trusted_hops(mut self, n: u32) -> Self {
        self.xff_num_trusted_hops = n;
        self
    }

    /// Sets the access-log path.
    pub fn access_log_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.access_log_path = Some(p.into());
        self
    }

    /// Renders the bootstrap config (JSON, which is also valid YAML).
    pub fn bootstrap(&self, access_log: &Path) -> Value {
        let log_format = match self.log_format {
            LogFormat::Json => {
                let fields: serde_json::Map<String, Value> = match &self.json_fields {
                    Some(f) => f
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                    None => ISTIO_JSON_FIELDS
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                        .collect(),
                };
                json!({
                    "json_format": fields,
                    "formatters": [{
                        "name": "envoy.formatter.req_without_query",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
                        }
                    }]
                })
            }
            LogFormat::Text => {
                json!({ "text_format_source": { "inline_string": ISTIO_TEXT_FORMAT } })
            }
        };
        let mut listener_filters = Vec::new();
        if self.proxy_protocol {
            listener_filters.push(json!({
                "name": "envoy.filters.listener.proxy_protocol",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
                    "allow_requests_without_proxy_protocol": self.allow_requests_without_proxy_protocol
                }
            }));
        }
        let timeout = format!("{}s", self.route_timeout.as_secs_f64());
        json!({
            "node": { "id": "router~127.0.0.1~istio-ingressgateway-test.istio-system~istio-system.svc.cluster.local", "cluster": "istio-ingressgateway" },
            "admin": {
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } }
            },
            "static_resources": {
                "listeners": [{
                    "name": "0.0.0.0_8443",
                    "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
                    "listener_filters": listener_filters,
                    "filter_chains": [{
                        "filters": [{
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                "stat_prefix": STAT_PREFIX,
                                "use_remote_address": true,
                                "xff_num_trusted_hops": self.xff_num_trusted_hops,
                                "access_log": [{
                                    "name": "envoy.access_loggers.file",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                        "path": access_log.to_string_lossy(),
                                        "log_format": log_format
                                    }
                                }],
                                "route_config": {
                                    "name": "http.8443",
                                    "virtual_hosts": [{
                                        "name": "panel.example.com:443",
                                        "domains": ["*"],
                                        "routes": [{
                                            "name": ROUTE_NAME,
                                            "match": { "prefix": "/" },
                                            "route": { "cluster": CLUSTER_NAME, "timeout": timeout }
                                        }]
                                    }]
                                },
                                "http_filters": [{
                                    "name": "envoy.filters.http.router",
                                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                                }]
                            }
                        }]
                    }]
                }],
                "clusters": [{
                    "name": CLUSTER_NAME,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": CLUSTER_NAME,
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                            "address": self.upstream.ip().to_string(),
                            "port_value": self.upstream.port()
                        } } } }] }]
                    }
                }]
            }
        })
    }
}

/// A running Envoy; killed on drop (its temp dir is removed too).
#[derive(Debug)]
pub struct EnvoyGateway {
    child: ManagedServer,
    dir: TempDir,
    listener: SocketAddr,
    admin: SocketAddr,
    access_log: PathBuf,
    envoy_log: PathBuf,
    format: LogFormat,
}

impl EnvoyGateway {
    /// Writes the bootstrap into a temp dir, spawns Envoy and waits until it
    /// is ready (`/ready` == `LIVE`) and its listener address is known.
    pub fn start(opts: EnvoyOptions) -> Result<Self> {
        anyhow::ensure!(
            opts.upstream.ip().is_loopback(),
            "upstream must be loopback, got {}",
            opts.upstream
        );
        let bin = match &opts.envoy_bin {
            Some(b) => b.clone(),
            None => crate::bins::envoy()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("vpslens-envoy-")
            .tempdir()
            .context("create envoy temp dir")?;
        let access_log = opts
            .access_log_path
            .clone()
            .unwrap_or_else(|| dir.path().join("access.log"));
        let cfg_path = dir.path().join("envoy.yaml");
        let cfg = serde_json::to_string_pretty(&opts.bootstrap(&access_log))?;
        std::fs::write(&cfg_path, cfg).context("write envoy bootstrap")?;
        let envoy_log = dir.path().join("envoy.log");
        let admin_path = dir.path().join("admin.addr");

        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&cfg_path)
            .args([
                "--disable-hot-restart",
                "-l",
                "warning",
                "--concurrency",
                "1",
            ])
            .arg("--log-path")
            .arg(&envoy_log)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--file-flush-interval-msec")
            .arg(opts.file_flush_interval_ms.to_string())
            .args(["--drain-time-s", "1", "--parent-shutdown-time-s", "2"]);
        let mut child = ManagedServer::spawn("envoy", &mut cmd, dir.path(), "")?;
        let admin: SocketAddr = child
            .wait_ready("envoy admin address file", opts.startup_timeout, || {
                let s = read_lossy(&admin_path);
                let s = s.trim();
                if s.is_empty() {
                    return Ok(None);
                }
                Ok(Some(
                    s.parse()
                        .with_context(|| format!("bad admin address {s:?}"))?,
                ))
            })
            .with_context(|| {
                format!(
                    "envoy ({}) failed to start\n--- envoy.log ---\n{}",
                    bin.display(),
                    tail(&envoy_log, 30)
                )
            })?;

        let mut gw = Self {
            child,
            listener: admin, // placeholder until discovered below
            admin,
            access_log,
            envoy_log,
            format: opts.log_format,
            dir,
        };
        gw.wait_ready(opts.startup_timeout).with_context(|| {
            format!(
                "envoy not ready\n--- envoy.log ---\n{}",
                tail(&gw.envoy_log, 30)
            )
        })?;
        gw.listener = gw.discover_listener().with_context(|| {
            format!(
                "envoy listener address\n--- envoy.log ---\n{}",
                tail(&gw.envoy_log, 30)
            )
        })?;
        Ok(gw)
    }

    fn discover_listener(&self) -> Result<SocketAddr> {
        let (code, body) = self.admin_get("/listeners?format=json")?;
        anyhow::ensure!(code == 200, "/listeners returned {code}: {body}");
        let v: Value = serde_json::from_str(&body)?;
        let sa = &v["listener_statuses"][0]["local_address"]["socket_address"];
        let ip = sa["address"].as_str().context("no listener address")?;
        let port = sa["port_value"].as_u64().context("no listener port")?;
        let port = u16::try_from(port)?;
        anyhow::ensure!(port != 0, "listener port still 0");
        Ok(SocketAddr::new(ip.parse()?, port))
    }

    /// The gateway listener (send PROXY-protocol traffic here).
    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    /// The admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The configured access-log path.
    pub fn access_log_path(&self) -> &Path {
        &self.access_log
    }

    /// Envoy's own log (`--log-path`).
    pub fn envoy_log_path(&self) -> &Path {
        &self.envoy_log
    }

    /// The temp dir holding config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The access-log format in use.
    pub fn log_format(&self) -> LogFormat {
        self.format
    }

    /// Envoy's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// `GET` on the admin API.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        crate::http::get(&format!("http://{}{}", self.admin, path))
    }

    /// `POST` on the admin API.
    pub fn admin_post(&self, path: &str) -> Result<(u16, String)> {
        crate::http::post(&format!("http://{}{}", self.admin, path))
    }

    /// Waits until `GET /ready` answers `LIVE`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let admin = self.admin;
        self.child.wait_ready("envoy /ready == LIVE", timeout, || {
            let (code, body) = crate::http::get(&format!("http://{admin}/ready"))?;
            Ok((code == 200 && body.trim() == "LIVE").then_some(()))
        })
    }

    /// `POST /reopen_logs`: Envoy reopens the access log at its configured
    /// path (after a test renamed it).
    pub fn reopen_logs(&self) -> Result<()> {
        let (code, body) = self.admin_post("/reopen_logs")?;
        anyhow::ensure!(code == 200, "/reopen_logs returned {code}: {body}");
        Ok(())
    }

    /// `GET /stats` (text), optionally filtered by a regex.
    pub fn stats(&self, filter: Option<&str>) -> Result<String> {
        let url = format!("http://{}/stats", self.admin);
        let query: &[(&str, &str)] = match filter {
            Some(f) => &[("filter", f)],
            None => &[],
        };
        let (code, body) = crate::http::get_with_query(&url, query)?;
        anyhow::ensure!(code == 200, "/stats returned {code}");
        Ok(body)
    }

    /// Current access-log lines (empty if the file does not exist yet).
    pub fn access_log_lines(&self) -> Vec<String> {
        read_lossy(&self.access_log)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the access log holds at least `n` lines (Envoy flushes file
    /// logs every `file_flush_interval_ms`) and returns all lines.
    pub fn wait_for_log_lines(&self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let mut last = 0usize;
        wait_for_value(
            &format!("{n} access-log lines in {}", self.access_log.display()),
            timeout,
            Duration::from_millis(50),
            || {
                let lines = self.access_log_lines();
                last = lines.len();
                Ok((lines.len() >= n).then_some(lines))
            },
        )
        .with_context(|| format!("only {last} lines present"))
    }

    /// Like [`Self::wait_for_log_lines`], parsing each line as JSON (JSON format only).
    pub fn wait_for_json_records(&self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        if self.format != LogFormat::Json {
            bail!("access log is not JSON");
        }
        self.wait_for_log_lines(n, timeout)?
            .iter()
            .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line {l:?}")))
            .collect()
    }
}
