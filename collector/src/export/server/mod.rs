//! The HTTP server: listeners, connection handling (hyper), timeouts, the connection cap, TLS
//! and basic auth. The routes themselves are [`super::http::router`]; this module serves them.
//!
//! - **Timeouts** ([`HttpConfig`]): a request header must be complete `header_read_timeout_seconds`
//!   after its first byte (for a new connection or TLS handshake: after accept); an idle
//!   keep-alive connection closes after `idle_timeout_seconds`; a handler that takes longer than
//!   `request_timeout_seconds` answers 503 (tower-http `TimeoutLayer`), and a response that
//!   makes no progress for as long (a client that stopped reading) is cut.
//! - **Connection cap**: at most `max_connections`, and never more than `RLIMIT_NOFILE` minus
//!   `fd_reserve`, so the tailer, checkpoints and registry sources keep their descriptors
//!   whatever HTTP clients do. At the cap a new connection sheds the oldest idle one (a client
//!   part-way through a header counts as idle; connections that never completed a request go
//!   before kept-alive ones, so a scraper's reused connection survives a flood); connections wait in the kernel's backlog
//!   (no descriptor) while every open one is busy. `EMFILE` on accept sheds too and backs off
//!   instead of spinning.
//! - **TLS, basic auth, headers**: exporter-toolkit's web configuration file
//!   ([`web_config`]), re-read on change.
//! - **`/api/*`**: served with the metrics (default), on a listener of its own, or not at all.

pub mod auth;
pub mod conn;
pub mod web_config;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use conn::{ConnGuard, RequestGuard, Timeouts, Tracker};
use web_config::WebConfigHandle;

/// The `web:` section of the config file: how `run` serves HTTP. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// exporter-toolkit web configuration file (TLS, basic auth, headers), as node_exporter's
    /// `--web.config.file`; relative paths in it are relative to it. Default none (plain HTTP,
    /// no auth). Flag `--web.config.file` wins.
    pub config_file: Option<std::path::PathBuf>,
    /// Seconds a client has to send a complete request header, counted from its first byte (from
    /// accept for a new connection, TLS handshake included). Default 10.
    pub header_read_timeout_seconds: u64,
    /// Seconds a handler may take before the request answers 503; also the longest a response
    /// may make no progress. Default 60.
    pub request_timeout_seconds: u64,
    /// Seconds a keep-alive connection may sit idle between requests. Default 120 (longer
    /// than a 1-minute scrape interval, so Prometheus reuses its connection).
    pub idle_timeout_seconds: u64,
    /// Most open HTTP connections (all listeners together); further ones shed the oldest idle
    /// connection. Lowered to `RLIMIT_NOFILE - fd_reserve` when that is smaller. Default 2048:
    /// above a thousand slow clients, which then cost only their header timeout instead of
    /// a churn of shedding and reconnecting that a scrape waits behind (an idle connection
    /// costs ~10 KiB).
    pub max_connections: usize,
    /// File descriptors kept out of the HTTP server's reach for log files, checkpoints, registry
    /// sources and the runtime. Default 128.
    pub fd_reserve: u64,
    /// Where `/api/*` is served.
    pub api: ApiConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            config_file: None,
            header_read_timeout_seconds: 10,
            request_timeout_seconds: 60,
            idle_timeout_seconds: 120,
            max_connections: 2048,
            fd_reserve: 128,
            api: ApiConfig::default(),
        }
    }
}

/// `web.api:` — `/api/nodes` and `/api/unregistered` (client addresses: an operator's view).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve `/api/*` at all. Default true. Flag `--web.disable-api`.
    pub enabled: bool,
    /// Serve `/api/*` only on this address (e.g. `127.0.0.1:9465`) instead of the metrics
    /// listener. Default none (same listener). Flag `--web.api-listen-address`.
    pub listen_address: Option<SocketAddr>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen_address: None,
        }
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    All,
    /// Everything but `/api/*`.
    NoApi,
    /// Only `/api/*`.
    ApiOnly,
}

/// Errors setting the server up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The web config file is invalid.
    #[error(transparent)]
    WebConfig(#[from] web_config::WebConfigError),
    /// A setting is out of range.
    #[error("invalid web setting: {0}")]
    Invalid(String),
    /// Bind or runtime I/O.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The connection cap for `max_connections` under the process' `RLIMIT_NOFILE` soft limit,
/// after raising the soft limit to the hard one (as Go programs such as node_exporter do).
pub fn connection_cap(max_connections: usize, fd_reserve: u64) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nofile = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => u64::MAX,
    };
    let room = usize::try_from(nofile.saturating_sub(fd_reserve)).unwrap_or(usize::MAX);
    let cap = max_connections.min(room).max(1);
    if cap < max_connections {
        tracing::warn!(
            nofile,
            fd_reserve,
            max_connections,
            cap,
            "RLIMIT_NOFILE leaves room for fewer HTTP connections than max_connections"
        );
    }
    cap
}

