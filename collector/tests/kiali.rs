//! Issue "Kiali draws one edge per VPS": Kiali's own namespace-graph and response-time queries,
//! run against a real Prometheus that scraped vpslens fed by a real Envoy.
//!
//! The query templates are Kiali's (kiali/kiali `graph/telemetry/istio/istio.go`
//! `buildNamespaceTrafficMap`, `appender/response_time.go`, `appender/extensions.go`, each wrapped
//! by `graph/util.go` `PromQueryAppender` as `round(…,0.001)`), with the reporter matcher Kiali's
//! UI sends when ambient is disabled (`util.GetReporter`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::prometheus::{Prometheus, Sample};

const GROUP_BY: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags";
const RT_GROUP_BY: &str = "le,source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol";
const EXT_GROUP_BY: &str = "dest_cluster, dest_namespace, dest_name, flags, protocol, secure, source_cluster, source_is_root, source_namespace, source_name, status_code";

/// Labels Kiali's `populateTrafficMap` requires (else "Skipping …, missing expected TS labels").
const REQUIRED: [&str; 14] = [
    "source_workload_namespace",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_service_namespace",
    "destination_service",
    "destination_service_name",
    "destination_workload_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "response_flags",
    "request_protocol",
    "response_code",
];

fn round(q: String) -> String {
    format!("round({q},0.001)")
}

/// Query 0: unserviced incoming (source reporter).
fn q_unserviced(ns: &str, secs: u32) -> String {
    round(format!(
        r#"sum(rate(istio_requests_total{{reporter="source",source_workload_namespace!="{ns}",destination_workload_namespace="unknown",destination_workload="unknown",destination_service=~"^.+\\.{ns}\\..+$"}} [{secs}s])) by ({GROUP_BY}) > 0"#
    ))
}

/// Query 2: incoming (destination reporter).
fn q_incoming(ns: &str, secs: u32) -> String {
    round(format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}"}} [{secs}s])) by ({GROUP_BY}) > 0"#
    ))
}

/// Query 3: outgoing (source reporter).
fn q_outgoing(ns: &str, secs: u32) -> String {
    round(format!(
        r#"sum(rate(istio_requests_total{{reporter="source",source_workload_namespace="{ns}"}} [{secs}s])) by ({GROUP_BY}) > 0"#
    ))
}

/// Response-time appender, incoming (destination reporter), p95.
fn q_response_time_in(ns: &str, secs: u32) -> String {
    round(format!(
        r#"histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="destination",destination_service_namespace="{ns}"}}[{secs}s])) by ({RT_GROUP_BY})) > 0"#
    ))
}

/// Response-time appender, outgoing (source reporter), p95.
fn q_response_time_out(ns: &str, secs: u32) -> String {
    round(format!(
        r#"histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="source",source_workload_namespace="{ns}"}}[{secs}s])) by ({RT_GROUP_BY})) > 0"#
    ))
}

/// Extensions appender.
fn q_extension(name: &str, secs: u32) -> String {
    round(format!(
        r#"sum(rate(kiali_ext_requests_total{{extension="{name}"}} [{secs}s])) by ({EXT_GROUP_BY}) > 0"#
    ))
}

/// Per round: jp-01 2×200; jp-02 200 + 503; us-01 3×200 + 404; de-01 one 200 delayed 100 ms.
fn round_requests() -> Vec<TestRequest> {
    let r = |ip: &str, id: u32, code: u16| {
        TestRequest::get(&format!(
            "/api/v1/server/UniProxy/config?node_id={id}&node_type=vless&token={}",
            common::TOKEN
        ))
        .from_str_ip(ip)
        .unwrap()
        .force_status(code)
    };
    vec![
        r("203.0.113.11", 1, 200),
        r("203.0.113.11", 1, 200),
        r("203.0.113.12", 2, 200),
        r("203.0.113.12", 2, 503),
        r("198.51.100.5", 3, 200),
        r("198.51.100.5", 3, 200),
        r("198.51.100.5", 3, 200),
        r("198.51.100.5", 3, 404),
        r("2001:db8:1::10", 4, 200).delay_ms(100),
    ]
}

/// Sent per round: (requests, errors) by node.
fn sent_per_round() -> BTreeMap<&'static str, (f64, f64)> {
    BTreeMap::from([
        ("jp-01", (2.0, 0.0)),
        ("jp-02", (2.0, 1.0)),
        ("us-01", (4.0, 1.0)),
        ("de-01", (1.0, 0.0)),
    ])
}

