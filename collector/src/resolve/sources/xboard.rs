//! The Xboard panel's own node list as a registry source (`xboard:` in the config).
//!
//! Route, auth and shape as in Xboard's source (github.com/cedar2025/Xboard, read at
//! `ee2c12e`, 2026-05-03): `app/Http/Routes/V2/AdminRoute.php` puts the admin API under
//! `/api/v2/<secure_path>/` (`secure_path` is the admin setting of that name, by default
//! `frontend_admin_path` or the CRC32 of `APP_KEY`), `server/manage/getNodes` is
//! `ManageController::getNodes`, and `app/Http/Middleware/Admin.php` lets through a Laravel
//! Sanctum token of an admin user, sent as `Authorization: Bearer <token>` (the `auth_data`
//! the panel's login returns is exactly that header value). Anything else gets
//! `403 {"message":"Unauthorized"}`. A success is Xboard's `ApiResponse` envelope:
//!
//! ```json
//! {"status":"success","message":"…","data":[
//!   {"id":1,"type":"vless","name":"jp-01","host":"203.0.113.11","port":"443",
//!    "enabled":true,"machine_id":null,"parent_id":null,"group_ids":["1"],"tags":[],…}],
//!  "error":null}
//! ```
//!
//! Supported: Xboard from the rewrite of 2025-01-21 ("new xboard", `0f43fff`: V2 admin routes
//! with Sanctum) to `ee2c12e`. `enabled` exists since 2026-04-17 (`e297b5f`, "machine mode");
//! when absent every node counts as enabled. Older Xboard/V2Board (`/api/v1/<secure_path>/…`
//! with encrypted `auth_data`) is not supported.
//!
//! Mapping: `id` → `node_id`; `name` → node name (trimmed; empty, over 128 bytes or with
//! control characters → `xboard-<id>`; a name used by several panel nodes is kept by the
//! smallest id, the others become `<name>-<id>`); `type` → label `node_type`. `host` is the
//! address the VPS connects *from* only when it is the VPS's own address: an IP literal is
//! used as is, a host name is resolved (every A/AAAA address) on every refresh; a name that no
//! longer resolves keeps its last resolved addresses, one that never resolved leaves the node
//! without addresses (listed, never seen; logged and counted as skipped). Nodes with
//! `enabled: false` are left out. Hosts behind a CDN or a relay resolve to addresses the VPS
//! does not connect from: name those nodes in the node file instead (it takes precedence).
//!
//! The admin token is read from `token_file` or the environment variable `token_env` on every
//! refresh (rotation needs no restart); it is sent as a sensitive header and never logged, and
//! the secure path never appears in logs or errors either.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use super::super::reload::RegistryHandle;
use super::super::{NodeSpec, MAX_NODE_NAME};
use super::{SourceId, SourceList, SourceUpdate};

/// `xboard:` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct XboardConfig {
    /// The panel's base URL, `http(s)://host[:port]` (a path prefix is kept). Required.
    pub url: String,
    /// The admin secure path (Xboard's `secure_path` setting). Required; never logged.
    pub secure_path: String,
    /// File holding the admin token (`Bearer …` as login's `auth_data`, or the bare Sanctum
    /// token). Exactly one of `token_file` and `token_env`.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the admin token. Exactly one of `token_file` and
    /// `token_env`.
    pub token_env: Option<String>,
    /// Seconds between refreshes (panel and DNS). Default 60, minimum 1.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// HTTP request and DNS timeout, seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Largest accepted response, bytes. Default 67108864 (64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_refresh() -> u64 {
    60
}

fn default_timeout() -> u64 {
    10
}

fn default_max_bytes() -> u64 {
    64 << 20
}