/// A bound listener and what it serves.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub listener: TcpListener,
    /// Routes served there.
    pub role: Role,
}

/// Binds `addr`.
///
/// # Errors
/// [`ServerError::Io`] naming the address.
pub fn bind(addr: SocketAddr, role: Role) -> Result<Listener, ServerError> {
    let io = |source| ServerError::Io {
        what: format!("bind {addr}"),
        source,
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(io)?;
    socket.set_reuseaddr(true).map_err(io)?;
    socket.bind(addr).map_err(io)?;
    // Connections past the cap wait here, in the kernel, without a descriptor; a long queue
    // keeps a scrape's SYN from being dropped while attackers churn (the kernel caps it at
    // net.core.somaxconn).
    let listener = socket.listen(BACKLOG).map_err(io)?;
    Ok(Listener { listener, role })
}

/// The listen backlog (tokio's default is 1024).
pub const BACKLOG: u32 = 4096;

/// Everything [`serve`] needs besides the listeners.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Timeouts and caps.
    pub http: HttpConfig,
    /// The web config (TLS, auth, headers), if any.
    pub web: Option<Arc<WebConfigHandle>>,
}

/// Serves `app` on every listener until `shutdown` resolves, then lets in-flight requests
/// finish (up to `request_timeout_seconds`).
///
/// # Errors
/// [`ServerError::Invalid`] for zero timeouts.
pub async fn serve(
    listeners: Vec<Listener>,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let h = &opts.http;
    if h.header_read_timeout_seconds == 0
        || h.request_timeout_seconds == 0
        || h.idle_timeout_seconds == 0
        || h.max_connections == 0
    {
        return Err(ServerError::Invalid(
            "web timeouts and max_connections must be at least 1".into(),
        ));
    }
    let request_timeout = Duration::from_secs(h.request_timeout_seconds);
    let timeouts = Timeouts {
        header_read: Duration::from_secs(h.header_read_timeout_seconds),
        idle: Duration::from_secs(h.idle_timeout_seconds),
        // The handler's own timeout answers 503 first; this cuts responses nobody reads.
        stall: request_timeout + Duration::from_secs(5),
    };
    let tracker = Tracker::new(connection_cap(h.max_connections, h.fd_reserve), timeouts);
    let (tls, users) = match opts.web.as_ref().map(|w| w.current()) {
        Some(Ok(s)) => (s.tls.is_some(), !s.users.is_empty()),
        _ => (false, false),
    };
    if users && !tls {
        tracing::warn!(
            "basic_auth_users without tls_server_config: passwords cross the network in clear"
        );
    }
    let mut app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        request_timeout,
    ));
    if let Some(w) = &opts.web {
        app = app.layer(axum::middleware::from_fn_with_state(
            auth::Auth::new(w.clone()),
            auth::middleware,
        ));
    }
    tracing::info!(
        max_connections = tracker.cap,
        tls,
        web_config = ?opts.web.as_ref().map(|w| w.path().to_path_buf()),
        "HTTP server settings"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = {
        let tracker = tracker.clone();
        let period = timeouts.header_read.min(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if tracker.is_empty() {
                    tracker.opened.notified().await;
                }
                tick.tick().await;
                tracker.sweep();
            }
        })
    };
    let mut loops = Vec::new();
    for l in listeners {
        let local = l.listener.local_addr().map_err(|source| ServerError::Io {
            what: "local_addr".into(),
            source,
        })?;
        tracing::info!(listen = %local, role = ?l.role, tls, "listening");
        let app = app
            .clone()
            .layer(axum::middleware::from_fn_with_state(l.role, route_filter));
        loops.push(tokio::spawn(accept_loop(
            l.listener,
            app,
            tracker.clone(),
            if tls { opts.web.clone() } else { None },
            stop_rx.clone(),
        )));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // In-flight requests finish; idle connections closed at once (see `connection`).
    let drained = tokio::time::timeout(request_timeout, tracker.wait_below(1)).await;
    if drained.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "HTTP connections still open at shutdown"
        );
    }
    sweeper.abort();
    Ok(())
}

