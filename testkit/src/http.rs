//! Minimal blocking HTTP helpers (loopback only) built on `reqwest::blocking`.
//!
//! Do not call these from inside a tokio runtime (reqwest's blocking client
//! panics there); the harness is meant for plain `#[test]` functions.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

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

/// `GET url`, returning status code and body text (any status).
pub fn get(url: &str) -> Result<(u16, String)> {
    let resp = client(DEFAULT_TIMEOUT)?
        .get(url)
        .send()
        .with_context(|| format!("GET {url}"))?;
    let code = resp.status().as_u16();
    let body = resp
        .text()
        .with_context(|| format!("read body of GET {url}"))?;
    Ok((code, body))
}

/// `POST url` with an empty body, returning status code and body text.
pub fn post(url: &str) -> Result<(u16, String)> {
    let resp = client(DEFAULT_TIMEOUT)?
        .post(url)
        .send()
        .with_context(|| format!("POST {url}"))?;
    let code = resp.status().as_u16();
    let body = resp
        .text()
        .with_context(|| format!("read body of POST {url}"))?;
    Ok((code, body))
}

/// `GET http://<addr>/metrics`; errors unless the status is 200.
pub fn scrape(addr: SocketAddr) -> Result<String> {
    let url = format!("http://{addr}/metrics");
    let (code, body) = get(&url)?;
    anyhow::ensure!(code == 200, "GET {url} returned {code}: {body}");
    Ok(body)
}

/// Percent-encodes a string for use in a URL query component.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A tiny blocking HTTP/1.1 server on 127.0.0.1 that answers every request
/// with the same (replaceable) body, e.g. a fake `/metrics` endpoint for
/// Prometheus tests. Stopped on drop.
pub struct StaticServer {
    addr: SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StaticServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StaticServer {
    /// Serves `body` as `text/plain; version=0.0.4` on `127.0.0.1:<ephemeral>`.
    pub fn start(body: impl Into<String>) -> Result<Self> {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};

        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let body = Arc::new(Mutex::new(body.into()));
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, h, s) = (Arc::clone(&body), Arc::clone(&hits), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("static-http".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let (mut conn, _) = match listener.accept() {
                        Ok(c) => c,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let text = b.lock().map(|g| g.clone()).unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = conn.write_all(resp.as_bytes());
                }
            })
            .context("spawn static server")?;
        Ok(Self {
            addr,
            body,
            hits,
            stop,
            thread: Some(thread),
        })
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the served body.
    pub fn set_body(&self, body: impl Into<String>) {
        if let Ok(mut g) = self.body.lock() {
            *g = body.into();
        }
    }

    /// Number of requests served.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::urlencode;

    #[test]
    fn urlencode_encodes_promql() {
        assert_eq!(
            urlencode(r#"up{job="a b"} == 1"#),
            "up%7Bjob%3D%22a%20b%22%7D%20%3D%3D%201"
        );
    }
}
