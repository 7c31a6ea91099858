//! Istio-shaped telemetry so Kiali draws one edge per VPS node.
//!
//! Families and labels are Istio's standard metrics
//! (<https://istio.io/latest/docs/reference/config/metrics/>): `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`, with
//! Envoy's default buckets. What Kiali requires of them was read from kiali/kiali
//! (`graph/telemetry/istio/istio.go` `buildNamespaceTrafficMap`/`populateTrafficMap`,
//! `graph/types.go` `Id`, `appender/response_time.go`, `appender/extensions.go`):
//! - eleven workload/service/canonical labels plus `response_flags`, `request_protocol`
//!   (`http`|`grpc`) and `response_code` must be non-empty, else the series is skipped;
//! - a present-but-`unknown` `source_cluster` drops the series, so the configured cluster name
//!   (Kiali's home cluster, default `Kubernetes`) is always set;
//! - the versioned-app node id is `vapp_<cluster>_<ns>_<workload>`: one node per VPS.
//!
//! Edge modes (see [`EdgeMode`]): `gateway` (node → ingress gateway; nothing real overlaps) and
//! `upstream` (node → the service in `%UPSTREAM_CLUSTER_RAW%`; Xboard's own inbound telemetry
//! then counts the same requests too). Optionally Kiali's extension metric
//! `kiali_ext_requests_total` is exported as well.

use std::collections::BTreeMap;

use serde::Deserialize;
use vpslens_parsers::cluster::IstioCluster;

use super::exposition::{Kind, Writer};
use crate::aggregate::{Aggregator, Histogram, ENVOY_BUCKETS};
use crate::resolve::Registry;

/// Where a node's edge points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EdgeMode {
    /// node → ingress gateway workload (default).
    #[default]
    Gateway,
    /// node → upstream service parsed from `upstream_cluster`.
    Upstream,
}

/// Which Istio histograms to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IstioHistogram {
    /// `istio_request_duration_milliseconds`.
    Duration,
    /// `istio_request_bytes`.
    RequestBytes,
    /// `istio_response_bytes`.
    ResponseBytes,
}

/// The ingress gateway as Istio's own telemetry names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayIdentity {
    /// Workload (Deployment) name. Default `istio-ingressgateway`.
    pub workload: String,
    /// Namespace. Default `istio-system`.
    pub namespace: String,
    /// Service FQDN. Default `istio-ingressgateway.istio-system.svc.cluster.local`.
    pub service: String,
    /// Canonical service. Default `istio-ingressgateway`.
    pub canonical_service: String,
    /// Canonical revision as Istio reports it for the gateway. Default `latest`.
    pub canonical_revision: String,
    /// SPIFFE principal. Default
    /// `spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account`.
    pub principal: String,
}

impl Default for GatewayIdentity {
    fn default() -> Self {
        GatewayIdentity {
            workload: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            service: "istio-ingressgateway.istio-system.svc.cluster.local".into(),
            canonical_service: "istio-ingressgateway".into(),
            canonical_revision: "latest".into(),
            principal:
                "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
                    .into(),
        }
    }
}

/// Istio/Kiali export settings (`istio:` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IstioConfig {
    /// Export `istio_*` families at all. Default `true`.
    pub enabled: bool,
    /// Edge mode. Default `gateway`.
    pub mode: EdgeMode,
    /// Cluster name for `source_cluster`/`destination_cluster`: Kiali's home cluster
    /// (`kubernetes_config.cluster_name`, istiod `CLUSTER_ID`). Default `Kubernetes`.
    pub cluster: String,
    /// Namespace the nodes appear in (`source_workload_namespace`); Kiali must have access to
    /// it. Default `vps`.
    pub source_namespace: String,
    /// `source_canonical_revision`/`source_version`; never `latest`/`unknown` (Kiali rejects
    /// them). Default `v1`.
    pub source_canonical_revision: String,
    /// App for nodes without an `app` registry label. Default `xrayr`.
    pub default_app: String,
    /// The gateway (gateway mode destination).
    pub gateway: GatewayIdentity,
    /// Reporters to emit (`destination`, `source`). Default both.
    pub reporters: Vec<String>,
    /// Histograms to emit. Default all three.
    pub histograms: Vec<IstioHistogram>,
    /// Give histograms `response_code`/`response_flags` labels like Istio does (`true`), or one
    /// histogram per edge (`false`, default): Kiali's response-time query groups them away, and
    /// per-code histograms multiply the largest part of the exposition by the codes seen.
    pub histogram_response_labels: bool,
    /// Also export `kiali_ext_requests_total` (Kiali extension). Default `false`.
    pub kiali_extension: bool,
    /// The `extension` label value, equal to the Kiali CR's `extensions[].name`. Default `vpslens`.
    pub extension_name: String,
}

