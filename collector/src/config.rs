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
//! ```
//! Every field is optional; unknown keys are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use vpslens_parsers::client::ClientAddressSource;
use vpslens_parsers::route::{RouteTable, DEFAULT_TEMPLATES};
use vpslens_parsers::LogFormat;

use crate::aggregate::Limits;
use crate::export::fleet::FleetConfig;
use crate::export::istio::IstioConfig;
use crate::resolve::geo::GeoSettings;
use crate::resolve::sources::file_sd::{FileSdConfig, FileSdPoller};
use crate::resolve::sources::workload_entry::WorkloadEntryConfig;
use crate::resolve::sources::xboard::{XboardConfig, XboardPoller};
use crate::source::{FramingMode, ReadFrom};

/// Where the client address comes from (`client_ip:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClientIp {
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (PROXY-protocol aware). Default.
    #[default]
    Downstream,
    /// X-Forwarded-For entry `trusted_hops` from the right.
    Xff,
}

/// Access-log format (`format:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
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

/// The config file. All fields optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// HTTP listen address for `/metrics`, `/healthz`, `/readyz`, `/api/*`. Default `0.0.0.0:9464`.
    pub listen: Option<SocketAddr>,
    /// Registry node file (YAML or JSON). Default none; `run` needs at least one of
    /// `registry`, `file_sd`, `workload_entries`. Highest merge precedence.
    pub registry: Option<PathBuf>,
    /// Prometheus `file_sd` sources (files or HTTP URLs), merged below `registry` and
    /// `workload_entries`; an earlier entry wins over a later one. Default none.
    pub file_sd: Option<Vec<FileSdConfig>>,
    /// Istio `WorkloadEntry` objects watched through the Kubernetes API (in-cluster service
    /// account or `KUBECONFIG`), merged below `registry`. Default none.
    pub workload_entries: Option<WorkloadEntryConfig>,
    /// The Xboard panel's node list (admin API, hosts resolved by DNS), merged below every
    /// other source. Default none.
    pub xboard: Option<XboardConfig>,
    /// Attribute a request from an unregistered address to the node whose registry `node_id`
    /// equals the request's `node_id` query parameter (spoofable: see README). Default `false`.
    pub attribute_unregistered_by_node_id: Option<bool>,
    /// Access-log paths or globs. Default none (`run` requires at least one).
    pub sources: Option<Vec<String>>,
    /// Checkpoint directory. Default: none (no checkpoints; restarts start at `read_from`).
    pub state_dir: Option<PathBuf>,
    /// Start position for files without a checkpoint. Default `end`.
    pub read_from: Option<ReadFrom>,
    /// Access-log format. Default `auto`.
    pub format: Option<Format>,
    /// Container-log framing. Default `auto` (per file).
    pub framing: Option<FramingMode>,
    /// Client address source. Default `downstream`.
    pub client_ip: Option<ClientIp>,
    /// Trusted proxies in front of the gateway (for `client_ip: xff`). Default 0.
    pub trusted_hops: Option<u8>,
    /// Route templates (`/`-separated, `*` one segment, trailing `**`). Default: Xboard's
    /// `/api/v1/server/UniProxy/{config,user,push,alive,alivelist,status}`.
    pub routes: Option<Vec<String>>,
    /// Longest accepted line in bytes. Default 65536.
    pub max_line_bytes: Option<usize>,
    /// Poll period in milliseconds. Default 250.
    pub poll_interval_ms: Option<u64>,
    /// Seconds a file that left the patterns stays open after it stopped growing. Default 10.
    pub rotate_wait_seconds: Option<u64>,
    /// Checkpoint period in seconds. Default 5.
    pub checkpoint_interval_seconds: Option<u64>,
    /// Registry re-read period in seconds (besides file events). Default 5.
    pub registry_poll_seconds: Option<u64>,
    /// Seconds a node removed from the registry keeps its series. Default 600.
    pub node_removal_grace_seconds: Option<u64>,
    /// Threads that parse and attribute lines in parallel; counters are applied in line order,
    /// so results are identical for any value. Default 1 for `run` (a sidecar should cost one
    /// core at most), all cores for `replay`.
    pub parse_threads: Option<usize>,
    /// Label caps.
    pub limits: Option<LimitsConfig>,
    /// Istio/Kiali export.
    pub istio: Option<IstioConfig>,
    /// GeoIP/ASN enrichment. Default: off (no `country`/`asn` labels).
    pub geoip: Option<GeoIpConfig>,
    /// The status rule of the fleet page, `/api/nodes` and `vpslens status` (silence
    /// threshold, error ratio, windows). Default: the alert rules' thresholds.
    pub fleet: Option<FleetConfig>,
}

