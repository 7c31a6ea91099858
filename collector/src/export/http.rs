//! HTTP endpoints: `/` (the fleet page), `/metrics`, `/metrics/istio`, `/healthz`, `/readyz`,
//! `/api/nodes`, `/api/unregistered`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::scrape::{scrape, Endpoint};
use super::{fleet, page};
use crate::pipeline::Shared;

/// The router. `/metrics` negotiates Prometheus text 0.0.4 vs OpenMetrics from `Accept`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/metrics/istio", get(istio_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(fleet_page))
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

/// `/readyz`: 200 once the first pass over the files completed. A failing checkpoint write is
/// reported in the body (`checkpoint: failing`) but keeps 200: vpslens's readiness gates the
/// gateway pod's, and a full state volume must not take the gateway out of service (the
/// metric `vpslens_checkpoint_last_write_successful` and `VpslensCheckpointFailing` alert).
async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.sources.ready.load(Ordering::Acquire) {
        if s.sources
            .checkpoint_last_write_failed
            .load(Ordering::Relaxed)
            > 0
        {
            return (StatusCode::OK, "ready\ncheckpoint: failing\n").into_response();
        }
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
/// operator uses to find VPS nodes that were bought but not registered. Each row has the
/// `node_id` the address claims (and the registry node with that id); with GeoIP, also
/// `country`/`asn`. A JSON array of [`fleet::UnregisteredView`].
async fn unregistered(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Response {
    let n = q.limit.unwrap_or(50).min(1000);
    Json(fleet::unregistered(&s, n)).into_response()
}

/// `?label=k=v,…&status=NAME` for `/api/nodes`.
#[derive(Debug, serde::Deserialize)]
struct NodesQuery {
    label: Option<String>,
    status: Option<String>,
}

/// [`fleet::Fleet`] as JSON; `label`/`status` keep matching nodes only (the counts stay the
/// fleet's).
async fn nodes(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<NodesQuery>,
) -> Response {
    let status = match q.status.as_deref().map(|x| (x, fleet::Status::parse(x))) {
        Some((x, None)) => {
            return (StatusCode::BAD_REQUEST, format!("unknown status {x:?}\n")).into_response()
        }
        Some((_, Some(st))) => vec![st],
        None => Vec::new(),
    };
    let labels = q
        .label
        .as_deref()
        .map(fleet::parse_label_filter)
        .unwrap_or_default();
    let r = tokio::task::spawn_blocking(move || {
        let mut f = fleet::snapshot(&s, fleet::now_ms());
        if !labels.is_empty() || !status.is_empty() {
            f.nodes = fleet::filter_nodes(&f.nodes, &labels, &status)
                .cloned()
                .collect();
        }
        f
    })
    .await;
    match r {
        Ok(f) => Json(f).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The fleet page (see [`page`]).
async fn fleet_page(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<page::PageQuery>,
) -> Response {
    let r = tokio::task::spawn_blocking(move || {
        let f = fleet::snapshot(&s, fleet::now_ms());
        let u = fleet::unregistered(&s, 50);
        page::render(&f, &u, &q)
    })
    .await;
    match r {
        Ok(html) => (
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    axum::http::header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
                ),
            ],
            html,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::Ordering;
    use tower::ServiceExt;

    async fn get_body(shared: &Arc<Shared>, path: &str) -> String {
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router(shared.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// The scrape handlers withhold the counters until the first pass is done (see
    /// `metrics::Counters::for_scrape`): a crash's checkpoint may hold less than was served.
    #[tokio::test]
    async fn scrapes_before_the_first_pass_hold_no_counters() {
        let shared = crate::export::metrics::tests::shared_with_one_request();
        let body = get_body(&shared, "/metrics").await;
        assert!(body.contains("\nvpslens_ready 0\n"), "{body}");
        assert!(!body.contains("vpslens_node_requests_total{"), "{body}");
        assert_eq!(get_body(&shared, "/metrics/istio").await, "");
        shared.sources.ready.store(true, Ordering::Release);
        assert!(get_body(&shared, "/metrics")
            .await
            .contains("vpslens_node_requests_total{"));
        assert!(get_body(&shared, "/metrics/istio")
            .await
            .contains("istio_requests_total{"));
    }
}
