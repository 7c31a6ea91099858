//! Prometheus `file_sd` JSON as a registry source (`file_sd:` in the config).
//!
//! Format (Prometheus `<file_sd_config>`,
//! <https://prometheus.io/docs/prometheus/latest/configuration/configuration/#file_sd_config>):
//!
//! ```json
//! [{"targets": ["203.0.113.11:9100", "[2001:db8::1]:9100"],
//!   "labels": {"name": "jp-01", "node_id": "1", "app": "xrayr", "region": "jp"}}]
//! ```
//!
//! Read from a local file (re-read every `refresh_seconds`, applied only when the bytes changed)
//! or polled from an HTTP(S) URL with `If-None-Match` (a `304 Not Modified` keeps the current
//! list; Prometheus' own `http_sd` format is the same JSON).
//!
//! Mapping (each key configurable under `labels:`): the `name` label is the node name, `node_id`
//! its Xboard id (decimal), `app`/`region`/`provider` become those node labels. Labels not
//! mapped are kept when the registry accepts them as label keys (Prometheus label names, not
//! `__*`, not `node`/`node_id`) and dropped otherwise. A target group without a name (or with
//! an unusable one) yields **no** node: deriving a name from an address would create `node`
//! label values nobody registered; it is skipped, logged and counted in
//! `vpslens_registry_source_skipped_entries{source="file_sd"}`. Targets may be `ip`, `ip:port`,
//! `[v6]:port` or a CIDR; the port is ignored; other targets (host names) are skipped likewise.
//! Groups naming the same node are one node: their addresses are joined, labels and `node_id`
//! come from the first group.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use super::super::reload::RegistryHandle;
use super::super::{parse_net, NodeSpec, MAX_NODE_NAME};
use super::{usable_labels, SourceId, SourceList, SourceUpdate};

/// Default poll period, seconds.
pub const DEFAULT_REFRESH_SECONDS: u64 = 30;
/// Default HTTP request timeout (connect to end of body), seconds.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// Default largest accepted document, bytes (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// One `file_sd:` entry. Exactly one of `path` and `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSdConfig {
    /// Local `file_sd` JSON file. No default.
    pub path: Option<PathBuf>,
    /// `http://` or `https://` URL serving `file_sd` JSON (sent with `If-None-Match` after
    /// the first response with an `ETag`). Its query string is never logged. No default.
    pub url: Option<String>,
    /// Seconds between polls (file re-read or HTTP request). Default 30, minimum 1.
    pub refresh_seconds: u64,
    /// HTTP request timeout in seconds (connect to end of body). Default 10.
    pub timeout_seconds: u64,
    /// Largest accepted document in bytes; larger ones are a failed poll. Default 67108864
    /// (64 MiB).
    pub max_bytes: u64,
    /// Which `file_sd` label feeds which node field. Default: the same names.
    pub labels: LabelMap,
}

impl Default for FileSdConfig {
    /// The serde defaults of a `file_sd:` entry (the one source of them).
    fn default() -> Self {
        FileSdConfig {
            path: None,
            url: None,
            refresh_seconds: DEFAULT_REFRESH_SECONDS,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_bytes: DEFAULT_MAX_BYTES,
            labels: LabelMap::default(),
        }
    }
}

impl FileSdConfig {
    /// Checks the entry without building anything (config validation); returns the parsed URL
    /// for a `url:` entry.
    ///
    /// # Errors
    /// [`FileSdError::Config`] when not exactly one of `path`/`url` is set, the URL does not
    /// parse or is not http(s).
    pub fn validate(&self, index: u16) -> Result<Option<reqwest::Url>, FileSdError> {
        let config = |message: &str| FileSdError::Config {
            index,
            message: message.to_owned(),
        };
        if self.refresh_seconds == 0 {
            return Err(config("refresh_seconds must be >= 1"));
        }
        if self.timeout_seconds == 0 {
            return Err(config("timeout_seconds must be >= 1"));
        }
        match (&self.path, &self.url) {
            (Some(_), None) => Ok(None),
            (None, Some(u)) => {
                let url = reqwest::Url::parse(u).map_err(|_| config("url does not parse"))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(config("url must be http:// or https://"));
                }
                Ok(Some(url))
            }
            _ => Err(config("set exactly one of `path` and `url`")),
        }
    }
}

/// `file_sd` label → node field (`labels:` of a `file_sd:` entry). Each value is the name of
/// a `file_sd` label; defaults are the field names themselves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelMap {
    /// Label holding the node name (the `node` metric label). Default `name`.
    pub name: String,
    /// Label holding the Xboard node id (decimal). Default `node_id`.
    pub node_id: String,
    /// Label holding the node's `app`. Default `app`.
    pub app: String,
    /// Label holding the node's `region`. Default `region`.
    pub region: String,
    /// Label holding the node's `provider`. Default `provider`.
    pub provider: String,
}