/// GeoIP/ASN enrichment (`geoip:`). Either database may be absent; a configured database that
/// cannot be opened stops start-up.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    /// Country MMDB file (`country_code` or MaxMind `country.iso_code` layout); adds the
    /// `country` label to `vpslens_unregistered_requests_total`. Default none.
    pub country_database: Option<PathBuf>,
    /// ASN MMDB file (`autonomous_system_number` layout); adds the `asn` label
    /// (`AS<number>`). Default none.
    pub asn_database: Option<PathBuf>,
    /// Add `country`/`asn` of each node's first registry address to `vpslens_node_info`
    /// (computed once per registry load; registry labels of the same name win). Default false.
    pub node_labels: Option<bool>,
}

/// Label caps (`limits:`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Distinct HTTP status codes. Default 64.
    pub codes: Option<usize>,
    /// Distinct `response_flags` values. Default 32.
    pub response_flags: Option<usize>,
    /// Distinct upstream clusters. Default 16.
    pub destinations: Option<usize>,
    /// Unregistered addresses tracked for `/api/unregistered`. Default 1000.
    pub unregistered_top: Option<usize>,
    /// Distinct GeoIP `country` label values, `unknown` included. Default 300.
    pub countries: Option<usize>,
    /// Distinct GeoIP `asn` label values, `unknown` included. Default 200.
    pub asns: Option<usize>,
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
        serde_norway::from_slice(&bytes).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Settings after merging file and flags, with defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// See [`FileConfig::listen`].
    pub listen: SocketAddr,
    /// See [`FileConfig::registry`].
    pub registry: Option<PathBuf>,
    /// See [`FileConfig::file_sd`] (validated: each entry has exactly one of `path`/`url`).
    pub file_sd: Vec<FileSdConfig>,
    /// See [`FileConfig::workload_entries`].
    pub workload_entries: Option<WorkloadEntryConfig>,
    /// See [`FileConfig::xboard`] (validated).
    pub xboard: Option<XboardConfig>,
    /// See [`FileConfig::attribute_unregistered_by_node_id`].
    pub attribute_unregistered_by_node_id: bool,
    /// See [`FileConfig::sources`].
    pub sources: Vec<String>,
    /// See [`FileConfig::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// See [`FileConfig::read_from`].
    pub read_from: ReadFrom,
    /// Parser format.
    pub format: LogFormat,
    /// See [`FileConfig::framing`].
    pub framing: FramingMode,
    /// Client address source.
    pub client: ClientAddressSource,
    /// Route table.
    pub routes: RouteTable,
    /// See [`FileConfig::max_line_bytes`].
    pub max_line_bytes: usize,
    /// Poll period.
    pub poll_interval_ms: u64,
    /// Rotate wait.
    pub rotate_wait_seconds: u64,
    /// Checkpoint period.
    pub checkpoint_interval_seconds: u64,
    /// Registry re-read period.
    pub registry_poll_seconds: u64,
    /// Node removal grace.
    pub node_removal_grace_seconds: u64,
    /// See [`FileConfig::parse_threads`]; `None` = the command's default.
    pub parse_threads: Option<usize>,
    /// Caps.
    pub limits: Limits,
    /// Istio export.
    pub istio: IstioConfig,
    /// GeoIP databases (opened by the commands).
    pub geoip: GeoSettings,
    /// See [`FileConfig::fleet`].
    pub fleet: FleetConfig,
}

/// Flags that override the file (all optional).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
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
}

