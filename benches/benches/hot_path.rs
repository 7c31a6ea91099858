//! Criterion benches of the core: parsing, attribution and aggregation per line.
//!
//! `cargo bench -p vpslens-benches --bench hot_path`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::metrics;
use vpslens::pipeline::{Line, LineProcessor, Shared};
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

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
