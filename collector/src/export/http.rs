//! HTTP endpoints: `/metrics`, `/metrics/istio`, `/healthz`, `/readyz`, `/api/nodes`,
//! `/api/unregistered`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::scrape::{scrape, Endpoint};
use super::summary;
use crate::pipeline::Shared;

/// The router. `/metrics` negotiates Prometheus text 0.0.4 vs OpenMetrics from `Accept`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/metrics/istio", get(istio_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/nodes", get(nodes))
        .route("/api/unregistered", get(unregistered))
        .with_state(shared)
        // Prometheus asks for gzip; exposition text compresses ~20-50×. The metrics endpoints
        // compress their streamed bodies themselves (and set Content-Encoding, which this
        // layer leaves alone); it serves the JSON endpoints.
        .layer(tower_http::compression::CompressionLayer::new())
}

async fn metrics_handler(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    scrape(s, &headers, Endpoint::Metrics).await
}

async fn istio_handler(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    scrape(s, &headers, Endpoint::Istio).await
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// `?limit=N` (default 50, at most 1000).
#[derive(Debug, serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// The busiest clients missing from the registry (space-saving estimates): the list an
/// operator uses to find VPS nodes that were bought but not registered. With GeoIP, each row
/// also has `country`/`asn`.
async fn unregistered(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Response {
    let n = q.limit.unwrap_or(50).min(1000);
    let top = s.lock().unregistered_top.top(n);
    let geo = s.config.geo.as_deref();
    let rows: Vec<serde_json::Value> = top
        .iter()
        .map(|h| {
            let mut row = serde_json::json!({
                "address": h.address.to_string(),
                "requests": h.count,
                "requests_at_least": h.count - h.error,
                "last_seen_seconds": h.last_seen_ms as f64 / 1000.0,
            });
            // GeoIP on: the address's country/ASN as the metrics label them (uncapped here:
            // at most `limit` rows, never a label).
            if let (Some(g), Some(obj)) = (geo, row.as_object_mut()) {
                let l = g.lookup(h.address);
                if g.has_country() {
                    obj.insert("country".into(), l.country_label().into());
                }
                if g.has_asn() {
                    obj.insert("asn".into(), l.asn_label().as_str().into());
                }
            }
            row
        })
        .collect();
    Json(rows).into_response()
}

async fn nodes(State(s): State<Arc<Shared>>) -> Response {
    match tokio::task::spawn_blocking(move || summary::rows(&s).0).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
