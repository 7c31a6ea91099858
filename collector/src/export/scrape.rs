//! Serving `/metrics` and `/metrics/istio` with memory independent of the fleet and of the
//! scrapers.
//!
//! - **Bounded renders.** A [`ScrapeGate`] holds `istio.max_concurrent_renders` slots for both
//!   endpoints together. A scrape waits for a slot until its deadline (the smaller of
//!   Prometheus' `X-Prometheus-Scrape-Timeout-Seconds` and `istio.render_timeout_seconds`),
//!   then gets `503 Service Unavailable` with `Retry-After` (counted in
//!   `vpslens_scrapes_rejected_total`). Waiting costs a task and its request headers, nothing
//!   else: Prometheus' next scrape simply retries, while answering every scraper at once would
//!   multiply the render memory by the number of scrapers.
//! - **Streamed, compressed as it goes.** The render runs on tokio's blocking pool and writes
//!   64 KiB chunks of whole lines ([`Writer::streaming`]); with `Accept-Encoding: gzip` each
//!   chunk goes through one `flate2` gzip stream (level 1: exposition text still shrinks
//!   ~20×) and compressed output is handed to the HTTP body 64 KiB at a time through a channel
//!   of [`CHANNEL_CHUNKS`] slots. A client that reads slowly slows the render (backpressure);
//!   one that stops reading holds at most those chunks plus hyper's write buffer, and is cut
//!   off at its deadline, freeing the slot (`vpslens_scrapes_cut_total`).
//! - **No silent truncation.** A body that cannot be finished (deadline, client gone, render
//!   panic) ends with an error, so hyper aborts the connection instead of closing a chunked
//!   body that would look complete.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::exposition::{Dialect, Sink, Writer};
use super::metrics;
use crate::pipeline::Shared;

/// Plain-text bytes a render writes before handing them on (and, with gzip, compressed bytes
/// gathered before they are sent).
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks queued between a render and its HTTP body.
pub const CHANNEL_CHUNKS: usize = 2;

/// The two streamed endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/metrics`.
    Metrics,
    /// `/metrics/istio`.
    Istio,
}

impl Endpoint {
    /// The `endpoint` label value (the path).
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Metrics => "/metrics",
            Endpoint::Istio => "/metrics/istio",
        }
    }

    fn index(self) -> usize {
        match self {
            Endpoint::Metrics => 0,
            Endpoint::Istio => 1,
        }
    }
}

/// Render slots shared by both endpoints, and what happened to scrapes that did not get one
/// or did not finish.
#[derive(Debug)]
pub struct ScrapeGate {
    permits: Arc<Semaphore>,
    rejected: [AtomicU64; 2],
    cut: [AtomicU64; 2],
}

impl ScrapeGate {
    /// A gate with `slots` concurrent renders (at least 1).
    pub fn new(slots: usize) -> Self {
        ScrapeGate {
            permits: Arc::new(Semaphore::new(slots.max(1))),
            rejected: Default::default(),
            cut: Default::default(),
        }
    }

    /// Scrapes answered `503` per endpoint label.
    pub fn rejected(&self) -> [(&'static str, u64); 2] {
        Self::per_endpoint(&self.rejected)
    }

    /// Bodies cut short per endpoint label.
    pub fn cut(&self) -> [(&'static str, u64); 2] {
        Self::per_endpoint(&self.cut)
    }

    fn per_endpoint(c: &[AtomicU64; 2]) -> [(&'static str, u64); 2] {
        [Endpoint::Metrics, Endpoint::Istio]
            .map(|e| (e.label(), c[e.index()].load(Ordering::Relaxed)))
    }
}

/// One item on the render → body channel.
enum Piece {
    Data(Bytes),
    /// The render finished and everything was sent.
    Done,
}

/// The [`Sink`] of a streamed scrape: optional gzip, then the bounded channel.
struct ChannelSink {
    tx: mpsc::Sender<Piece>,
    rt: tokio::runtime::Handle,
    deadline: Instant,
    gzip: Option<GzEncoder<Vec<u8>>>,
}

impl ChannelSink {
    fn send(&self, piece: Piece) -> std::io::Result<()> {
        let sent = self
            .rt
            .block_on(tokio::time::timeout_at(self.deadline, self.tx.send(piece)));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "scraper went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "scraper did not read the body before its deadline",
            )),
        }
    }

