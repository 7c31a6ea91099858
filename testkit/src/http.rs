//! Minimal blocking HTTP helpers (loopback only) built on `reqwest::blocking`.
//!
//! Do not call these from inside a tokio runtime (reqwest's blocking client
//! panics there); the harness is meant for plain `#[test]` functions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::response::IntoResponse;

/// Default per-request timeout used by the helpers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking client with a request timeout and no proxy.
pub fn client(timeout: Duration) -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .context("build reqwest blocking client")
}

/// Sends `req` (described as `what` in errors), returning status code and body text (any
/// status).
fn status_and_body(req: reqwest::blocking::RequestBuilder, what: &str) -> Result<(u16, String)> {
    let resp = req.send().with_context(|| what.to_owned())?;
    let code = resp.status().as_u16();
    let body = resp
        .text()
        .with_context(|| format!("read body of {what}"))?;
    Ok((code, body))
}

/// `GET url`, returning status code and body text (any status).
pub fn get(url: &str) -> Result<(u16, String)> {
    status_and_body(client(DEFAULT_TIMEOUT)?.get(url), &format!("GET {url}"))
}

/// `POST url` with an empty body, returning status code and body text.
pub fn post(url: &str) -> Result<(u16, String)> {
    status_and_body(client(DEFAULT_TIMEOUT)?.post(url), &format!("POST {url}"))
}

/// `GET http://<addr>/metrics`; errors unless the status is 200.
pub fn scrape(addr: SocketAddr) -> Result<String> {
    let url = format!("http://{addr}/metrics");
    let (code, body) = get(&url)?;
    anyhow::ensure!(code == 200, "GET {url} returned {code}: {body}");
    Ok(body)
}

/// `GET url` with `query` pairs appended by reqwest's query builder (percent-encoded as
/// `application/x-www-form-urlencoded`), returning status code and body text (any status).
pub fn get_with_query(url: &str, query: &[(&str, &str)]) -> Result<(u16, String)> {
    status_and_body(
        client(DEFAULT_TIMEOUT)?.get(url).query(query),
        &format!("GET {url} {query:?}"),
    )
}

/// State shared by a [`StaticServer`]'s handler and its handle.
#[derive(Debug, Default)]
struct Served {
    body: Mutex<String>,
    hits: AtomicU64,
}

/// An axum server on `127.0.0.1:<ephemeral>` that answers every request (any path, any
/// method) with the same, replaceable body as `text/plain; version=0.0.4` — e.g. a fake
/// `/metrics` endpoint for Prometheus tests. It runs on its own single-threaded tokio runtime
/// in a background thread, so plain `#[test]` functions can use it; stopped (gracefully) on
/// drop.
pub struct StaticServer {
    addr: SocketAddr,
    served: Arc<Served>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StaticServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn serve_static(State(served): State<Arc<Served>>) -> impl IntoResponse {
    served.hits.fetch_add(1, Ordering::SeqCst);
    let body = served.body.lock().map(|g| g.clone()).unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

impl StaticServer {
    /// Serves `body` as `text/plain; version=0.0.4` on `127.0.0.1:<ephemeral>`.
    pub fn start(body: impl Into<String>) -> Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let served = Arc::new(Served {
            body: Mutex::new(body.into()),
            hits: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .fallback(serve_static)
            .with_state(Arc::clone(&served));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build tokio runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("static-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .context("spawn static server")?;
        ready_rx
            .recv()
            .context("static server thread ended")?
            .context("register listener with tokio")?;
        Ok(Self {
            addr,
            served,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the served body.
    pub fn set_body(&self, body: impl Into<String>) {
        if let Ok(mut g) = self.served.body.lock() {
            *g = body.into();
        }
    }

    /// Number of requests served.
    pub fn hits(&self) -> u64 {
        self.served.hits.load(Ordering::SeqCst)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn static_server_serves_the_current_body_and_counts_hits() {
        let s = StaticServer::start("a 1\n").unwrap();
        let url = format!("http://{}/metrics", s.addr());
        assert_eq!(get(&url).unwrap(), (200, "a 1\n".to_owned()));
        s.set_body("a 2\n");
        assert_eq!(get(&url).unwrap(), (200, "a 2\n".to_owned()));
        assert_eq!(s.hits(), 2);
    }
}