impl Default for LabelMap {
    fn default() -> Self {
        LabelMap {
            name: "name".into(),
            node_id: "node_id".into(),
            app: "app".into(),
            region: "region".into(),
            provider: "provider".into(),
        }
    }
}

/// Why a `file_sd` poll failed. The source's last good list stays in force.
#[derive(Debug, Error)]
pub enum FileSdError {
    /// The entry sets neither or both of `path` and `url`, or the URL is not http(s).
    #[error("file_sd entry {index}: {message}")]
    Config {
        /// Position in `file_sd:`.
        index: u16,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read.
    #[error("cannot read file_sd {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Connection, timeout or protocol error (the message never contains the URL's query).
    #[error("file_sd GET {url}: {message}")]
    Http {
        /// The URL without query string or credentials.
        url: String,
        /// Cause.
        message: String,
    },
    /// The server answered with a status other than 2xx or 304.
    #[error("file_sd GET {url}: HTTP status {status}")]
    Status {
        /// The URL without query string or credentials.
        url: String,
        /// Status code.
        status: u16,
    },
    /// The document exceeds `max_bytes`.
    #[error("file_sd {origin}: document larger than {limit} bytes")]
    TooLarge {
        /// Path or redacted URL.
        origin: String,
        /// The limit.
        limit: u64,
    },
    /// Not a `file_sd` JSON document.
    #[error("file_sd {origin} is not valid file_sd JSON: {message}")]
    Json {
        /// Path or redacted URL.
        origin: String,
        /// serde_json's message (line/column).
        message: String,
    },
}

/// One target group of a `file_sd` document.
#[derive(Debug, Deserialize)]
struct TargetGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses a `file_sd` document into nodes with `map`. `origin` names it in errors and logs.
///
/// # Errors
/// [`FileSdError::Json`] when the bytes are not a JSON array of target groups.
pub fn parse(bytes: &[u8], map: &LabelMap, origin: &str) -> Result<SourceList, FileSdError> {
    let groups: Vec<TargetGroup> =
        serde_json::from_slice(bytes).map_err(|e| FileSdError::Json {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = 0u64;
    for (i, mut g) in groups.into_iter().enumerate() {
        let name = match g.labels.remove(&map.name) {
            Some(n) if valid_name(&n) => n,
            Some(_) => {
                tracing::warn!(origin, group = i, label = %map.name,
                    "file_sd target group skipped: unusable node name");
                skipped += 1;
                continue;
            }
            None => {
                tracing::warn!(origin, group = i, label = %map.name,
                    "file_sd target group skipped: no node-name label");
                skipped += 1;
                continue;
            }
        };
        let mut addresses = Vec::new();
        for t in &g.targets {
            match target_address(t) {
                Some(a) => addresses.push(a),
                None => {
                    tracing::warn!(origin, node = %name, target = %t,
                        "file_sd target skipped: not an IP, ip:port or CIDR");
                    skipped += 1;
                }
            }
        }
        let node_id = match g.labels.remove(&map.node_id) {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(id) => Some(id),
                Err(_) => {
                    tracing::warn!(origin, node = %name, value = %v,
                        "file_sd node_id label is not a decimal u32; ignored");
                    None
                }
            },
            None => None,
        };
        let mut labels = BTreeMap::new();
        for (field, source) in [
            ("app", &map.app),
            ("region", &map.region),
            ("provider", &map.provider),
        ] {
            if let Some(v) = g.labels.remove(source) {
                labels.insert(field.to_owned(), v);
            }
        }
        for (k, v) in g.labels {
            labels.entry(k).or_insert(v);
        }
        let dropped = usable_labels(&mut labels);
        if !dropped.is_empty() {
            tracing::debug!(origin, node = %name, ?dropped, "file_sd labels not usable as node labels");
        }
        match by_name.get(&name) {
            Some(&idx) => nodes[idx].addresses.extend(addresses),
            None => {
                by_name.insert(name.clone(), nodes.len());
                nodes.push(NodeSpec {
                    name,
                    addresses,
                    node_id,
                    labels,
                });
            }
        }
    }
    Ok(SourceList { nodes, skipped })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NODE_NAME && !n.chars().any(char::is_control)
}

/// The address part of a target: `ip`, `ip:port`, `[v6]:port`, `[v6]`, `v6`, or a CIDR.
/// Returns the canonical text accepted by the registry, or `None` for host names.
pub fn target_address(t: &str) -> Option<String> {
    let t = t.trim();
    let host = if let Some(rest) = t.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h)?
    } else if t.matches(':').count() == 1 {
        t.split_once(':').map(|(h, _)| h)?
    } else {
        t
    };
    parse_net(host).ok().map(|n| {
        if n.prefix_len() == n.max_prefix_len() {
            n.addr().to_string()
        } else {
            n.to_string()
        }
    })
}