/// 404 for the routes a listener does not serve.
async fn route_filter(
    axum::extract::State(role): axum::extract::State<Role>,
    req: Request,
    next: Next,
) -> Response {
    let api = req.uri().path().starts_with("/api/") || req.uri().path() == "/api";
    let allowed = match role {
        Role::All => true,
        Role::NoApi => !api,
        Role::ApiOnly => api,
    };
    if allowed {
        next.run(req).await
    } else {
        (StatusCode::NOT_FOUND, "Not Found\n").into_response()
    }
}

/// Connections over the cap that may still be closing while the next one is accepted (the
/// descriptors come out of `fd_reserve`).
pub const SHED_SLACK: usize = 32;

/// Is this accept error the process or system running out of descriptors?
fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE || code == nix::libc::ENOBUFS || code == nix::libc::ENOMEM
    )
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tracker: Arc<Tracker>,
    tls: Option<Arc<WebConfigHandle>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut fd_warned: Option<std::time::Instant> = None;
    loop {
        // At most `cap` open, plus up to `SHED_SLACK` already told to close: accepting does
        // not wait for each shed connection's task to run, so a flood of new connections cannot
        // slow accepting to a crawl and keep a scrape waiting in the backlog.
        tokio::select! {
            () = tracker.wait_below(tracker.cap + SHED_SLACK) => {}
            _ = stop.changed() => return,
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((sock, _peer)) => {
                let _ = sock.set_nodelay(true);
                let guard = tracker.register();
                if tracker.open_not_closing() > tracker.cap
                    && !tracker.shed_oldest_idle(Some(guard.id))
                {
                    // Every other connection is busy: refuse this one (it closes here).
                    tracing::debug!("connection cap reached with every connection busy");
                    continue;
                }
                tokio::spawn(connection(
                    sock,
                    guard,
                    app.clone(),
                    tls.clone(),
                    stop.clone(),
                ));
            }
            Err(e) if out_of_fds(&e) => {
                if fd_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, open = tracker.len(), "accept: out of file descriptors; shedding idle connections (logged every 10 s at most)");
                    fd_warned = Some(std::time::Instant::now());
                }
                let shed = tracker.shed_oldest_idle(None);
                // Back off until a connection closes (or briefly, if none could be shed).
                let wait = if shed {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(100)
                };
                let closed = tracker.closed.notified();
                tokio::select! {
                    () = closed => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                // ECONNABORTED and friends: the next accept may well succeed.
                tracing::debug!(error = %e, "accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Serves one connection until it ends, is shed, times out or the server stops.
async fn connection(
    sock: tokio::net::TcpStream,
    guard: ConnGuard,
    app: Router,
    tls: Option<Arc<WebConfigHandle>>,
    mut stop: watch::Receiver<bool>,
) {
    let io = guard.track(sock);
    match tls {
        None => http1(TokioIo::new(io), guard, app, stop).await,
        Some(web) => {
            let config = match web.current() {
                Ok(s) => match &s.tls {
                    Some(c) => c.clone(),
                    None => {
                        tracing::warn!("web config no longer has tls_server_config; restart to serve plain HTTP");
                        return;
                    }
                },
                Err(_) => return,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake = tokio::select! {
                r = acceptor.accept(io) => r,
                () = guard.conn.close.notified() => return,
                _ = stop.changed() => return,
            };
            match handshake {
                Ok(stream) => http1(TokioIo::new(stream), guard, app, stop).await,
                Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
            }
        }
    }
}

async fn http1<I>(io: I, guard: ConnGuard, app: Router, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let guard = Arc::new(guard);
    let svc = {
        let guard = guard.clone();
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let request = guard.begin_request();
            let app = app.clone();
            async move {
                let resp = app.oneshot(req.map(Body::new)).await;
                Ok::<_, Infallible>(match resp {
                    Ok(r) => r.map(|b| {
                        Body::new(Guarded {
                            inner: b,
                            _request: request,
                        })
                    }),
                    Err(never) => match never {},
                })
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our sweeper times headers and idle keep-alive separately; hyper's header timer would
    // also run while a keep-alive connection waits for its next request.
    builder.header_read_timeout(None);
    builder.max_buf_size(64 * 1024);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = guard.conn.close.notified() => return,
            _ = stop.changed(), if !stopping => {
                // Idle (incl. part-way through a header): close now; busy: finish the response.
                if guard.conn.is_idle() {
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A response body that ends its request's busy phase when it ends or is dropped.
struct Guarded {
    inner: Body,
    _request: RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
