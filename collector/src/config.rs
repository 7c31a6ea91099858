//! The config file (`--config FILE`, YAML) and its merge with command-line flags (flags win).
//!
//! ```yaml
//! listen: 0.0.0.0:9464
//! registry: /etc/vpslens/nodes.yaml
//! file_sd:
//!   - url: http://fleet-manager/targets.json
//!     refresh_seconds: 30
//!     labels: {name: instance_name}
//! workload_entries: {namespace: vps, label_selector: app=xrayr}
//! sources: [/var/log/istio/access.log]
//! state_dir: /var/lib/vpslens
//! web:
//!   config_file: /etc/vpslens/web.yml   # exporter-toolkit format: TLS, basic auth
//!   api: {listen_address: 127.0.0.1:9465}
//! ```
//! Every field is optional; unknown keys are errors. **The `Default` impls of [`FileConfig`],
//! [`GeoIpConfig`], [`Limits`] and [`IstioConfig`] are the one source of every default**: serde
//! fills missing keys from them, flags override the result, and the README's config reference
//! is checked against them (`collector/tests/config_reference.rs`). An annotated example is
//! `examples/config.yaml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vpslens_parsers::client::ClientAddressSource;
use vpslens_parsers::route::{RouteTable, DEFAULT_TEMPLATES};
use vpslens_parsers::LogFormat;

pub use crate::aggregate::Limits;
use crate::export::fleet::FleetConfig;
use crate::export::istio::IstioConfig;
use crate::export::server::HttpConfig;
use crate::resolve::geo::GeoSettings;
use crate::resolve::sources::file_sd::FileSdConfig;
use crate::resolve::sources::workload_entry::WorkloadEntryConfig;
use crate::resolve::sources::xboard::{XboardConfig, XboardPoller};
use crate::source::{FramingMode, ReadFrom, TailConfig};

/// Where the client address comes from (`client_ip:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClientIp {
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (PROXY-protocol aware). Default.
    #[default]
    Downstream,
    /// X-Forwarded-For entry `trusted_hops` + 1 from the right (the right-most with 0).
    Xff,
}

/// Access-log format (`format:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Per line: JSON if it starts with `{`, TEXT if `[`. Default.
    #[default]
    Auto,
    /// Istio's default JSON format.
    Json,
    /// Istio's default TEXT format.
    Text,
}

