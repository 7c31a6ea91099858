//! HTTP endpoints: `/metrics`, `/metrics/istio`, `/healthz`, `/readyz`, `/api/nodes`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::exposition::Dialect;
use super::{metrics, summary};
use crate::pipeline::Shared;

/// The router. `/metrics` negotiates Prometheus text 0.0.4 vs OpenMetrics from `Accept`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/metrics/istio", get(istio_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/nodes", get(nodes))
        .with_state(shared)
        // Prometheus asks for gzip; exposition text compresses ~20-50×.
        .layer(tower_http::compression::CompressionLayer::new())
}

async fn metrics_handler(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let dialect = Dialect::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    match tokio::task::spawn_blocking(move || metrics::render(&s, dialect)).await {
        Ok(body) => ([(CONTENT_TYPE, dialect.content_type())], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn istio_handler(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let dialect = Dialect::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    match tokio::task::spawn_blocking(move || metrics::render_istio(&s, dialect)).await {
        Ok(body) => ([(CONTENT_TYPE, dialect.content_type())], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn nodes(State(s): State<Arc<Shared>>) -> Response {
    match tokio::task::spawn_blocking(move || summary::rows(&s).0).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
