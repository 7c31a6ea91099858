//! The fleet views at 3,000 nodes: the snapshot behind `/api/nodes` and the page (reading the
//! aggregator and registry, the status rule, sorting), the page's HTML (default paging and
//! all rows on one page), `/api/nodes`' JSON, and — as the peer measured in the same run — a
//! `/metrics` render of the same collector.
//!
//! `cargo bench -p vpslens-benches --bench fleet_page`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::{fleet, metrics, page};
use vpslens::pipeline::{Line, LineProcessor, Shared};
use vpslens::resolve::Registry;

fn benches(c: &mut Criterion) {
    let reg = Registry::from_bytes(
        std::path::Path::new("r.yaml"),
        vpslens_benches::registry_yaml(3000).as_bytes(),
    )
    .unwrap_or_default();
    let s = Shared::with_registry(reg, Limits::default());
    let mut p = LineProcessor::new(s.clone());
    let many: Vec<String> = (0..100_000)
        .map(|i| vpslens_benches::line(i, 3000, 20))
        .collect();
    p.process(&Line::batch(&many));
    let now = fleet::now_ms();
    let f = fleet::snapshot(&s, now);
    let u = fleet::unregistered(&s, 50);
    let all = page::PageQuery {
        per_page: Some(5000),
        ..page::PageQuery::default()
    };
    eprintln!(
        "fleet bench: {} nodes, page {} bytes (default paging), {} bytes (all rows), /api/nodes {} bytes",
        f.nodes.len(),
        page::render(&f, &u, &page::PageQuery::default()).len(),
        page::render(&f, &u, &all).len(),
        serde_json::to_vec(&f).map_or(0, |v| v.len()),
    );
    let mut g = c.benchmark_group("fleet");
    g.bench_function("snapshot_3000_nodes", |b| {
        b.iter(|| black_box(fleet::snapshot(&s, now).nodes.len()));
    });
    g.bench_function("page_3000_nodes_default_paging", |b| {
        b.iter(|| {
            let f = fleet::snapshot(&s, now);
            let u = fleet::unregistered(&s, 50);
            black_box(page::render(&f, &u, &page::PageQuery::default()).len())
        });
    });
    g.bench_function("page_3000_nodes_all_rows", |b| {
        b.iter(|| {
            let f = fleet::snapshot(&s, now);
            let u = fleet::unregistered(&s, 50);
            black_box(page::render(&f, &u, &all).len())
        });
    });
    g.bench_function("api_nodes_json_3000_nodes", |b| {
        b.iter(|| black_box(serde_json::to_vec(&fleet::snapshot(&s, now)).map_or(0, |v| v.len())));
    });
    g.bench_function("peer_render_metrics_3000_nodes", |b| {
        b.iter(|| black_box(metrics::render(&s, Dialect::Prometheus).len()));
    });
    g.finish();
}

criterion_group!(fleet_page, benches);
criterion_main!(fleet_page);