impl Settings {
    /// Merges `file` and `flags` (flags win) and validates.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for bad route templates, Istio settings or zero limits.
    pub fn merge(file: FileConfig, flags: Overrides) -> Result<Settings, ConfigError> {
        let client_ip = flags.client_ip.or(file.client_ip).unwrap_or_default();
        let hops = flags.trusted_hops.or(file.trusted_hops).unwrap_or(0);
        let client = match client_ip {
            ClientIp::Downstream => ClientAddressSource::DownstreamRemote,
            ClientIp::Xff => ClientAddressSource::XForwardedFor { trusted_hops: hops },
        };
        let routes = match &file.routes {
            Some(r) => RouteTable::new(r.iter().map(String::as_str)),
            None => RouteTable::new(DEFAULT_TEMPLATES.iter().copied()),
        }
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let l = file.limits.unwrap_or_default();
        let d = Limits::default();
        let limits = Limits {
            codes: l.codes.unwrap_or(d.codes),
            response_flags: l.response_flags.unwrap_or(d.response_flags),
            destinations: l.destinations.unwrap_or(d.destinations),
            unregistered_top: l.unregistered_top.unwrap_or(d.unregistered_top),
            countries: l.countries.unwrap_or(d.countries),
            asns: l.asns.unwrap_or(d.asns),
        };
        if limits.codes == 0
            || limits.response_flags == 0
            || limits.destinations == 0
            || limits.countries == 0
            || limits.asns == 0
        {
            return Err(ConfigError::Invalid("limits must be at least 1".into()));
        }
        let mut istio = file.istio.unwrap_or_default();
        if let Some(m) = flags.istio_mode {
            istio.mode = m;
        }
        istio.validate().map_err(ConfigError::Invalid)?;
        let format = match flags.format.or(file.format).unwrap_or_default() {
            Format::Auto => LogFormat::Auto,
            Format::Json => LogFormat::IstioJson,
            Format::Text => LogFormat::IstioText,
        };
        let g = file.geoip.unwrap_or_default();
        let geoip = GeoSettings {
            country_database: g.country_database,
            asn_database: g.asn_database,
            node_labels: g.node_labels.unwrap_or(false),
        };
        if geoip.node_labels && !geoip.enabled() {
            return Err(ConfigError::Invalid(
                "geoip.node_labels needs geoip.country_database or geoip.asn_database".into(),
            ));
        }
        let file_sd = file.file_sd.unwrap_or_default();
        if file_sd.len() > usize::from(u16::MAX) {
            return Err(ConfigError::Invalid("too many file_sd entries".into()));
        }
        for (i, f) in file_sd.iter().enumerate() {
            FileSdPoller::new(u16::try_from(i).unwrap_or(u16::MAX), f)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if file
            .workload_entries
            .as_ref()
            .is_some_and(|w| w.namespace.is_empty())
        {
            return Err(ConfigError::Invalid(
                "workload_entries.namespace must not be empty".into(),
            ));
        }
        let fleet = file.fleet.unwrap_or_default();
        if let Some(x) = &file.xboard {
            XboardPoller::new(x).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let max_line_bytes = file.max_line_bytes.unwrap_or(64 * 1024);
        if max_line_bytes < 256 {
            return Err(ConfigError::Invalid("max_line_bytes must be >= 256".into()));
        }
        Ok(Settings {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9464))),
            registry: flags.registry.or(file.registry),
            file_sd,
            workload_entries: file.workload_entries,
            xboard: file.xboard,
            attribute_unregistered_by_node_id: file
                .attribute_unregistered_by_node_id
                .unwrap_or(false),
            sources: if flags.sources.is_empty() {
                file.sources.unwrap_or_default()
            } else {
                flags.sources
            },
            state_dir: flags.state_dir.or(file.state_dir),
            read_from: flags.read_from.or(file.read_from).unwrap_or_default(),
            format,
            framing: file.framing.unwrap_or_default(),
            client,
            routes,
            max_line_bytes,
            poll_interval_ms: file.poll_interval_ms.unwrap_or(250).max(10),
            rotate_wait_seconds: file.rotate_wait_seconds.unwrap_or(10),
            checkpoint_interval_seconds: file.checkpoint_interval_seconds.unwrap_or(5).max(1),
            registry_poll_seconds: file.registry_poll_seconds.unwrap_or(5).max(1),
            node_removal_grace_seconds: file.node_removal_grace_seconds.unwrap_or(600),
            parse_threads: match flags.parse_threads.or(file.parse_threads) {
                Some(0) => return Err(ConfigError::Invalid("parse_threads must be >= 1".into())),
                t => t,
            },
            limits,
            istio,
            geoip,
            fleet: fleet.validated()?,
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
        assert_eq!(s.sources, vec!["b.log".to_string()]);
        assert_eq!(s.read_from, ReadFrom::Beginning);
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
        assert_eq!((s.limits.asns, s.limits.countries), (50, 300));
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
        assert_eq!(s.file_sd.len(), 2);
        assert_eq!(s.file_sd[1].labels.as_ref().unwrap().name, "instance");
        assert_eq!(s.file_sd[1].labels.as_ref().unwrap().node_id, "node_id");
        assert_eq!(s.workload_entries.as_ref().unwrap().namespace, "vps");
        assert!(s.attribute_unregistered_by_node_id);
        let d = Settings::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert!(!d.attribute_unregistered_by_node_id, "off by default");
        for bad in [
            "file_sd: [{path: a, url: 'http://b'}]\n",
            "file_sd: [{}]\n",
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
    fn kiali_rejected_revision_is_a_config_error() {
        let file: FileConfig =
            serde_norway::from_str("istio: {source_canonical_revision: latest}\n").unwrap();
        assert!(Settings::merge(file, Overrides::default()).is_err());
    }
}