/// Sends rounds evenly for `secs` seconds; returns the number of rounds sent.
fn steady_traffic(stack: &common::Stack, secs: u64) -> Result<u32> {
    let reqs = round_requests();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(secs) {
        for r in &reqs {
            send(stack.envoy.listener_addr(), r)?;
        }
        n += 1;
        let next = start + Duration::from_millis(250) * n;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(n)
}

fn check_required_labels(samples: &[Sample]) {
    for s in samples {
        for l in REQUIRED {
            let v = s.label(l).unwrap_or("");
            assert!(!v.is_empty(), "{l} missing in {:?}", s.labels);
        }
        assert_eq!(s.label("request_protocol"), Some("http"));
        assert_ne!(s.label("source_cluster"), Some("unknown"));
        assert_eq!(s.label("source_cluster"), Some("Kubernetes"));
        let rev = s.label("source_canonical_revision").unwrap_or("");
        assert!(rev != "latest" && rev != "unknown", "{rev}");
    }
}

/// Per source_workload: (rate, error percentage as Kiali computes it: code 0, 4xx, 5xx).
fn edges(samples: &[Sample]) -> BTreeMap<String, (f64, f64)> {
    let mut m: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for s in samples {
        let node = s.label("source_workload").unwrap_or("").to_owned();
        let code = s.label("response_code").unwrap_or("");
        let e = m.entry(node).or_default();
        e.0 += s.value;
        if code == "0" || code.starts_with('4') || code.starts_with('5') {
            e.1 += s.value;
        }
    }
    m.into_iter()
        .map(|(k, (rate, err))| (k, (rate, 100.0 * err / rate)))
        .collect()
}

fn assert_edges_as_sent(edges: &BTreeMap<String, (f64, f64)>) {
    let sent = sent_per_round();
    assert_eq!(
        edges.keys().map(String::as_str).collect::<Vec<_>>(),
        sent.keys().copied().collect::<Vec<_>>(),
        "one edge per node"
    );
    let (jp01_rate, _) = edges["jp-01"];
    for (node, (req, err)) in sent {
        let (rate, pct) = edges[node];
        let want_pct = 100.0 * err / req;
        assert!(
            (pct - want_pct).abs() < 3.0,
            "{node}: error {pct:.1}% vs sent {want_pct:.1}%"
        );
        // Rates relative to jp-01 (2 per round) match what was sent (the counts themselves are
        // checked exactly by `wait_counts_as_sent`; wall-clock rates are not judged).
        let ratio = rate / jp01_rate;
        assert!(
            (ratio - req / 2.0).abs() < 0.1 * req / 2.0 + 0.05,
            "{node}: rate ratio {ratio:.3}"
        );
    }
}

/// Waits until Prometheus holds, per node, exactly the requests sent in `rounds` rounds
/// (`istio_requests_total`, destination reporter, summed over codes): a count, not a rate.
fn wait_counts_as_sent(prom: &Prometheus, rounds: u32) -> Result<()> {
    let want: BTreeMap<String, f64> = sent_per_round()
        .into_iter()
        .map(|(node, (req, _))| (node.to_owned(), req * f64::from(rounds)))
        .collect();
    prom.wait_for(
        r#"sum by (source_workload) (istio_requests_total{reporter="destination"})"#,
        |s| {
            let got: BTreeMap<String, f64> = s
                .iter()
                .map(|x| (x.label("source_workload").unwrap_or("").to_owned(), x.value))
                .collect();
            got == want
        },
        Duration::from_secs(30),
    )?;
    Ok(())
}

fn wait_istio(prom: &Prometheus) -> Result<()> {
    prom.wait_for(
        r#"count(count by (source_workload) (istio_requests_total{reporter="destination"}))"#,
        |s| s.first().is_some_and(|x| x.value == 4.0),
        Duration::from_secs(30),
    )?;
    Ok(())
}

#[test]
fn gateway_mode_one_edge_per_node_in_kialis_queries() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "istio:\n  kiali_extension: true\n")?;
    let cfg_s = cfg.display().to_string();
    let stack = common::start(&["--config", &cfg_s])?;
    let rounds = steady_traffic(&stack, 14)?;
    wait_istio(&stack.prom)?;
    wait_counts_as_sent(&stack.prom, rounds)?;
    let secs = 10;

    // Incoming edges of the gateway's namespace and outgoing edges of the nodes' namespace.
    let incoming = stack.prom.query(&q_incoming("istio-system", secs))?;
    let outgoing = stack.prom.query(&q_outgoing("vps", secs))?;
    for samples in [&incoming, &outgoing] {
        check_required_labels(samples);
        for s in samples.iter() {
            assert_eq!(
                s.label("destination_workload"),
                Some("istio-ingressgateway")
            );
            assert_eq!(
                s.label("destination_workload_namespace"),
                Some("istio-system")
            );
            assert_eq!(s.label("source_workload_namespace"), Some("vps"));
        }
        assert_edges_as_sent(&edges(samples));
    }
    // Nothing is "unserviced".
    assert!(stack
        .prom
        .query(&q_unserviced("istio-system", secs))?
        .is_empty());

    // A response time for every edge; de-01's 100 ms delay puts its p95 above 50 ms (Envoy's
    // buckets) and above every other edge's.
    for q in [
        q_response_time_in("istio-system", secs),
        q_response_time_out("vps", secs),
    ] {
        let rt = stack.prom.query(&q)?;
        let by_node: BTreeMap<String, f64> = rt
            .iter()
            .map(|s| (s.label("source_workload").unwrap_or("").to_owned(), s.value))
            .collect();
        assert_eq!(by_node.len(), 4, "{q}: {by_node:?}");
        assert!(by_node.values().all(|v| *v > 0.0));
        let de = by_node["de-01"];
        assert!(de > 50.0, "{by_node:?}");
        assert!(
            by_node.iter().all(|(n, v)| n == "de-01" || *v < de),
            "{by_node:?}"
        );
    }

    // Gateway mode overlaps no real proxy's telemetry: no vpslens series points at the upstream
    // service that the gateway (source) and Xboard's sidecar (destination) report themselves.
    let all = stack.prom.query("istio_requests_total")?;
    assert!(!all.is_empty());
    for s in &all {
        assert_eq!(
            s.label("destination_service_name"),
            Some("istio-ingressgateway"),
            "{:?}",
            s.labels
        );
        assert_ne!(s.label("source_workload"), Some("istio-ingressgateway"));
    }

    // Kiali's extension metric, queried the way the extensions appender does.
    let ext = stack.prom.query(&q_extension("vpslens", secs))?;
    let ext_nodes: BTreeMap<String, f64> = ext.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.label("source_name").unwrap_or("").to_owned())
            .or_default() += s.value;
        m
    });
    assert_eq!(ext_nodes.len(), 4, "{ext_nodes:?}");
    Ok(())
}