/// The config file. Every key is optional; a missing key takes the value from
/// [`FileConfig::default`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// HTTP listen address `HOST:PORT` for `/metrics`, `/metrics/istio`, `/healthz`,
    /// `/readyz`, `/api/*`; a host name is resolved at start-up. Default `0.0.0.0:9464`.
    pub listen: String,
    /// Registry node file (YAML or JSON). Default none; `run` needs at least one of
    /// `registry`, `file_sd`, `workload_entries`. Highest merge precedence.
    pub registry: Option<PathBuf>,
    /// Prometheus `file_sd` sources (files or HTTP URLs), merged below `registry` and
    /// `workload_entries`; an earlier entry wins over a later one. Default none (`[]`).
    pub file_sd: Vec<FileSdConfig>,
    /// Istio `WorkloadEntry` objects watched through the Kubernetes API (in-cluster service
    /// account or `KUBECONFIG`), merged below `registry`. Default none.
    pub workload_entries: Option<WorkloadEntryConfig>,
    /// The Xboard panel's node list (admin API, hosts resolved by DNS), merged below every
    /// other source. Default none.
    pub xboard: Option<XboardConfig>,
    /// Attribute a request from an unregistered address to the node whose registry `node_id`
    /// equals the request's `node_id` query parameter (spoofable: see README). Default `false`.
    pub attribute_unregistered_by_node_id: bool,
    /// Access-log paths or globs; `*.gz` matches are never read. Default none (`run` requires
    /// at least one).
    pub sources: Vec<String>,
    /// Checkpoint directory. Default none (no checkpoints; restarts start at `read_from`).
    pub state_dir: Option<PathBuf>,
    /// Start position for files without a checkpoint (first start only). Default `end`.
    pub read_from: ReadFrom,
    /// Access-log format. Default `auto`.
    pub format: Format,
    /// Container-log framing. Default `auto` (per file).
    pub framing: FramingMode,
    /// Client address source. Default `downstream`.
    pub client_ip: ClientIp,
    /// Trusted proxies in front of the gateway (count), only with `client_ip: xff`. Default
    /// unset, i.e. 0 with `xff`; setting it with `downstream` is an error.
    pub trusted_hops: Option<u8>,
    /// Route templates (`/`-separated, `*` one segment, trailing `**`). Default: Xboard's
    /// `/api/v1/server/UniProxy/{config,user,push,alive,alivelist,status}`.
    pub routes: Vec<String>,
    /// Longest accepted line in bytes (at least 256). Default 65536.
    pub max_line_bytes: usize,
    /// Milliseconds: the shortest gap between two reads while file events keep coming (writes
    /// are batched into one read per gap), and the poll period where file events do not cover
    /// the sources (globs in directory parts, unwatchable directories). At least 10. Default 200.
    pub poll_interval_ms: u64,
    /// Seconds between discovery passes (globs, rotated siblings) when no file event asked for
    /// one, where file events cover the sources: a safety net for lost events. At least 1.
    /// Default 10.
    pub rescan_interval_seconds: u64,
    /// Seconds a file that left the patterns stays open after it stopped growing. Default 10.
    pub rotate_wait_seconds: u64,
    /// Checkpoint period in seconds (at least 1). Default 5.
    pub checkpoint_interval_seconds: u64,
    /// Registry re-read period in seconds (besides file events; at least 1). Default 5.
    pub registry_poll_seconds: u64,
    /// Seconds a node removed from the registry keeps its series. Default 600.
    pub node_removal_grace_seconds: u64,
    /// Seconds between a node's polls of the panel when its registry entry has no
    /// `poll_interval_seconds` label (XrayR/V2bX default 60), exported as
    /// `vpslens_node_poll_interval_seconds`; alerts measure silence in multiples of it.
    /// Default 60.
    pub default_poll_interval_seconds: u64,
    /// Threads that parse and attribute lines in parallel; counters are applied in line order,
    /// so results are identical for any value. Default unset: 1 for `run` (a sidecar should
    /// cost one core at most), all cores for `replay`.
    pub parse_threads: Option<usize>,
    /// Label caps. Default see [`Limits`].
    pub limits: Limits,
    /// Istio/Kiali export. Default see [`IstioConfig`].
    #[serde(skip_serializing)]
    pub istio: IstioConfig,
    /// GeoIP/ASN enrichment. Default off (no `country`/`asn` labels).
    pub geoip: GeoIpConfig,
    /// HTTP serving: web config file (TLS, basic auth), timeouts, connection cap, `/api/*`.
    /// Default see [`HttpConfig`].
    pub web: HttpConfig,
    /// The status rule of the fleet page, `/api/nodes` and `vpslens status` (silence
    /// threshold, error ratio, windows). Default see [`FleetConfig`]: the alert rules'
    /// thresholds.
    pub fleet: FleetConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: "0.0.0.0:9464".into(),
            registry: None,
            file_sd: Vec::new(),
            workload_entries: None,
            attribute_unregistered_by_node_id: false,
            sources: Vec::new(),
            state_dir: None,
            read_from: ReadFrom::End,
            format: Format::Auto,
            framing: FramingMode::Auto,
            client_ip: ClientIp::Downstream,
            trusted_hops: None,
            routes: DEFAULT_TEMPLATES.iter().map(|t| (*t).to_owned()).collect(),
            max_line_bytes: 64 * 1024,
            poll_interval_ms: 200,
            rescan_interval_seconds: 10,
            rotate_wait_seconds: 10,
            checkpoint_interval_seconds: 5,
            registry_poll_seconds: 5,
            node_removal_grace_seconds: 600,
            default_poll_interval_seconds: 60,
            parse_threads: None,
            limits: Limits::default(),
            istio: IstioConfig::default(),
            geoip: GeoIpConfig::default(),
            web: HttpConfig::default(),
            fleet: FleetConfig::default(),
            xboard: None,
        }
    }
}