    /// Sends the compressed bytes gathered so far once there are `at_least` of them.
    fn send_compressed(&mut self, at_least: usize) -> std::io::Result<()> {
        let Some(enc) = self.gzip.as_mut() else {
            return Ok(());
        };
        if enc.get_ref().len() < at_least.max(1) {
            return Ok(());
        }
        let out = std::mem::replace(enc.get_mut(), Vec::with_capacity(CHUNK_BYTES));
        self.send(Piece::Data(Bytes::from(out)))
    }
}

impl Sink for ChannelSink {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self.gzip.as_mut() {
            Some(enc) => {
                enc.write_all(chunk)?;
                self.send_compressed(CHUNK_BYTES)
            }
            None => self.send(Piece::Data(Bytes::copy_from_slice(chunk))),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(enc) = self.gzip.take() {
            let rest = enc.finish()?;
            if !rest.is_empty() {
                self.send(Piece::Data(Bytes::from(rest)))?;
            }
        }
        self.send(Piece::Done)
    }
}

/// True when `Accept-Encoding` lists gzip (without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';').map(str::trim);
            it.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && !it.any(|p| p.replace(' ', "") == "q=0")
        })
}

/// The scrape's deadline: `render_timeout_seconds`, or Prometheus' scrape timeout if smaller.
fn deadline(headers: &HeaderMap, render_timeout_seconds: u64) -> Instant {
    let limit = Duration::from_secs(render_timeout_seconds.max(1));
    let asked = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64);
    Instant::now() + asked.map_or(limit, |a| a.min(limit))
}

/// Serves one scrape of `endpoint` as a streamed (and, if accepted, gzip-compressed) body.
pub async fn scrape(s: Arc<Shared>, headers: &HeaderMap, endpoint: Endpoint) -> Response {
    let dialect = Dialect::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    let gzip = accepts_gzip(headers);
    let deadline = deadline(headers, s.istio.render_timeout_seconds);
    let permit =
        match tokio::time::timeout_at(deadline, s.scrapes.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                s.scrapes.rejected[endpoint.index()].fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(RETRY_AFTER, "5")],
                    "too many concurrent scrapes (istio.max_concurrent_renders)\n",
                )
                    .into_response();
            }
        };
    let (tx, rx) = mpsc::channel::<Piece>(CHANNEL_CHUNKS);
    let rt = tokio::runtime::Handle::current();
    let shared = Arc::clone(&s);
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        let sink = ChannelSink {
            tx,
            rt,
            deadline,
            gzip: gzip
                .then(|| GzEncoder::new(Vec::with_capacity(CHUNK_BYTES), Compression::fast())),
        };
        let mut w = Writer::streaming(dialect, Box::new(sink), CHUNK_BYTES);
        let counters = metrics::Counters::for_scrape(&shared);
        match endpoint {
            Endpoint::Metrics => metrics::render_into(&shared, &mut w, counters),
            Endpoint::Istio => metrics::render_istio_into(&shared, &mut w, counters),
        }
        if let Err(e) = w.finish_stream() {
            shared.scrapes.cut[endpoint.index()].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(endpoint = endpoint.label(), error = %e, "scrape cut short");
        }
    });
    // Done → end of body; a channel closed without Done (deadline, panic) → error, so the
    // connection is aborted rather than a short body ending cleanly.
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Piece::Data(b)) => Some((Ok(b), Some(rx))),
            Some(Piece::Done) => None,
            None => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "metrics render cut short",
                )),
                None,
            )),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(dialect.content_type()),
    );
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_accepted_unless_refused() {
        for (v, want) in [
            ("gzip", true),
            ("deflate, gzip;q=0.5", true),
            ("GZIP", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("gzip; q=0", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT_ENCODING, HeaderValue::from_static(v));
            assert_eq!(accepts_gzip(&h), want, "{v}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
