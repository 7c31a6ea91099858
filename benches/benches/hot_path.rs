//! Criterion benches per stage: parse (Istio JSON, Istio TEXT, CRI unwrap, client address from
//! XFF or `downstream_remote_address`), resolve (registry lookup), aggregate (record), the
//! whole pipeline per batch, and export (a `/metrics` scrape of 100,000 series and the part
//! of it that holds the aggregator lock).
//!
//! `cargo bench -p vpslens-benches --bench hot_path` (one group: `-- export`)

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vpslens::aggregate::{Aggregator, Event, Limits};
use vpslens::export::exposition::Dialect;
use vpslens::export::istio::IstioConfig;
use vpslens::export::metrics;
use vpslens::pipeline::{Line, LineProcessor, PipelineConfig, Shared};
use vpslens::resolve::geo::{Geo, GeoCache, GeoSettings};
use vpslens::resolve::reload::RegistryHandle;
use vpslens::resolve::Registry;
use vpslens_parsers::client::{client_address, ClientAddressSource};
use vpslens_parsers::container::{parse_cri, Assembled, Reassembler};
use vpslens_parsers::route::RouteTable;
use vpslens_parsers::{json, parse_line, text, LogFormat};

fn shared(nodes: u32) -> Arc<Shared> {
    let reg = Registry::from_bytes(
        std::path::Path::new("r.yaml"),
        vpslens_benches::registry_yaml(nodes).as_bytes(),
    )
    .unwrap_or_default();
    Shared::with_registry(reg, Limits::default())
}