#[test]
fn upstream_mode_points_edges_at_the_xboard_service() -> Result<()> {
    let stack = common::start(&["--istio-mode", "upstream"])?;
    let rounds = steady_traffic(&stack, 12)?;
    wait_istio(&stack.prom)?;
    wait_counts_as_sent(&stack.prom, rounds)?;
    let incoming = stack.prom.query(&q_incoming("airport-prod", 10))?;
    check_required_labels(&incoming);
    for s in &incoming {
        assert_eq!(s.label("destination_service_name"), Some("xboard"));
        assert_eq!(s.label("destination_workload"), Some("xboard"));
        assert_eq!(
            s.label("destination_service"),
            Some("xboard.airport-prod.svc.cluster.local")
        );
    }
    assert_edges_as_sent(&edges(&incoming));
    Ok(())
}

/// The `/metrics/istio` scrape interval the shipped manifests configure: the ServiceMonitor's
/// endpoint and the plain `scrape_configs` job must agree (one interval, one job name each).
fn shipped_istio_interval() -> Result<Duration> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sm: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(
        root.join("k8s/base/servicemonitor.yaml"),
    )?)?;
    let endpoint = sm["spec"]["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["path"] == "/metrics/istio"))
        .expect("the ServiceMonitor scrapes /metrics/istio");
    let sm_interval = endpoint["interval"].as_str().expect("interval").to_owned();
    let plain: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(
        root.join("k8s/base/prometheus-scrape-config.yaml"),
    )?)?;
    let job = plain["scrape_configs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["metrics_path"] == "/metrics/istio"))
        .expect("the plain scrape config scrapes /metrics/istio");
    assert_eq!(
        job["scrape_interval"].as_str(),
        Some(sm_interval.as_str()),
        "ServiceMonitor and scrape_configs disagree on the /metrics/istio interval"
    );
    let secs: u64 = sm_interval
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("interval in seconds");
    Ok(Duration::from_secs(secs))
}