impl Default for IstioConfig {
    fn default() -> Self {
        IstioConfig {
            enabled: true,
            mode: EdgeMode::Gateway,
            cluster: "Kubernetes".into(),
            source_namespace: "vps".into(),
            source_canonical_revision: "v1".into(),
            default_app: "xrayr".into(),
            gateway: GatewayIdentity::default(),
            reporters: vec!["destination".into(), "source".into()],
            histograms: vec![
                IstioHistogram::Duration,
                IstioHistogram::RequestBytes,
                IstioHistogram::ResponseBytes,
            ],
            histogram_response_labels: false,
            kiali_extension: false,
            extension_name: "vpslens".into(),
        }
    }
}

impl IstioConfig {
    /// Checks the values Kiali would reject.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        let rev = self.source_canonical_revision.as_str();
        if rev.is_empty() || rev == "latest" || rev == "unknown" {
            return Err(format!(
                "istio.source_canonical_revision `{rev}` is rejected by Kiali (use e.g. v1)"
            ));
        }
        for (k, v) in [
            ("istio.cluster", &self.cluster),
            ("istio.source_namespace", &self.source_namespace),
            ("istio.default_app", &self.default_app),
        ] {
            if v.is_empty() || v == "unknown" {
                return Err(format!("{k} must be a real name, not `{v}`"));
            }
        }
        for r in &self.reporters {
            if r != "destination" && r != "source" {
                return Err(format!("istio.reporters: `{r}` is not destination|source"));
            }
        }
        Ok(())
    }
}

/// Destination labels of one edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Dest {
    workload: String,
    namespace: String,
    service: String,
    service_name: String,
    service_namespace: String,
    canonical_service: String,
    canonical_revision: String,
    principal: String,
    app: String,
    version: String,
}

impl Dest {
    /// Istio's "unknown" destination (no upstream cluster, or not an Istio cluster name).
    fn unknown() -> Dest {
        let u = || "unknown".to_owned();
        Dest {
            workload: u(),
            namespace: u(),
            service: u(),
            service_name: u(),
            service_namespace: u(),
            canonical_service: u(),
            canonical_revision: u(),
            principal: u(),
            app: u(),
            version: u(),
        }
    }
}