/// GeoIP/ASN enrichment (`geoip:`). Either database may be absent; a configured database that
/// cannot be opened stops start-up.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// Country MMDB file (`country_code` or MaxMind `country.iso_code` layout); adds the
    /// `country` label to `vpslens_unregistered_requests_total`. Default none.
    pub country_database: Option<PathBuf>,
    /// ASN MMDB file (`autonomous_system_number` layout); adds the `asn` label
    /// (`AS<number>`). Default none.
    pub asn_database: Option<PathBuf>,
    /// Add `country`/`asn` of each node's first registry address to `vpslens_node_info`
    /// (computed once per registry load; registry labels of the same name win). Default false.
    pub node_labels: bool,
}

/// Config errors.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Syntax or unknown key.
    #[error("config {path}: {message}")]
    Syntax {
        /// Path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads a YAML config file.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::from_yaml(&bytes).map_err(|message| ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses YAML config text (an empty document is the defaults).
    ///
    /// # Errors
    /// The parser's message (line/column, unknown key names).
    pub fn from_yaml(bytes: &[u8]) -> Result<FileConfig, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(FileConfig::default());
        }
        serde_norway::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Tailer settings (sources, start position, periods, framing, checkpoints).
    pub fn tail_config(&self) -> TailConfig {
        TailConfig {
            patterns: self.sources.clone(),
            read_from: self.read_from,
            max_line_bytes: self.max_line_bytes,
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            rescan_interval: std::time::Duration::from_secs(self.rescan_interval_seconds),
            rotate_wait: std::time::Duration::from_secs(self.rotate_wait_seconds),
            framing: self.framing,
            state_dir: self.state_dir.clone(),
            checkpoint_interval: std::time::Duration::from_secs(self.checkpoint_interval_seconds),
            read_chunk_bytes: TailConfig::default().read_chunk_bytes,
            eof_ends_line: false,
        }
    }
}

/// Settings after merging file and flags and validating: the file's values (with flags
/// applied) plus what is derived from them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config with defaults filled in and flags applied.
    pub file: FileConfig,
    /// Parser format (from `format`).
    pub format: LogFormat,
    /// Client address source (from `client_ip` and `trusted_hops`).
    pub client: ClientAddressSource,
    /// Route table (from `routes`).
    pub routes: RouteTable,
    /// GeoIP databases (opened by the commands; from `geoip`).
    pub geoip: GeoSettings,
}

