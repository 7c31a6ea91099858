//! Criterion benches of the core: parsing, attribution and aggregation per line.
//!
//! `cargo bench -p vpslens-benches --bench hot_path` (GeoIP: `-- geoip`)

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::istio::IstioConfig;
use vpslens::export::metrics;
use vpslens::pipeline::{Line, LineProcessor, PipelineConfig, Shared};
use vpslens::resolve::geo::{Geo, GeoCache, GeoSettings};
use vpslens::resolve::reload::RegistryHandle;
use vpslens::resolve::Registry;
use vpslens_parsers::client::{client_address, ClientAddressSource};
use vpslens_parsers::route::RouteTable;
use vpslens_parsers::{json, parse_line, text, LogFormat};

const TEXT: &str = r#"[2026-11-23T05:38:15.940Z] "POST /api/v1/server/UniProxy/push?node_id=2&node_type=vless&token=FAKE-TOKEN-do-not-use HTTP/1.1" 200 - via_upstream - "-" 532 91 14 13 "100.64.0.7" "go-resty/2.7.0 (https://github.com/go-resty/resty)" "8e0f11aa-9b1c-4a11-9c3e-5b2f0d7e0001" "panel.example.com" "10.0.1.7:80" outbound|80||xboard.airport-prod.svc.cluster.local 10.0.0.5:40000 10.0.0.5:8443 100.64.0.7:40001 - xboard-route"#;

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
    g.bench_function("istio_text", |b| {
        b.iter(|| {
            for _ in 0..lines.len() {
                black_box(text::parse(TEXT.as_bytes()).ok());
            }
        });
    });
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
    let batch: Vec<Line<'_>> = lines
        .iter()
        .map(|l| Line::Text(std::borrow::Cow::Borrowed(l.as_bytes())))
        .collect();
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
    let batch: Vec<Line<'_>> = many
        .iter()
        .map(|l| Line::Text(std::borrow::Cow::Borrowed(l.as_bytes())))
        .collect();
    p.process(&batch);
    let series = s.lock().series_len();
    eprintln!(
        "export bench: {} fine-grained series, /metrics {} bytes, /metrics/istio {} bytes",
        series,
        metrics::render(&s, Dialect::Prometheus).len(),
        metrics::render_istio(&s, Dialect::Prometheus).len()
    );
    let mut g = c.benchmark_group("export");
    g.bench_function("render_metrics_3000_nodes", |b| {
        b.iter(|| black_box(metrics::render(&s, Dialect::Prometheus).len()));
    });
    g.bench_function("render_istio_3000_nodes", |b| {
        b.iter(|| black_box(metrics::render_istio(&s, Dialect::Prometheus).len()));
    });
    g.finish();
}

/// GeoIP cost: raw lookups (country + ASN database) and the pipeline with GeoIP on. The
/// databases (built with the testkit writer) give every /24 of the benches' unregistered range
/// 198.18.0.0/16 its own country and ASN.
#[allow(clippy::expect_used)]
fn geoip(c: &mut Criterion, batch: &[Line<'_>], bytes: u64) {
    use vpslens_testkit::mmdb::{MmdbWriter, Value};
    let dir = std::env::temp_dir().join(format!("vpslens-bench-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut country = MmdbWriter::new("bench-country");
    let mut asn = MmdbWriter::new("bench-asn");
    for i in 0..256u32 {
        let net = format!("198.18.{i}.0/24");
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
        .map(|i| std::net::IpAddr::from([198, 18, (i >> 4) as u8, (i * 7) as u8]))
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