/// Request totals and histograms of one edge slice.
#[derive(Debug, Default, Clone)]
struct EdgeStats {
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// Views computed under the aggregator lock. Keys are small ids; names are looked up in the
/// side tables at render time, outside the lock.
#[derive(Debug, Default)]
pub struct IstioViews {
    /// (node id, destination id, code, flags id) → request counts.
    requests: BTreeMap<(u32, u16, u16, u16), u64>,
    /// (node id, destination id, code, flags id) → histograms; code and flags are
    /// [`NO_CODE`] when `histogram_response_labels` is off.
    histograms: BTreeMap<(u32, u16, u16, u16), EdgeStats>,
    nodes: Vec<(String, String)>,
    dests: BTreeMap<u16, Dest>,
    flags: Vec<String>,
}

/// Marker for "no response labels" in histogram keys.
const NO_CODE: u16 = u16::MAX - 1;

fn dest_for(cfg: &IstioConfig, upstream_cluster: &str) -> Dest {
    let unknown = || "unknown".to_owned();
    match cfg.mode {
        EdgeMode::Gateway => {
            let g = &cfg.gateway;
            let name = g.service.split('.').next().unwrap_or(&g.service).to_owned();
            Dest {
                workload: g.workload.clone(),
                namespace: g.namespace.clone(),
                service: g.service.clone(),
                service_name: name,
                service_namespace: g.namespace.clone(),
                canonical_service: g.canonical_service.clone(),
                canonical_revision: g.canonical_revision.clone(),
                principal: g.principal.clone(),
                app: g.canonical_service.clone(),
                version: unknown(),
            }
        }
        EdgeMode::Upstream => match IstioCluster::parse(upstream_cluster) {
            Some(c) => {
                let name = c.service_name().to_owned();
                let ns = c.namespace().map_or_else(unknown, str::to_owned);
                Dest {
                    workload: name.clone(),
                    namespace: ns.clone(),
                    service: c.host.to_owned(),
                    service_name: name.clone(),
                    service_namespace: ns,
                    canonical_service: name.clone(),
                    canonical_revision: "latest".into(),
                    principal: unknown(),
                    app: name,
                    version: unknown(),
                }
            }
            None => Dest::unknown(),
        },
    }
}

/// Groups the aggregator's series into Istio edges (ids only; cheap under the lock).
pub fn views(agg: &Aggregator, registry: &Registry, cfg: &IstioConfig) -> IstioViews {
    let mut v = IstioViews::default();
    if !cfg.enabled {
        return v;
    }
    let gateway = cfg.mode == EdgeMode::Gateway;
    for (k, n) in agg.series() {
        // In gateway mode every request has the same destination.
        let dest = if gateway { 0 } else { k.dest };
        *v.requests
            .entry((k.node, dest, k.code, k.flags))
            .or_insert(0) += n;
        v.dests
            .entry(dest)
            .or_insert_with(|| dest_for(cfg, agg.destinations.get(k.dest)));
    }
    for (k, h) in agg.histograms() {
        let dest = if gateway { 0 } else { k.dest };
        let hk = if cfg.histogram_response_labels {
            (k.node, dest, k.code, k.flags)
        } else {
            (k.node, dest, NO_CODE, NO_CODE)
        };
        let e = v.histograms.entry(hk).or_default();
        e.duration.merge(&h.duration_ms());
        e.request_bytes.merge(&h.request_bytes());
        e.response_bytes.merge(&h.response_bytes());
    }
    v.nodes = agg
        .node_names
        .iter()
        .map(|name| {
            let app = registry
                .index_of(name)
                .and_then(|i| registry.node(i))
                .map_or(cfg.default_app.as_str(), |n| n.app(&cfg.default_app))
                .to_owned();
            (name.clone(), app)
        })
        .collect();
    v.flags = agg.flags.values().to_vec();
    v
}

const REQUESTS: &str = "istio_requests_total";
const DURATION: &str = "istio_request_duration_milliseconds";
const REQ_BYTES: &str = "istio_request_bytes";
const RESP_BYTES: &str = "istio_response_bytes";
const KIALI_EXT: &str = "kiali_ext_requests_total";

/// Writes the Istio families (and the Kiali extension family when enabled).
pub fn render(w: &mut Writer, v: &IstioViews, cfg: &IstioConfig) {
    if !cfg.enabled {
        return;
    }
    let unknown = Dest::unknown();
    let other = (crate::aggregate::OTHER.to_owned(), cfg.default_app.clone());
    let node = |id: u32| v.nodes.get(id as usize).unwrap_or(&other);
    let dest = |id: u16| v.dests.get(&id).unwrap_or(&unknown);
    let flags = |id: u16| v.flags.get(usize::from(id)).map_or("-", String::as_str);
    let families: [(&str, &str, Option<IstioHistogram>); 4] = [
        (REQUESTS, "Requests (Istio standard metric), synthesized by vpslens from the gateway access log for registered VPS nodes.", None),
        (DURATION, "Request duration in milliseconds (Istio standard metric), synthesized by vpslens.", Some(IstioHistogram::Duration)),
        (REQ_BYTES, "Request body size in bytes (Istio standard metric), synthesized by vpslens.", Some(IstioHistogram::RequestBytes)),
        (RESP_BYTES, "Response body size in bytes (Istio standard metric), synthesized by vpslens.", Some(IstioHistogram::ResponseBytes)),
    ];
    let mut code_buf = itoa::Buffer::new();
    for (name, help, hist) in families {
        if let Some(h) = hist {
            if !cfg.histograms.contains(&h) {
                continue;
            }
        }
        w.family(
            name,
            help,
            if hist.is_some() {
                Kind::Histogram
            } else {
                Kind::Counter
            },
        );
        for reporter in &cfg.reporters {
            let security = if reporter == "destination" {
                "none"
            } else {
                "unknown"
            };
            let mut emit = |w: &mut Writer,
                            key: &(u32, u16, u16, u16),
                            value: Option<u64>,
                            e: Option<&EdgeStats>| {
                let (node_name, app) = node(key.0);
                let d = dest(key.1);
                let (code, fl) = if key.2 == NO_CODE {
                    ("", "")
                } else {
                    (Aggregator::code_label(key.2, &mut code_buf), flags(key.3))
                };
                let labels: [(&str, &str); 25] = [
                    ("reporter", reporter),
                    ("source_workload", node_name),
                    ("source_workload_namespace", &cfg.source_namespace),
                    ("source_principal", "unknown"),
                    ("source_app", app),
                    ("source_version", &cfg.source_canonical_revision),
                    ("source_canonical_service", app),
                    ("source_canonical_revision", &cfg.source_canonical_revision),
                    ("source_cluster", &cfg.cluster),
                    ("destination_workload", &d.workload),
                    ("destination_workload_namespace", &d.namespace),
                    ("destination_principal", &d.principal),
                    ("destination_app", &d.app),
                    ("destination_version", &d.version),
                    ("destination_service", &d.service),
                    ("destination_service_name", &d.service_name),
                    ("destination_service_namespace", &d.service_namespace),
                    ("destination_canonical_service", &d.canonical_service),
                    ("destination_canonical_revision", &d.canonical_revision),
                    ("destination_cluster", &cfg.cluster),
                    ("request_protocol", "http"),
                    ("response_code", code),
                    ("grpc_response_status", ""),
                    ("response_flags", fl),
                    ("connection_security_policy", security),
                ];
                // An empty value equals an absent label; drop it rather than print `=""`.
                let labels: Vec<(&str, &str)> =
                    labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                match (value, e, hist) {
                    (Some(n), _, None) => w.sample_u64(name, &labels, n),
                    (_, Some(e), Some(which)) => {
                        let h = match which {
                            IstioHistogram::Duration => &e.duration,
                            IstioHistogram::RequestBytes => &e.request_bytes,
                            IstioHistogram::ResponseBytes => &e.response_bytes,
                        };
                        #[allow(clippy::cast_precision_loss)]
                        let sum = h.sum as f64;
                        w.histogram(name, &labels, &ENVOY_BUCKETS, &h.cumulative(), sum);
                    }
                    _ => {}
                }
            };
            if hist.is_none() {
                for (k, n) in &v.requests {
                    emit(w, k, Some(*n), None);
                }
            } else {
                for (k, e) in &v.histograms {
                    emit(w, k, None, Some(e));
                }
            }
        }
    }
    if cfg.kiali_extension {
        w.family(
            KIALI_EXT,
            "Requests per VPS node edge for Kiali's extension appender (kiali_ext_requests_total).",
            Kind::Counter,
        );
        let mut code_text = itoa::Buffer::new();
        for (k, n) in &v.requests {
            let (node_name, _) = node(k.0);
            let d = dest(k.1);
            let code = Aggregator::code_label(k.2, &mut code_text);
            let fl = flags(k.3);
            let fl = if fl == "-" { "" } else { fl };
            let labels: Vec<(&str, &str)> = [
                ("extension", cfg.extension_name.as_str()),
                ("source_cluster", &cfg.cluster),
                ("source_namespace", &cfg.source_namespace),
                ("source_name", node_name),
                ("source_is_root", "false"),
                ("dest_cluster", &cfg.cluster),
                ("dest_namespace", &d.service_namespace),
                ("dest_name", &d.service_name),
                ("flags", fl),
                ("protocol", "http"),
                ("secure", "false"),
                ("status_code", code),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
            w.sample_u64(KIALI_EXT, &labels, *n);
        }
    }
}