/// Why an Xboard refresh failed; the source's last good list stays in force. No variant
/// carries the token or the secure path.
#[derive(Debug, Error)]
pub enum XboardError {
    /// Bad `xboard:` settings.
    #[error("xboard: {0}")]
    Config(String),
    /// The token file or variable cannot be read or is empty.
    #[error("xboard: admin token: {0}")]
    Token(String),
    /// Connection, timeout or protocol error.
    #[error("xboard GET {url}: {message}")]
    Http {
        /// The URL with the secure path replaced by `…`.
        url: String,
        /// Cause (without the URL).
        message: String,
    },
    /// 401/403: the token is wrong, expired or not an admin's.
    #[error("xboard GET {url}: HTTP {status}: the admin token was refused")]
    Unauthorized {
        /// Redacted URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Any other non-2xx status (a wrong secure path gives 404).
    #[error("xboard GET {url}: HTTP status {status}")]
    Status {
        /// Redacted URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Larger than `max_bytes`.
    #[error("xboard GET {url}: response larger than {limit} bytes")]
    TooLarge {
        /// Redacted URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// Not Xboard's getNodes JSON.
    #[error("xboard GET {url}: not a getNodes response: {message}")]
    Json {
        /// Redacted URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// Xboard's `ApiResponse` envelope.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    data: Option<Vec<PanelNode>>,
}

/// The fields of a `v2_server` row vpslens reads (the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct PanelNode {
    /// Xboard node id: the `node_id` XrayR/V2bX send.
    pub id: u32,
    /// Protocol (`vless`, `vmess`, …).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Address clients connect to (IP or host name).
    #[serde(default)]
    pub host: Option<String>,
    /// `false`: switched off in the panel (absent before 2026-04).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Parses a getNodes response body.
///
/// # Errors
/// [`XboardError::Json`] when it is not the envelope with `status: success` and a `data`
/// list of nodes with numeric `id`s.
pub fn parse(bytes: &[u8], url: &str) -> Result<Vec<PanelNode>, XboardError> {
    let json = |message: String| XboardError::Json {
        url: url.to_owned(),
        message,
    };
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| json(e.to_string()))?;
    if env.status.as_deref() != Some("success") {
        return Err(json(format!("status {:?}", env.status)));
    }
    env.data.ok_or_else(|| json("no data list".into()))
}

fn usable_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NODE_NAME && !n.chars().any(char::is_control)
}

/// Registry nodes from panel nodes, with `resolved` host → addresses (hosts missing from it
/// give nodes without addresses, counted as skipped). Disabled nodes are left out.
pub fn to_nodes(panel: &[PanelNode], resolved: &HashMap<String, Vec<IpAddr>>) -> SourceList {
    let mut enabled: Vec<&PanelNode> = panel.iter().filter(|n| n.enabled != Some(false)).collect();
    enabled.sort_by_key(|n| n.id);
    let mut taken: BTreeMap<String, u32> = BTreeMap::new();
    let mut nodes = Vec::with_capacity(enabled.len());
    let mut skipped = 0;
    for n in enabled {
        let base = n
            .name
            .as_deref()
            .map(str::trim)
            .filter(|s| usable_name(s))
            .map_or_else(|| format!("xboard-{}", n.id), str::to_owned);
        let mut name = base.clone();
        if taken.contains_key(&name) {
            name = format!("{base}-{}", n.id);
            if !usable_name(&name) || taken.contains_key(&name) {
                name = format!("xboard-{}", n.id);
            }
        }
        taken.insert(name.clone(), n.id);
        let host = n.host.as_deref().map(host_key).unwrap_or_default();
        let addresses: Vec<String> = match resolved.get(&host) {
            Some(a) if !a.is_empty() => a.iter().map(ToString::to_string).collect(),
            _ => {
                skipped += 1;
                Vec::new()
            }
        };
        let mut labels = BTreeMap::new();
        if let Some(t) = n.kind.as_deref().filter(|t| !t.is_empty() && t.len() <= 32) {
            labels.insert("node_type".to_owned(), t.to_owned());
        }
        nodes.push(NodeSpec {
            name,
            addresses,
            node_id: Some(n.id),
            labels,
        });
    }
    SourceList { nodes, skipped }
}

/// A host as written in the panel, without brackets or surrounding spaces.
fn host_key(h: &str) -> String {
    let h = h.trim();
    h.strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h)
        .to_ascii_lowercase()
}

/// The error and its causes without the URL.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Where the token comes from.
#[derive(Debug, Clone)]
enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// Polls the panel and feeds a [`RegistryHandle`] as [`SourceId::XBOARD`].
pub struct XboardPoller {
    url: reqwest::Url,
    label: String,
    token: TokenSource,
    client: reqwest::Client,
    refresh: Duration,
    timeout: Duration,
    max_bytes: u64,
    /// Last addresses each host resolved to.
    dns: HashMap<String, Vec<IpAddr>>,
    /// Hash of the last accepted node list.
    hash: Option<u64>,
}

impl std::fmt::Debug for XboardPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XboardPoller")
            .field("url", &self.label)
            .finish_non_exhaustive()
    }
}