/// A URL for logs: scheme, host, port and path only (no credentials, no query, no fragment).
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The error and its causes, joined by `: `, without the request URL (which may carry a
/// token in its query string).
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

enum Origin {
    File(PathBuf),
    Http {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

/// What a fetch produced, before the handle accepted it.
struct Fetched {
    bytes: Vec<u8>,
    etag: Option<String>,
}

/// Polls one `file_sd` entry and feeds a [`RegistryHandle`].
pub struct FileSdPoller {
    id: SourceId,
    origin: Origin,
    label: String,
    map: LabelMap,
    refresh: Duration,
    max_bytes: u64,
    /// ETag of the last accepted response.
    etag: Option<String>,
    /// Hash of the last accepted document (skip re-parsing identical bytes).
    hash: Option<u64>,
}

impl std::fmt::Debug for FileSdPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSdPoller")
            .field("id", &self.id)
            .field("origin", &self.label)
            .finish_non_exhaustive()
    }
}

impl FileSdPoller {
    /// A poller for the `index`-th `file_sd:` entry.
    ///
    /// # Errors
    /// [`FileSdError::Config`] when not exactly one of `path`/`url` is set, the URL does not
    /// parse or is not http(s); [`FileSdError::Http`] if the HTTP client cannot be built.
    pub fn new(index: u16, cfg: &FileSdConfig) -> Result<FileSdPoller, FileSdError> {
        let timeout = Duration::from_secs(cfg.timeout_seconds);
        let (origin, label) = match (&cfg.path, cfg.validate(index)?) {
            (Some(p), None) => (Origin::File(p.clone()), p.display().to_string()),
            (_, Some(url)) => {
                let label = redact_url(&url);
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .user_agent(concat!("vpslens/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| FileSdError::Http {
                        url: label.clone(),
                        message: error_chain(e),
                    })?;
                (Origin::Http { url, client }, label)
            }
            (None, None) => {
                return Err(FileSdError::Config {
                    index,
                    message: "set exactly one of `path` and `url`".into(),
                })
            }
        };
        Ok(FileSdPoller {
            id: SourceId::file_sd(index),
            origin,
            label,
            map: cfg.labels.clone(),
            refresh: Duration::from_secs(cfg.refresh_seconds),
            max_bytes: cfg.max_bytes,
            etag: None,
            hash: None,
        })
    }

    /// This poller's source id.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// One poll: fetch (with `If-None-Match` when an ETag is known), parse, apply to
    /// `handle`. The ETag and content hash are remembered only once `handle` accepted the
    /// list, so a rejected document is fetched and reported again on the next poll.
    ///
    /// # Errors
    /// The fetch or parse error (already counted and logged through `handle`). A list
    /// rejected by the handle is counted there too and returns `Ok`.
    pub async fn poll_and_apply(&mut self, handle: &RegistryHandle) -> Result<(), FileSdError> {
        let fetched = match self.fetch().await {
            Ok(f) => f,
            Err(e) => {
                handle.record_failure(self.id, &e);
                return Err(e);
            }
        };
        let Some(f) = fetched else {
            let _ = handle.apply(self.id, SourceUpdate::Unchanged);
            return Ok(());
        };
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            f.bytes.hash(&mut h);
            h.finish()
        };
        if self.hash == Some(hash) {
            self.etag = f.etag;
            let _ = handle.apply(self.id, SourceUpdate::Unchanged);
            return Ok(());
        }
        let list = match parse(&f.bytes, &self.map, &self.label) {
            Ok(l) => l,
            Err(e) => {
                handle.record_failure(self.id, &e);
                return Err(e);
            }
        };
        if handle.apply(self.id, SourceUpdate::Replace(list)).is_ok() {
            self.etag = f.etag;
            self.hash = Some(hash);
        }
        Ok(())
    }

    /// Polls forever, every `refresh_seconds` (the first poll immediately).
    pub async fn run(mut self, handle: Arc<RegistryHandle>) {
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.poll_and_apply(&handle).await;
        }
    }

    /// `Ok(None)`: HTTP 304.
    async fn fetch(&self) -> Result<Option<Fetched>, FileSdError> {
        match &self.origin {
            Origin::File(path) => {
                let too_large = || FileSdError::TooLarge {
                    origin: self.label.clone(),
                    limit: self.max_bytes,
                };
                let io = |source| FileSdError::Io {
                    path: path.display().to_string(),
                    source,
                };
                let meta = tokio::fs::metadata(path).await.map_err(io)?;
                if meta.len() > self.max_bytes {
                    return Err(too_large());
                }
                let bytes = tokio::fs::read(path).await.map_err(io)?;
                if bytes.len() as u64 > self.max_bytes {
                    return Err(too_large());
                }
                Ok(Some(Fetched { bytes, etag: None }))
            }
            Origin::Http { url, client } => {
                let http = |e: reqwest::Error| FileSdError::Http {
                    url: self.label.clone(),
                    message: error_chain(e),
                };
                let mut req = client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json");
                if let Some(tag) = &self.etag {
                    req = req.header(reqwest::header::IF_NONE_MATCH, tag);
                }
                let mut resp = req.send().await.map_err(http)?;
                let status = resp.status();
                if status == reqwest::StatusCode::NOT_MODIFIED {
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(FileSdError::Status {
                        url: self.label.clone(),
                        status: status.as_u16(),
                    });
                }
                let too_large = || FileSdError::TooLarge {
                    origin: self.label.clone(),
                    limit: self.max_bytes,
                };
                if resp.content_length().is_some_and(|n| n > self.max_bytes) {
                    return Err(too_large());
                }
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut bytes = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(http)? {
                    if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Some(Fetched { bytes, etag }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_lose_their_port_and_keep_cidrs() {
        for (t, want) in [
            ("203.0.113.11:9100", Some("203.0.113.11")),
            ("203.0.113.11", Some("203.0.113.11")),
            ("[2001:db8::1]:9100", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("198.51.100.0/24", Some("198.51.100.0/24")),
            ("2001:db8::/64", Some("2001:db8::/64")),
            ("node.example:9100", None),
            ("", None),
        ] {
            assert_eq!(target_address(t).as_deref(), want, "{t}");
        }
    }

    #[test]
    fn labels_are_mapped_and_unnamed_groups_skipped() {
        let doc = br#"[
          {"targets": ["203.0.113.11:9100", "[2001:db8::1]:9100", "host.example:1"],
           "labels": {"__meta_name": "jp-01", "id": "7", "application": "xrayr",
                      "region": "jp", "job": "node", "__meta_x": "y", "bad-key": "z"}},
          {"targets": ["203.0.113.12"], "labels": {"instance": "nameless"}},
          {"targets": ["203.0.113.13"], "labels": {"__meta_name": "jp-01", "region": "other"}},
          {"targets": ["203.0.113.14"], "labels": {"__meta_name": "us-01", "id": "x"}}
        ]"#;
        let map = LabelMap {
            name: "__meta_name".into(),
            node_id: "id".into(),
            app: "application".into(),
            ..LabelMap::default()
        };
        let l = parse(doc, &map, "test").unwrap();
        assert_eq!(
            l.skipped, 2,
            "one host-name target, one group without a name"
        );
        assert_eq!(l.nodes.len(), 2);
        let jp = &l.nodes[0];
        assert_eq!(jp.name, "jp-01");
        assert_eq!(
            jp.addresses,
            ["203.0.113.11", "2001:db8::1", "203.0.113.13"]
        );
        assert_eq!(jp.node_id, Some(7));
        let labels: Vec<(&str, &str)> = jp
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [("app", "xrayr"), ("job", "node"), ("region", "jp")]
        );
        assert_eq!(l.nodes[1].name, "us-01");
        assert_eq!(l.nodes[1].node_id, None, "non-numeric id ignored");
        // The result is a valid registry.
        crate::resolve::Registry::build(l.nodes).unwrap();
    }

    #[test]
    fn not_file_sd_json_is_an_error() {
        let map = LabelMap::default();
        assert!(parse(b"{\"targets\": []}", &map, "t").is_err());
        assert!(parse(b"[{\"labels\": {}}]", &map, "t").is_err());
        assert!(parse(b"[", &map, "t").is_err());
        assert_eq!(parse(b"[]", &map, "t").unwrap().nodes.len(), 0);
    }

    #[test]
    fn config_needs_exactly_one_origin_and_redacts_urls() {
        assert!(FileSdPoller::new(0, &FileSdConfig::default()).is_err());
        let both = FileSdConfig {
            path: Some("x".into()),
            url: Some("http://h/x".into()),
            ..FileSdConfig::default()
        };
        assert!(FileSdPoller::new(0, &both).is_err());
        let ftp = FileSdConfig {
            url: Some("ftp://h/x".into()),
            ..FileSdConfig::default()
        };
        assert!(FileSdPoller::new(0, &ftp).is_err());
        let u =
            reqwest::Url::parse("https://user:pw@fleet:8443/targets.json?token=SECRET#f").unwrap();
        assert_eq!(redact_url(&u), "https://fleet:8443/targets.json");
    }
}
