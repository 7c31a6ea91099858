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

use super::exposition::{Family, Writer};
use super::metrics::{
    ISTIO_DURATION, ISTIO_REQUESTS, ISTIO_REQUEST_BYTES, ISTIO_RESPONSE_BYTES, KIALI_EXT_REQUESTS,
};
use crate::aggregate::{AggregateView, Aggregator, Histogram, ENVOY_BUCKETS};
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

/// How much of Istio's standard shape `/metrics/istio` writes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IstioShape {
    /// What Kiali reads, nothing else (default): `istio_requests_total` for both reporters;
    /// `istio_request_duration_milliseconds` for both reporters with only the buckets from the
    /// one below the lowest non-empty bucket to the highest non-empty one (every
    /// `histogram_quantile` unchanged, see [`sparse_range`]); `istio_request_bytes` for the
    /// `source` reporter and `istio_response_bytes` for the `destination` reporter (what Kiali's
    /// throughput appender reads: their `_sum`), with the `+Inf` bucket only.
    #[default]
    Lean,
    /// Istio's full shape: every bucket of every configured histogram for every reporter.
    Full,
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
    /// `lean` (default: what Kiali's graph, response-time, throughput and health queries read,
    /// ~35 samples per node) or `full` (Istio's whole shape, ~140 samples per node).
    pub shape: IstioShape,
    /// Scrapes of `/metrics` and `/metrics/istio` rendered at the same time (both endpoints
    /// together); further scrapes wait for a slot for up to their scrape timeout, then get
    /// `503`. Each render holds a copy of the counters' ids and numbers (a few MB at 3,000
    /// nodes) plus two 64 KiB chunks. Default 4 (one Prometheus pair scraping both).
    pub max_concurrent_renders: usize,
    /// Longest a scrape may take, waiting for a slot included, when Prometheus sends no
    /// `X-Prometheus-Scrape-Timeout-Seconds` (with the header: the smaller of the two). A
    /// client that stops reading is cut off after it and frees its slot. Seconds, default 30.
    pub render_timeout_seconds: u64,
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
            shape: IstioShape::Lean,
            max_concurrent_renders: 4,
            render_timeout_seconds: 30,
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
        if self.max_concurrent_renders == 0 || self.render_timeout_seconds == 0 {
            return Err(
                "istio.max_concurrent_renders and istio.render_timeout_seconds must be > 0".into(),
            );
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
pub fn views(agg: AggregateView<'_>, registry: &Registry, cfg: &IstioConfig) -> IstioViews {
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
            .or_insert_with(|| dest_for(cfg, agg.destination(k.dest)));
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
        .node_names()
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
    v.flags = agg.flags().to_vec();
    v
}

/// Buckets of a histogram (`counts`: per bucket, `+Inf` last) that the lean shape writes:
/// from the bucket below the lowest non-empty one up to the highest non-empty finite one
/// (`+Inf`, `_sum` and `_count` are always written). `histogram_quantile` over any window
/// finds its quantile in a bucket `i` that holds observations in that window, hence ever, so
/// `i` and its lower bound `i - 1` are both written: every quantile (q > 0) comes out as with
/// all buckets. As counts only grow, the range only widens.
pub fn sparse_range(counts: &[u64; 20]) -> std::ops::RangeInclusive<usize> {
    let finite = &counts[..19];
    match (
        finite.iter().position(|c| *c > 0),
        counts.iter().rposition(|c| *c > 0),
    ) {
        (Some(lo), Some(hi)) => lo.saturating_sub(1)..=hi.min(18),
        // Only `+Inf` observations: the highest finite bound is where PromQL puts them.
        (None, Some(_)) => 18..=18,
        #[allow(clippy::reversed_empty_ranges)]
        _ => 1..=0,
    }
}

/// Which reporters and buckets of `family` a shape writes.
fn family_plan(cfg: &IstioConfig, hist: Option<IstioHistogram>) -> (Option<&'static str>, bool) {
    // (only this reporter, all buckets)
    match (cfg.shape, hist) {
        (IstioShape::Full, _) | (_, None) => (None, true),
        (IstioShape::Lean, Some(IstioHistogram::Duration)) => (None, false),
        // Kiali's throughput appender: request bytes from source telemetry, response bytes from
        // destination telemetry, `_sum` only.
        (IstioShape::Lean, Some(IstioHistogram::RequestBytes)) => (Some("source"), false),
        (IstioShape::Lean, Some(IstioHistogram::ResponseBytes)) => (Some("destination"), false),
    }
}

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
    let families: [(&Family, Option<IstioHistogram>); 4] = [
        (&ISTIO_REQUESTS, None),
        (&ISTIO_DURATION, Some(IstioHistogram::Duration)),
        (&ISTIO_REQUEST_BYTES, Some(IstioHistogram::RequestBytes)),
        (&ISTIO_RESPONSE_BYTES, Some(IstioHistogram::ResponseBytes)),
    ];
    let mut code_buf = itoa::Buffer::new();
    for (family, hist) in families {
        if let Some(h) = hist {
            if !cfg.histograms.contains(&h) {
                continue;
            }
        }
        let name = family.name;
        let (only_reporter, all_buckets) = family_plan(cfg, hist);
        w.family(family);
        for reporter in &cfg.reporters {
            if only_reporter.is_some_and(|r| r != reporter) {
                continue;
            }
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
                // Every label stays in the lean shape: Kiali's security appender skips a series
                // without `source_principal`, `destination_principal` or
                // `connection_security_policy` and shows the principals on the edge.
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
                        let cumulative = h.cumulative();
                        if all_buckets {
                            w.histogram(name, &labels, &ENVOY_BUCKETS, &cumulative, sum);
                        } else if which == IstioHistogram::Duration {
                            let keep = sparse_range(&h.counts);
                            w.histogram_buckets(
                                name,
                                &labels,
                                &ENVOY_BUCKETS,
                                &cumulative,
                                keep,
                                sum,
                            );
                        } else {
                            #[allow(clippy::reversed_empty_ranges)]
                            w.histogram_buckets(
                                name,
                                &labels,
                                &ENVOY_BUCKETS,
                                &cumulative,
                                1..=0,
                                sum,
                            );
                        }
                    }
                    _ => {}
                }
            };
            if hist.is_none() {
                for (k, n) in &v.requests {
                    if w.is_closed() {
                        return;
                    }
                    emit(w, k, Some(*n), None);
                }
            } else {
                for (k, e) in &v.histograms {
                    if w.is_closed() {
                        return;
                    }
                    emit(w, k, None, Some(e));
                }
            }
        }
    }
    if cfg.kiali_extension {
        w.family(&KIALI_EXT_REQUESTS);
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
            w.sample_u64(KIALI_EXT_REQUESTS.name, &labels, *n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// PromQL's `histogram_quantile` over `(upper bound, cumulative count)` buckets, `+Inf`
    /// last (Prometheus `promql/quantile.go` `bucketQuantile`).
    fn promql_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
        let total = buckets.last().map_or(0.0, |b| b.1);
        if total == 0.0 || buckets.len() < 2 {
            return f64::NAN;
        }
        let rank = q * total;
        let b = buckets.iter().position(|x| x.1 >= rank).unwrap_or(0);
        if b == buckets.len() - 1 {
            return buckets[buckets.len() - 2].0;
        }
        if b == 0 && buckets[0].0 <= 0.0 {
            return buckets[0].0;
        }
        let (start, below) = if b == 0 {
            (0.0, 0.0)
        } else {
            (buckets[b - 1].0, buckets[b - 1].1)
        };
        let (end, count) = (buckets[b].0, buckets[b].1 - below);
        start + (end - start) * ((rank - below) / count)
    }

    /// The buckets written for `counts` with all buckets or only `keep`.
    #[allow(clippy::cast_precision_loss)]
    fn written(
        counts: &[u64; 20],
        keep: Option<std::ops::RangeInclusive<usize>>,
    ) -> Vec<(f64, f64)> {
        let h = Histogram {
            counts: *counts,
            sum: 0,
        };
        h.cumulative()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i == 19 || keep.as_ref().is_none_or(|k| k.contains(i)))
            .map(|(i, c)| {
                (
                    ENVOY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    *c as f64,
                )
            })
            .collect()
    }

    proptest! {
        /// Every quantile Kiali asks for (and any other q > 0) over any window of a lean
        /// duration histogram equals the full one's: the window's bucket increases are at most
        /// the lifetime counts the range was chosen from.
        #[test]
        fn sparse_buckets_keep_every_quantile(
            lifetime in proptest::array::uniform20(prop_oneof![3 => Just(0u64), 1 => 1u64..50]),
            window_share in proptest::array::uniform20(0u64..=100),
            q in prop_oneof![Just(0.5), Just(0.95), Just(0.99), Just(0.999), 0.01f64..1.0],
        ) {
            let keep = sparse_range(&lifetime);
            let mut window = [0u64; 20];
            for i in 0..20 {
                window[i] = lifetime[i] * window_share[i] / 100;
            }
            let full = promql_quantile(q, &written(&window, None));
            let lean = promql_quantile(q, &written(&window, Some(keep)));
            prop_assert!(
                (full.is_nan() && lean.is_nan()) || (full - lean).abs() < 1e-9,
                "full {full} lean {lean}"
            );
        }
    }

    #[test]
    fn sparse_range_spans_one_below_the_lowest_to_the_highest_non_empty_bucket() {
        let mut c = [0u64; 20];
        assert!(sparse_range(&c).is_empty());
        c[4] = 1;
        c[7] = 2;
        assert_eq!(sparse_range(&c), 3..=7);
        c[0] = 1;
        assert_eq!(sparse_range(&c), 0..=7);
        let mut inf = [0u64; 20];
        inf[19] = 5;
        assert_eq!(sparse_range(&inf), 18..=18);
    }
}
