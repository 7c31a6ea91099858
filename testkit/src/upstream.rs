//! A stub Xboard panel (the upstream behind the gateway).
//!
//! Serves the UniProxy API that XrayR / V2bX nodes call, on
//! `127.0.0.1:<ephemeral>` from its own thread and tokio runtime:
//!
//! | method | path | body |
//! | --- | --- | --- |
//! | GET | `/api/v1/server/UniProxy/config` | node config JSON |
//! | GET | `/api/v1/server/UniProxy/user` | user list JSON (ETag; `If-None-Match` → 304) |
//! | POST | `/api/v1/server/UniProxy/push` | `{"data":true}` |
//! | POST | `/api/v1/server/UniProxy/alive` | `{"data":true}` |
//! | POST | `/api/v1/server/UniProxy/status` | `{"data":true}` |
//! | GET | `/api/v1/server/UniProxy/alivelist` | `{"alive":{}}` |
//!
//! Anything else is a JSON 404 (wrong method on a known path: 405).
//! Request headers control the response, so tests are deterministic:
//! `x-test-status: <code>` forces the status (e.g. 503, 500, 404, 422, 304;
//! 204/304 get no body) and `x-test-delay-ms: <n>` delays the response
//! (capped at 30 s).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::Router;
use tokio::sync::oneshot;

/// Path prefix of Xboard's node API.
pub const UNIPROXY_PREFIX: &str = "/api/v1/server/UniProxy";
/// Header forcing the response status.
pub const STATUS_HEADER: &str = "x-test-status";
/// Header delaying the response by N milliseconds.
pub const DELAY_HEADER: &str = "x-test-delay-ms";
/// ETag served on `/user`; send it in `If-None-Match` to get a 304.
pub const USER_ETAG: &str = "\"xboard-users-v1\"";
const MAX_DELAY_MS: u64 = 30_000;

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    by_path: Mutex<BTreeMap<String, u64>>,
}

/// A running stub Xboard server; stopped on drop.
pub struct XboardStub {
    addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for XboardStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XboardStub")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl XboardStub {
    /// Binds 127.0.0.1:0 and starts serving on a background thread.
    pub fn start() -> Result<Self> {
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("bind stub upstream on 127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let c2 = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("xboard-stub".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let app = Router::new().fallback(move |m, u, h, b| {
                        let c = Arc::clone(&c2);
                        async move { handle(c, m, u, h, b).await }
                    });
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r { eprintln!("xboard stub: serve error: {e}"); }
                        }
                        _ = rx => {}
                    }
                });
                // Abort in-flight connections (Envoy keeps upstream conns alive).
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .context("spawn stub upstream thread")?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("stub upstream did not start")??;
        Ok(Self {
            addr,
            counters,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The listening address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Total number of requests received.
    pub fn request_count(&self) -> u64 {
        self.counters.total.load(Ordering::SeqCst)
    }

    /// Number of requests received for `path` (without query string).
    pub fn requests_for(&self, path: &str) -> u64 {
        self.counters
            .by_path
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Snapshot of per-path request counts.
    pub fn counts_by_path(&self) -> BTreeMap<String, u64> {
        self.counters
            .by_path
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl Drop for XboardStub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json(status: StatusCode, body: &str) -> Response<Body> {
    let mut b = Response::builder().status(status);
    if status == StatusCode::NOT_MODIFIED || status == StatusCode::NO_CONTENT {
        return b.body(Body::empty()).unwrap_or_default();
    }
    b = b.header("content-type", "application/json");
    b.body(Body::from(body.to_owned())).unwrap_or_default()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

async fn handle(
    counters: Arc<Counters>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> Response<Body> {
    let path = uri.path().to_owned();
    counters.total.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut m) = counters.by_path.lock() {
        *m.entry(path.clone()).or_insert(0) += 1;
    }

    if let Some(ms) = header_str(&headers, DELAY_HEADER).and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_DELAY_MS))).await;
    }

    let forced = header_str(&headers, STATUS_HEADER)
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok());

    let (status, body): (StatusCode, String) = match (
        &method,
        path.strip_prefix(UNIPROXY_PREFIX).unwrap_or(""),
    ) {
        (&Method::GET, "/config") => (
            StatusCode::OK,
            r#"{"server_port":443,"network":"tcp","networkSettings":null,"tls":1,"flow":"xtls-rprx-vision","server_name":"www.example.com","base_config":{"push_interval":60,"pull_interval":60},"routes":[]}"#.into(),
        ),
        (&Method::GET, "/user") => {
            if header_str(&headers, "if-none-match") == Some(USER_ETAG) {
                (StatusCode::NOT_MODIFIED, String::new())
            } else {
                (
                    StatusCode::OK,
                    r#"{"users":[{"id":1,"uuid":"00000000-0000-4000-8000-000000000001","speed_limit":0,"device_limit":0},{"id":2,"uuid":"00000000-0000-4000-8000-000000000002","speed_limit":0,"device_limit":3}]}"#.into(),
                )
            }
        }
        (&Method::POST, "/push" | "/alive" | "/status") => {
            (StatusCode::OK, r#"{"data":true}"#.into())
        }
        (&Method::GET, "/alivelist") => (StatusCode::OK, r#"{"alive":{}}"#.into()),
        (_, "/config" | "/user" | "/push" | "/alive" | "/status" | "/alivelist") => (
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"message":"method not allowed"}"#.into(),
        ),
        _ => (StatusCode::NOT_FOUND, r#"{"message":"not found"}"#.into()),
    };

    let mut resp = match forced {
        Some(code) => json(
            code,
            &format!(
                r#"{{"message":"forced by {STATUS_HEADER}","status":{}}}"#,
                code.as_u16()
            ),
        ),
        None => json(status, &body),
    };
    if path == format!("{UNIPROXY_PREFIX}/user") {
        if let Ok(v) = USER_ETAG.parse() {
            resp.headers_mut().insert("etag", v);
        }
    }
    resp
}