/// Kiali's throughput appender (`appender/throughput.go`), query 1 (from outside the
/// namespace) and query 2 (from inside), for `request` (source reporter) or `response`
/// (destination reporter) bytes.
fn q_throughput(kind: &str, ns: &str, secs: u32, inside: bool) -> String {
    const TP_GROUP_BY: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision";
    let reporter = if kind == "request" {
        "source"
    } else {
        "destination"
    };
    let sel = if inside {
        format!(r#"reporter="{reporter}",source_workload_namespace="{ns}""#)
    } else {
        format!(
            r#"reporter="{reporter}",source_workload_namespace!="{ns}",destination_service_namespace="{ns}""#
        )
    };
    round(format!(
        "sum(rate(istio_{kind}_bytes_sum{{{sel}}}[{secs}s])) by ({TP_GROUP_BY}) > 0"
    ))
}

/// Issue "Kiali at the shipped interval draws no edges": the README's queries returned nothing
/// with `/metrics/istio` scraped every 60 s. Here Prometheus scrapes at the interval the shipped
/// manifests set (read from them, not shortened), Kiali's default window `[60s]`, the default
/// (lean) shape: one edge per node on both namespace views with the right rate, error % and
/// response time, and a throughput on every edge.
#[test]
fn kiali_default_queries_draw_every_edge_at_the_shipped_scrape_interval() -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use vpslens_testkit::prometheus::PrometheusOptions;

    let interval = shipped_istio_interval()?;
    assert!(
        interval <= Duration::from_secs(30),
        "Kiali's [60s] window needs ≥ 2 samples: {interval:?}"
    );
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "istio: {}\n")?;
    let (_stub, envoy, _vpslens, listen) = common::start_with_config(dir.path(), &cfg)?;
    let prom = Prometheus::start_with(
        PrometheusOptions::new(&[listen], interval).extra_job("vpslens-istio", "/metrics/istio"),
    )?;

    // Steady traffic in the background for as long as the checks need.
    let stop = AtomicBool::new(false);
    let rounds = AtomicU32::new(0);
    let gateway = envoy.listener_addr();
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let sender = scope.spawn(|| -> Result<()> {
            let reqs = round_requests();
            while !stop.load(Ordering::Relaxed) {
                for r in &reqs {
                    send(gateway, r)?;
                }
                let n = rounds.fetch_add(1, Ordering::Relaxed) + 1;
                let next = start + Duration::from_millis(250) * n;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(())
        });
        // Stops the sender however the checks end (a failed assertion unwinds through here;
        // the scope would otherwise wait for the sender forever).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let result = (|| -> Result<()> {
            // Kiali's window holds a full minute of steady traffic: at 15 s, four scrapes of
            // every series (the most a 60 s range holds).
            let per_window = f64::from(u32::try_from(60 / interval.as_secs())?.max(2));
            prom.wait_for(
                r#"min(count_over_time(istio_requests_total{reporter="source",response_code="200"}[60s]))"#,
                |s| s.first().is_some_and(|x| x.value >= per_window),
                Duration::from_secs(150),
            )?;
            let incoming = prom.query(&q_incoming("istio-system", 60))?;
            let outgoing = prom.query(&q_outgoing("vps", 60))?;
            for samples in [&incoming, &outgoing] {
                check_required_labels(samples);
                assert_edges_as_sent(&edges(samples));
            }
            for q in [
                q_response_time_in("istio-system", 60),
                q_response_time_out("vps", 60),
            ] {
                let rt: BTreeMap<String, f64> = prom
                    .query(&q)?
                    .iter()
                    .map(|s| (s.label("source_workload").unwrap_or("").to_owned(), s.value))
                    .collect();
                assert_eq!(rt.len(), 4, "{q}: {rt:?}");
                // de-01's requests wait 100 ms: its p95 lies in Envoy's (100, 250] bucket;
                // the others answer at once, far below.
                assert!(rt["de-01"] > 100.0 && rt["de-01"] <= 250.0, "{rt:?}");
                assert!(rt.iter().all(|(n, v)| n == "de-01" || *v < 50.0), "{rt:?}");
            }
            // Throughput: response bytes on every edge in both views.
            for q in [
                q_throughput("response", "istio-system", 60, false),
                q_throughput("response", "vps", 60, true),
            ] {
                let tp = prom.query(&q)?;
                let nodes: Vec<&str> = tp
                    .iter()
                    .filter_map(|s| s.label("source_workload"))
                    .collect();
                assert_eq!(nodes.len(), 4, "{q}: {nodes:?}");
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender thread")?;
        result
    })?;
    Ok(())
}