fn benches(c: &mut Criterion) {
    let lines: Vec<String> = (0..4096)
        .map(|i| vpslens_benches::line(i, 3000, 20))
        .collect();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("istio_json", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(json::parse(l.as_bytes()).ok());
            }
        });
    });
    let texts: Vec<String> = (0..4096)
        .map(|i| vpslens_benches::text_line(i, 3000, 20))
        .collect();
    g.bench_function("istio_text", |b| {
        b.iter(|| {
            for l in &texts {
                black_box(text::parse(l.as_bytes()).ok());
            }
        });
    });
    let cris: Vec<String> = (0..4096)
        .map(|i| vpslens_benches::cri_line(i, 3000, 20))
        .collect();
    g.bench_function("cri_unwrap", |b| {
        let mut r = Reassembler::new(64 * 1024);
        b.iter(|| {
            for l in &cris {
                if let Ok(c) = parse_cri(l.as_bytes()) {
                    black_box(matches!(r.push(c), Assembled::Line(_)));
                }
            }
        });
    });
    let records: Vec<_> = lines
        .iter()
        .filter_map(|l| json::parse(l.as_bytes()).ok())
        .collect();
    g.bench_function("xff_right_most_untrusted", |b| {
        let xff = ClientAddressSource::XForwardedFor { trusted_hops: 0 };
        b.iter(|| {
            for r in &records {
                black_box(client_address(r, xff).ok());
            }
        });
    });
    g.bench_function("downstream_remote_address", |b| {
        b.iter(|| {
            for r in &records {
                black_box(client_address(r, ClientAddressSource::DownstreamRemote).ok());
            }
        });
    });
    g.finish();

    // Resolve: longest-prefix lookup of every line's client in a 3000-node registry.
    let reg = Registry::from_bytes(
        std::path::Path::new("r.yaml"),
        vpslens_benches::registry_yaml(3000).as_bytes(),
    )
    .unwrap_or_default();
    let ips: Vec<std::net::IpAddr> = records
        .iter()
        .filter_map(|r| client_address(r, ClientAddressSource::DownstreamRemote).ok())
        .collect();
    let mut g = c.benchmark_group("resolve");
    g.throughput(Throughput::Elements(ips.len() as u64));
    g.bench_function("registry_lookup_3000_nodes", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(reg.lookup(*ip));
            }
        });
    });
    g.finish();

    // Registry load (once per start and per edit): the same 3000 nodes as YAML and as JSON.
    let yaml = vpslens_benches::registry_yaml(3000);
    let json = vpslens_benches::registry_json(3000);
    let mut g = c.benchmark_group("registry_load");
    g.throughput(Throughput::Elements(3000));
    g.bench_function("yaml_3000_nodes", |b| {
        b.iter(|| {
            black_box(Registry::from_bytes(
                std::path::Path::new("r.yaml"),
                yaml.as_bytes(),
            ))
        });
    });
    g.bench_function("json_3000_nodes", |b| {
        b.iter(|| {
            black_box(Registry::from_bytes(
                std::path::Path::new("r.json"),
                json.as_bytes(),
            ))
        });
    });
    g.finish();

    // Aggregate: recording pre-attributed events (the locked part of a batch).
    let events: Vec<Event<'static>> = (0..4096u64)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            Event {
                node: (h % 5 != 0).then_some(u32::try_from((h >> 20) % 3000).unwrap_or(0)),
                route: u16::try_from((h >> 3) % 4).unwrap_or(0),
                method: u8::try_from((h >> 5) % 2).unwrap_or(0),
                code: [200, 200, 304, 503][usize::try_from((h >> 11) % 4).unwrap_or(0)],
                flags: None,
                upstream_cluster: Some("outbound|80||xboard.airport-prod.svc.cluster.local".into()),
                duration_ms: Some(3 + (h >> 13) % 200),
                bytes_received: 532,
                bytes_sent: 90 + (h >> 17) % 4000,
                start_time_ms: 1_795_400_000_000 + i64::try_from(i).unwrap_or(0),
                identity_mismatch: false,
                node_id_fallback: false,
                client: Some(std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
                claimed_node_id: None,
                geo: Default::default(),
            }
        })
        .collect();
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("record_3000_nodes", |b| {
        let mut agg = Aggregator::new(Limits::default());
        for n in 0..3000 {
            agg.node_id(&format!("node-{n:05}"));
        }
        b.iter(|| {
            for e in &events {
                agg.record(black_box(e));
            }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let routes = RouteTable::default();
    g.bench_function("json_client_route", |b| {
        b.iter(|| {
            for l in &lines {
                if let Ok(r) = parse_line(l.as_bytes(), LogFormat::Auto) {
                    black_box(client_address(&r, ClientAddressSource::DownstreamRemote).ok());
                    black_box(routes.classify(r.path.as_deref().unwrap_or("")));
                }
            }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(bytes));
    let s = shared(3000);
    let mut p = LineProcessor::new(s.clone());
    let batch: Vec<Line<'_>> = Line::batch(&lines);
    g.bench_function("parse_resolve_aggregate_3000_nodes", |b| {
        b.iter(|| p.process(black_box(&batch)));
    });
    g.finish();

    geoip(c, &batch, bytes);

    // Export over a populated aggregator: 100k lines from 3000 nodes.
    let s = shared(3000);
    let mut p = LineProcessor::new(s.clone());
    let many: Vec<String> = (0..100_000)
        .map(|i| vpslens_benches::line(i, 3000, 20))
        .collect();
    let batch: Vec<Line<'_>> = Line::batch(&many);
    p.process(&batch);
    let series = s.lock().series_len();
    eprintln!(
        "export bench: {} fine-grained series, /metrics {} bytes, /metrics/istio {} bytes",
        series,
        metrics::render(&s, Dialect::Prometheus).len(),
        metrics::render_istio(&s, Dialect::Prometheus).len()
    );
    let mut g = c.benchmark_group("export");
    let big = scrape_100k();
    g.bench_function("render_metrics_100k_series", |b| {
        b.iter(|| black_box(metrics::render(&big, Dialect::Prometheus).len()));
    });
    g.bench_function("lock_hold_metrics_100k_series", |b| {
        b.iter(|| black_box(metrics::snapshot_series(&big)));
    });
    g.bench_function("render_metrics_3000_nodes", |b| {
        b.iter(|| black_box(metrics::render(&s, Dialect::Prometheus).len()));
    });
    g.bench_function("render_istio_3000_nodes", |b| {
        b.iter(|| black_box(metrics::render_istio(&s, Dialect::Prometheus).len()));
    });
    g.finish();
}

/// A collector whose `/metrics` holds 100,000 `vpslens_node_requests_total` series: 2,500
/// nodes × 4 routes × 2 methods × 5 codes (plus each node's duration histogram).
fn scrape_100k() -> Arc<Shared> {
    let s = shared(2500);
    {
        let mut agg = s.lock();
        let routes: Vec<u16> = vpslens_parsers::route::DEFAULT_TEMPLATES[..4]
            .iter()
            .map(|t| agg.routes.intern(t))
            .collect();
        for n in 0..2500u32 {
            let node = agg.node_id(&format!("node-{n:05}"));
            for &route in &routes {
                for method in 0..2u8 {
                    for code in [200u16, 304, 404, 500, 503] {
                        agg.record(&Event {
                            node: Some(node),
                            route,
                            method,
                            code,
                            flags: None,
                            upstream_cluster: None,
                            duration_ms: Some(u64::from(n % 500)),
                            bytes_received: 0,
                            bytes_sent: 100,
                            start_time_ms: 1_795_400_000_000,
                            identity_mismatch: false,
                            node_id_fallback: false,
                            client: None,
                            claimed_node_id: None,
                            geo: Default::default(),
                        });
                    }
                }
            }
        }
    }
    let body = metrics::render(&s, Dialect::Prometheus);
    let requests = body
        .lines()
        .filter(|l| l.starts_with("vpslens_node_requests_total{"))
        .count();
    let samples = body.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!(
        "export bench: vpslens_node_requests_total series {requests}, samples {samples}, {} bytes",
        body.len()
    );
    s
}

/// GeoIP cost: raw lookups (country + ASN database) and the pipeline with GeoIP on. The
/// databases (built with the testkit writer) give every /24 of 10.0.0.0/16 (the start of the
/// benches' unregistered range, 10.0.0.0/8) its own country and ASN.
#[allow(clippy::expect_used)]
fn geoip(c: &mut Criterion, batch: &[Line<'_>], bytes: u64) {
    use vpslens_testkit::mmdb::{MmdbWriter, Value};
    let dir = std::env::temp_dir().join(format!("vpslens-bench-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut country = MmdbWriter::new("bench-country");
    let mut asn = MmdbWriter::new("bench-asn");
    for i in 0..256u32 {
        let net = format!("10.0.{i}.0/24");
        let cc = format!(
            "{}{}",
            char::from(b'A' + (i % 26) as u8),
            char::from(b'A' + (i / 26) as u8)
        );
        country
            .insert(&net, Value::map([("country_code", Value::String(cc))]))
            .expect("insert");
        asn.insert(
            &net,
            Value::map([("autonomous_system_number", Value::U32(64_512 + i))]),
        )
        .expect("insert");
    }
    let settings = GeoSettings {
        country_database: Some(dir.join("country.mmdb")),
        asn_database: Some(dir.join("asn.mmdb")),
        node_labels: false,
    };
    country.write(&dir.join("country.mmdb")).expect("write");
    asn.write(&dir.join("asn.mmdb")).expect("write");
    let geo = Geo::open(&settings).expect("open").expect("configured");
    let _ = std::fs::remove_dir_all(&dir);

    let ips: Vec<std::net::IpAddr> = (0..4096u32)
        .map(|i| std::net::IpAddr::from([10, 0, (i >> 4) as u8, (i * 7) as u8]))
        .collect();
    let mut g = c.benchmark_group("geoip");
    g.throughput(Throughput::Elements(ips.len() as u64));
    g.bench_function("lookup_country_asn", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(geo.lookup(*ip));
            }
        });
    });
    let mut cache = GeoCache::default();
    g.bench_function("lookup_cached", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(cache.lookup(&geo, *ip));
            }
        });
    });
    g.finish();

    let reg = Registry::from_bytes(
        std::path::Path::new("r.yaml"),
        vpslens_benches::registry_yaml(3000).as_bytes(),
    )
    .unwrap_or_default();
    let s = Shared::new(
        PipelineConfig {
            format: LogFormat::Auto,
            client: ClientAddressSource::DownstreamRemote,
            routes: RouteTable::default(),
            limits: Limits::default(),
            geo: Some(geo),
            parse_threads: 1,
            attribute_unregistered_by_node_id: false,
        },
        IstioConfig::default(),
        Arc::new(RegistryHandle::fixed(reg)),
    );
    let mut p = LineProcessor::new(s);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("parse_resolve_aggregate_3000_nodes_geoip", |b| {
        b.iter(|| p.process(black_box(batch)));
    });
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