/// Flags that override the file (all optional; `None`/empty = not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--registry`.
    pub registry: Option<PathBuf>,
    /// Positional log paths.
    pub sources: Vec<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--read-from`.
    pub read_from: Option<ReadFrom>,
    /// `--format`.
    pub format: Option<Format>,
    /// `--client-ip`.
    pub client_ip: Option<ClientIp>,
    /// `--trusted-hops`.
    pub trusted_hops: Option<u8>,
    /// `--istio-mode`.
    pub istio_mode: Option<crate::export::istio::EdgeMode>,
    /// `--parse-threads`.
    pub parse_threads: Option<usize>,
    /// `--web.config.file`.
    pub web_config_file: Option<PathBuf>,
    /// `--web.api-listen-address`.
    pub api_listen: Option<SocketAddr>,
    /// `--web.disable-api`.
    pub disable_api: bool,
    /// `--web.max-connections`.
    pub max_connections: Option<usize>,
}

impl Overrides {
    /// Applies the given flags over `file`.
    pub fn apply(self, file: &mut FileConfig) {
        if let Some(v) = self.listen {
            file.listen = v;
        }
        if let Some(v) = self.registry {
            file.registry = Some(v);
        }
        if !self.sources.is_empty() {
            file.sources = self.sources;
        }
        if let Some(v) = self.state_dir {
            file.state_dir = Some(v);
        }
        if let Some(v) = self.read_from {
            file.read_from = v;
        }
        if let Some(v) = self.format {
            file.format = v;
        }
        if let Some(v) = self.client_ip {
            file.client_ip = v;
        }
        if let Some(v) = self.trusted_hops {
            file.trusted_hops = Some(v);
        }
        if let Some(v) = self.istio_mode {
            file.istio.mode = v;
        }
        if let Some(v) = self.parse_threads {
            file.parse_threads = Some(v);
        }
        if self.web_config_file.is_some() {
            file.web.config_file = self.web_config_file;
        }
        if self.api_listen.is_some() {
            file.web.api.listen_address = self.api_listen;
        }
        if self.disable_api {
            file.web.api.enabled = false;
        }
        if let Some(n) = self.max_connections {
            file.web.max_connections = n;
        }
    }
}

/// Splits `HOST:PORT` / `[V6]:PORT`; the host is not resolved.
///
/// # Errors
/// A message when there is no port or it is not a number in 0..=65535.
pub fn split_listen(listen: &str) -> Result<(&str, u16), String> {
    let bad = || {
        format!(
            "listen `{listen}` must be HOST:PORT (e.g. 0.0.0.0:9464, localhost:9464, [::]:9464)"
        )
    };
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

impl Settings {
    /// Merges `file` and `flags` (flags win) and validates.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting: bad route templates, Istio settings,
    /// `file_sd` entries, zero limits or periods below their minimum, `trusted_hops` without
    /// `client_ip: xff`, a `listen` without a port.
    pub fn merge(mut file: FileConfig, flags: Overrides) -> Result<Settings, ConfigError> {
        flags.apply(&mut file);
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());
        let client = match (file.client_ip, file.trusted_hops) {
            (ClientIp::Downstream, Some(_)) => {
                return Err(invalid(
                    "trusted_hops (--trusted-hops) only applies with client_ip: xff \
                     (--client-ip xff); with the default client_ip: downstream the client is \
                     downstream_remote_address and no X-Forwarded-For entry is read",
                ))
            }
            (ClientIp::Downstream, None) => ClientAddressSource::DownstreamRemote,
            (ClientIp::Xff, hops) => ClientAddressSource::XForwardedFor {
                trusted_hops: hops.unwrap_or(0),
            },
        };
        let routes = RouteTable::new(file.routes.iter().map(String::as_str))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let l = &file.limits;
        if l.codes == 0
            || l.response_flags == 0
            || l.destinations == 0
            || l.countries == 0
            || l.asns == 0
        {
            return Err(invalid("limits must be at least 1"));
        }
        file.istio.validate().map_err(ConfigError::Invalid)?;
        let format = match file.format {
            Format::Auto => LogFormat::Auto,
            Format::Json => LogFormat::IstioJson,
            Format::Text => LogFormat::IstioText,
        };
        let geoip = GeoSettings {
            country_database: file.geoip.country_database.clone(),
            asn_database: file.geoip.asn_database.clone(),
            node_labels: file.geoip.node_labels,
        };
        if geoip.node_labels && !geoip.enabled() {
            return Err(invalid(
                "geoip.node_labels needs geoip.country_database or geoip.asn_database",
            ));
        }
        let n =
            u16::try_from(file.file_sd.len()).map_err(|_| invalid("too many file_sd entries"))?;
        for (i, f) in (0..n).zip(&file.file_sd) {
            f.validate(i)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if file
            .workload_entries
            .as_ref()
            .is_some_and(|w| w.namespace.is_empty())
        {
            return Err(invalid("workload_entries.namespace must not be empty"));
        }
        let web = &file.web;
        if web.header_read_timeout_seconds == 0
            || web.request_timeout_seconds == 0
            || web.idle_timeout_seconds == 0
            || web.max_connections == 0
        {
            return Err(invalid(
                "web timeouts and web.max_connections must be at least 1",
            ));
        }
        for (name, value, min) in [
            ("max_line_bytes", file.max_line_bytes as u64, 256),
            ("poll_interval_ms", file.poll_interval_ms, 10),
            ("rescan_interval_seconds", file.rescan_interval_seconds, 1),
            (
                "checkpoint_interval_seconds",
                file.checkpoint_interval_seconds,
                1,
            ),
            ("registry_poll_seconds", file.registry_poll_seconds, 1),
            (
                "default_poll_interval_seconds",
                file.default_poll_interval_seconds,
                1,
            ),
        ] {
            if value < min {
                return Err(ConfigError::Invalid(format!("{name} must be >= {min}")));
            }
        }
        if file.parse_threads == Some(0) {
            return Err(invalid("parse_threads must be >= 1"));
        }
        file.fleet.clone().validated()?;
        if let Some(x) = &file.xboard {
            XboardPoller::new(x).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        split_listen(&file.listen).map_err(ConfigError::Invalid)?;
        Ok(Settings {
            file,
            format,
            client,
            routes,
            geoip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = serde_norway::from_str::<FileConfig>("listen: 127.0.0.1:1\nlisten_addr: x\n")
            .unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
        let e = serde_norway::from_str::<FileConfig>("istio: {mode: gateway, clster: x}\n")
            .unwrap_err();
        assert!(e.to_string().contains("clster"), "{e}");
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = serde_norway::from_str(
            "client_ip: xff\ntrusted_hops: 2\nsources: [a.log]\nread_from: beginning\n",
        )
        .unwrap();
        let s = Settings::merge(
            file,
            Overrides {
                trusted_hops: Some(1),
                sources: vec!["b.log".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.client,
            ClientAddressSource::XForwardedFor { trusted_hops: 1 }
        );
        assert_eq!(s.file.sources, vec!["b.log".to_string()]);
        assert_eq!(s.file.read_from, ReadFrom::Beginning);
    }

    #[test]
    fn geoip_section_parses_and_validates() {
        let file: FileConfig = serde_norway::from_str(
            "geoip: {country_database: /x/c.mmdb, node_labels: true}\nlimits: {asns: 50}\n",
        )
        .unwrap();
        let s = Settings::merge(file, Overrides::default()).unwrap();
        assert_eq!(
            s.geoip.country_database.as_deref(),
            Some(Path::new("/x/c.mmdb"))
        );
        assert!(s.geoip.asn_database.is_none() && s.geoip.node_labels);
        assert_eq!((s.file.limits.asns, s.file.limits.countries), (50, 300));
        let e = serde_norway::from_str::<FileConfig>("geoip: {country_db: x}\n").unwrap_err();
        assert!(e.to_string().contains("country_db"), "{e}");
        let file: FileConfig = serde_norway::from_str("geoip: {node_labels: true}\n").unwrap();
        assert!(Settings::merge(file, Overrides::default()).is_err());
        let file: FileConfig = serde_norway::from_str("limits: {countries: 0}\n").unwrap();
        assert!(Settings::merge(file, Overrides::default()).is_err());
        let s = Settings::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert!(!s.geoip.enabled());
    }

    #[test]
    fn registry_sources_parse_and_validate() {
        let file: FileConfig = serde_norway::from_str(
            "registry: n.yaml\nfile_sd:\n  - path: t.json\n  - url: http://fleet/t.json\n    refresh_seconds: 5\n    labels: {name: instance}\nworkload_entries: {namespace: vps, label_selector: app=xrayr}\nattribute_unregistered_by_node_id: true\n",
        )
        .unwrap();
        let s = Settings::merge(file, Overrides::default()).unwrap();
        assert_eq!(s.file.file_sd.len(), 2);
        assert_eq!(s.file.file_sd[1].labels.name, "instance");
        assert_eq!(s.file.file_sd[1].labels.node_id, "node_id");
        assert_eq!(s.file.workload_entries.as_ref().unwrap().namespace, "vps");
        assert!(s.file.attribute_unregistered_by_node_id);
        let d = Settings::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert!(!d.file.attribute_unregistered_by_node_id, "off by default");
        for bad in [
            "file_sd: [{path: a, url: 'http://b'}]\n",
            "file_sd: [{}]\n",
            "file_sd: [{path: a, refresh_seconds: 0}]\n",
            "file_sd: [{path: a, labels: {nmae: x}}]\n",
            "workload_entries: {namespace: ''}\n",
            "workload_entries: {namespace: vps, selector: x}\n",
        ] {
            let r = serde_norway::from_str::<FileConfig>(bad)
                .map_err(|e| e.to_string())
                .and_then(|f| Settings::merge(f, Overrides::default()).map_err(|e| e.to_string()));
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn web_section_defaults_flags_and_unknown_keys() {
        let d = Settings::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(d.file.web, HttpConfig::default());
        assert!(d.file.web.api.enabled && d.file.web.api.listen_address.is_none());
        assert_eq!(d.file.listen, "0.0.0.0:9464");
        let file: FileConfig = serde_norway::from_str(
            "web: {config_file: w.yml, idle_timeout_seconds: 30, api: {listen_address: 127.0.0.1:9465}}\n",
        )
        .unwrap();
        assert_eq!(file.web.header_read_timeout_seconds, 10, "serde default");
        let s = Settings::merge(
            file,
            Overrides {
                web_config_file: Some("flag.yml".into()),
                disable_api: true,
                max_connections: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.file.web.config_file.as_deref(),
            Some(Path::new("flag.yml"))
        );
        assert_eq!(
            (s.file.web.idle_timeout_seconds, s.file.web.max_connections),
            (30, 64)
        );
        assert!(!s.file.web.api.enabled);
        for bad in [
            "web: {config: x}\n",
            "web: {api: {listen: 127.0.0.1:1}}\n",
            "web: {idle_timeout_seconds: 0}\n",
        ] {
            let r = serde_norway::from_str::<FileConfig>(bad)
                .map_err(|e| e.to_string())
                .and_then(|f| Settings::merge(f, Overrides::default()).map_err(|e| e.to_string()));
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn kiali_rejected_revision_is_a_config_error() {
        let file: FileConfig =
            serde_norway::from_str("istio: {source_canonical_revision: latest}\n").unwrap();
        assert!(Settings::merge(file, Overrides::default()).is_err());
    }

    #[test]
    fn trusted_hops_without_xff_is_an_error() {
        let e = Settings::merge(
            FileConfig::default(),
            Overrides {
                trusted_hops: Some(1),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("only applies with client_ip: xff"),
            "{e}"
        );
        let file = FileConfig::from_yaml(b"trusted_hops: 0\n").unwrap();
        assert!(Settings::merge(file, Overrides::default()).is_err());
        let file = FileConfig::from_yaml(b"client_ip: xff\n").unwrap();
        let s = Settings::merge(file, Overrides::default()).unwrap();
        assert_eq!(
            s.client,
            ClientAddressSource::XForwardedFor { trusted_hops: 0 }
        );
    }

    #[test]
    fn listen_accepts_host_names_and_needs_a_port() {
        assert_eq!(split_listen("localhost:9464").unwrap(), ("localhost", 9464));
        assert_eq!(split_listen("[::1]:80").unwrap(), ("::1", 80));
        for bad in ["localhost", ":9464", "host:port", "1.2.3.4:70000"] {
            let e = split_listen(bad).unwrap_err();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn periods_below_their_minimum_are_errors_not_clamped() {
        for (yaml, name) in [
            ("poll_interval_ms: 1\n", "poll_interval_ms"),
            (
                "checkpoint_interval_seconds: 0\n",
                "checkpoint_interval_seconds",
            ),
            (
                "default_poll_interval_seconds: 0\n",
                "default_poll_interval_seconds",
            ),
        ] {
            let f = FileConfig::from_yaml(yaml.as_bytes()).unwrap();
            let e = Settings::merge(f, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let f = FileConfig::from_yaml(b"\n").unwrap();
        assert_eq!(f.listen, "0.0.0.0:9464");
        let f = FileConfig::from_yaml(b"limits: {codes: 5}\n").unwrap();
        assert_eq!(f.limits.codes, 5);
        assert_eq!(f.limits.asns, Limits::default().asns);
    }

    #[test]
    fn tail_config_default_matches_the_file_defaults() {
        // TailConfig::default (used by source-stage tests) must not drift from the config's.
        let a = FileConfig::default().tail_config();
        let b = TailConfig::default();
        assert_eq!(
            (
                a.read_from,
                a.max_line_bytes,
                a.poll_interval,
                a.rotate_wait,
                a.framing
            ),
            (
                b.read_from,
                b.max_line_bytes,
                b.poll_interval,
                b.rotate_wait,
                b.framing
            )
        );
        assert_eq!(a.checkpoint_interval, b.checkpoint_interval);
    }
}