impl XboardPoller {
    /// A poller for `cfg`.
    ///
    /// # Errors
    /// [`XboardError::Config`]: the URL does not parse or is not http(s), the secure path is
    /// empty, not exactly one token source is set; [`XboardError::Http`] if the client cannot
    /// be built.
    pub fn new(cfg: &XboardConfig) -> Result<XboardPoller, XboardError> {
        let config = |m: &str| XboardError::Config(m.to_owned());
        let mut base = reqwest::Url::parse(&cfg.url).map_err(|_| config("url does not parse"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config("url must be http:// or https://"));
        }
        if base.query().is_some() || !base.username().is_empty() || base.password().is_some() {
            return Err(config("url must not carry a query or credentials"));
        }
        let secure = cfg.secure_path.trim_matches('/');
        if secure.is_empty() || secure.contains(['/', '?', '#']) {
            return Err(config("secure_path must be one non-empty path segment"));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let url = base
            .join(&format!("api/v2/{secure}/server/manage/getNodes"))
            .map_err(|_| config("url and secure_path do not form a URL"))?;
        let label = format!("{base}api/v2/…/server/manage/getNodes");
        let token = match (&cfg.token_file, &cfg.token_env) {
            (Some(f), None) => TokenSource::File(f.clone()),
            (None, Some(v)) if !v.is_empty() => TokenSource::Env(v.clone()),
            _ => return Err(config("set exactly one of `token_file` and `token_env`")),
        };
        let timeout = Duration::from_secs(cfg.timeout_seconds.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("vpslens/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| XboardError::Http {
                url: label.clone(),
                message: error_chain(e),
            })?;
        Ok(XboardPoller {
            url,
            label,
            token,
            client,
            refresh: Duration::from_secs(cfg.refresh_seconds.max(1)),
            timeout,
            max_bytes: cfg.max_bytes,
            dns: HashMap::new(),
            hash: None,
        })
    }

    /// This source's id.
    pub fn id(&self) -> SourceId {
        SourceId::XBOARD
    }

    /// The `Authorization` header value (`Bearer <token>`), marked sensitive.
    fn authorization(&self) -> Result<reqwest::header::HeaderValue, XboardError> {
        let raw = match &self.token {
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| XboardError::Token(format!("cannot read {}: {e}", p.display())))?,
            TokenSource::Env(v) => std::env::var(v)
                .map_err(|_| XboardError::Token(format!("environment variable {v} is not set")))?,
        };
        let t = raw.trim();
        let t = t.strip_prefix("Bearer ").map_or(t, str::trim);
        if t.is_empty() {
            return Err(XboardError::Token("empty".into()));
        }
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| XboardError::Token("not a valid header value".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }

    async fn fetch(&self) -> Result<Vec<PanelNode>, XboardError> {
        let http = |e: reqwest::Error| XboardError::Http {
            url: self.label.clone(),
            message: error_chain(e),
        };
        let mut resp = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::AUTHORIZATION, self.authorization()?)
            .send()
            .await
            .map_err(http)?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(XboardError::Unauthorized {
                url: self.label.clone(),
                status,
            });
        }
        if !resp.status().is_success() {
            return Err(XboardError::Status {
                url: self.label.clone(),
                status,
            });
        }
        let too_large = || XboardError::TooLarge {
            url: self.label.clone(),
            limit: self.max_bytes,
        };
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        parse(&bytes, &self.label)
    }

    /// Resolves every host of `panel` (IP literals as they are), updating the per-host cache:
    /// a host that fails keeps its last addresses.
    async fn resolve(&mut self, panel: &[PanelNode]) {
        let mut hosts: Vec<String> = panel
            .iter()
            .filter_map(|n| n.host.as_deref().map(host_key))
            .filter(|h| !h.is_empty())
            .collect();
        hosts.sort();
        hosts.dedup();
        self.dns.retain(|h, _| hosts.binary_search(h).is_ok());
        for h in hosts {
            if let Ok(ip) = h.parse::<IpAddr>() {
                self.dns.insert(h, vec![ip.to_canonical()]);
                continue;
            }
            let lookup = tokio::net::lookup_host((h.clone(), 0));
            match tokio::time::timeout(self.timeout, lookup).await {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip().to_canonical()).collect();
                    ips.sort();
                    ips.dedup();
                    if ips.is_empty() {
                        tracing::warn!(host = %h, "xboard node host resolved to no address");
                    } else {
                        self.dns.insert(h, ips);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(host = %h, error = %e, kept = self.dns.contains_key(&h),
                        "xboard node host does not resolve; keeping its last addresses if any");
                }
                Err(_) => {
                    tracing::warn!(host = %h, kept = self.dns.contains_key(&h),
                        "xboard node host lookup timed out; keeping its last addresses if any");
                }
            }
        }
    }

    /// One refresh: fetch the panel's nodes, resolve their hosts, apply to `handle` (an
    /// identical list counts as unchanged).
    ///
    /// # Errors
    /// The fetch or parse error (already counted and logged through `handle`).
    pub async fn poll_and_apply(&mut self, handle: &RegistryHandle) -> Result<(), XboardError> {
        let panel = match self.fetch().await {
            Ok(p) => p,
            Err(e) => {
                handle.record_failure(SourceId::XBOARD, &e);
                return Err(e);
            }
        };
        self.resolve(&panel).await;
        let list = to_nodes(&panel, &self.dns);
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{:?}", list.nodes).hash(&mut h);
            list.skipped.hash(&mut h);
            h.finish()
        };
        if self.hash == Some(hash) {
            let _ = handle.apply(SourceId::XBOARD, SourceUpdate::Unchanged);
            return Ok(());
        }
        if handle
            .apply(SourceId::XBOARD, SourceUpdate::Replace(list))
            .is_ok()
        {
            self.hash = Some(hash);
        }
        Ok(())
    }

    /// Refreshes forever, every `refresh_seconds` (the first immediately).
    pub async fn run(mut self, handle: Arc<RegistryHandle>) {
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.poll_and_apply(&handle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> XboardConfig {
        XboardConfig {
            url: "https://panel.example/".into(),
            secure_path: "s3cr3t".into(),
            token_file: None,
            token_env: Some("X".into()),
            refresh_seconds: 60,
            timeout_seconds: 10,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn url_is_the_v2_admin_route_and_its_label_hides_the_secure_path() {
        let p = XboardPoller::new(&cfg()).unwrap();
        assert_eq!(
            p.url.as_str(),
            "https://panel.example/api/v2/s3cr3t/server/manage/getNodes"
        );
        assert!(!p.label.contains("s3cr3t"), "{}", p.label);
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let mut c = cfg();
        c.token_file = Some("/t".into());
        assert!(XboardPoller::new(&c).is_err(), "two token sources");
        let mut c = cfg();
        c.secure_path = "a/b".into();
        assert!(XboardPoller::new(&c).is_err());
    }

    #[test]
    fn panel_nodes_map_to_registry_nodes() {
        let doc = br#"{"status":"success","message":"ok","error":null,"data":[
          {"id":3,"type":"vless","name":"jp-01","host":"203.0.113.11","port":"443","enabled":true},
          {"id":1,"type":"vmess","name":"jp-01","host":"jp.example","port":443},
          {"id":2,"type":"trojan","name":" ","host":"[2001:db8::1]","port":443},
          {"id":4,"type":"vless","name":"off","host":"203.0.113.14","enabled":false},
          {"id":5,"type":"vless","name":"nowhere","host":"nowhere.invalid"}
        ]}"#;
        let panel = parse(doc, "u").unwrap();
        let mut dns = HashMap::new();
        dns.insert(
            "203.0.113.11".to_owned(),
            vec!["203.0.113.11".parse().unwrap()],
        );
        dns.insert(
            "jp.example".to_owned(),
            vec![
                "198.51.100.1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            ],
        );
        dns.insert(
            "2001:db8::1".to_owned(),
            vec!["2001:db8::1".parse().unwrap()],
        );
        let l = to_nodes(&panel, &dns);
        let got: Vec<(&str, Option<u32>, Vec<&str>)> = l
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.node_id,
                    n.addresses.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("jp-01", Some(1), vec!["198.51.100.1", "2001:db8::2"]),
                ("xboard-2", Some(2), vec!["2001:db8::1"]),
                ("jp-01-3", Some(3), vec!["203.0.113.11"]),
                ("nowhere", Some(5), vec![]),
            ]
        );
        assert_eq!(l.skipped, 1, "the host that never resolved");
        assert_eq!(l.nodes[0].labels["node_type"], "vmess");
        crate::resolve::Registry::build(l.nodes).unwrap();
    }

    #[test]
    fn a_host_that_stops_resolving_keeps_its_last_addresses() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut p = XboardPoller::new(&cfg()).unwrap();
        let node = |id: u32, host: &str| PanelNode {
            id,
            kind: None,
            name: Some(format!("n{id}")),
            host: Some(host.into()),
            enabled: None,
        };
        // Resolved once (as if DNS had answered), then the name stops resolving.
        p.dns.insert(
            "was-here.invalid".into(),
            vec!["192.0.2.9".parse().unwrap()],
        );
        p.dns
            .insert("dropped.invalid".into(), vec!["192.0.2.8".parse().unwrap()]);
        let panel = [
            node(1, "Was-Here.invalid"),
            node(2, "localhost"),
            node(3, "[2001:DB8::1]"),
        ];
        rt.block_on(p.resolve(&panel));
        assert_eq!(
            p.dns["was-here.invalid"],
            ["192.0.2.9".parse::<IpAddr>().unwrap()]
        );
        assert!(
            !p.dns.contains_key("dropped.invalid"),
            "hosts no node uses are forgotten"
        );
        assert!(p.dns["localhost"].iter().all(IpAddr::is_loopback));
        assert_eq!(
            p.dns["2001:db8::1"],
            ["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
        let l = to_nodes(&panel, &p.dns);
        assert_eq!(l.nodes[0].addresses, ["192.0.2.9"]);
        assert_eq!(l.skipped, 0);
    }

    #[test]
    fn non_success_envelopes_are_errors() {
        for doc in [
            &br#"{"message":"Unauthorized"}"#[..],
            br#"{"status":"fail","message":"x","data":null}"#,
            br#"{"status":"success","data":[{"id":"x"}]}"#,
            b"<html>",
        ] {
            assert!(parse(doc, "u").is_err(), "{}", String::from_utf8_lossy(doc));
        }
    }
}
