//! A raw HTTP/1.1 client that prefixes each connection with a PROXY protocol
//! v1 header, the way an AWS NLB (with proxy protocol enabled) talks to an
//! Istio ingress gateway.
//!
//! The TCP connection always goes to the given (loopback) gateway address;
//! the fake client address only appears *inside* the PROXY header.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// User agent XrayR sends (resty's default).
pub const XRAYR_USER_AGENT: &str = "go-resty/2.7.0 (https://github.com/go-resty/resty)";
/// Default `Host` header.
pub const DEFAULT_HOST: &str = "panel.example.com";
/// Upper bound on the number of requests [`send_many`] accepts.
pub const MAX_BATCH: usize = 10_000;

static NEXT_SOURCE_PORT: AtomicU16 = AtomicU16::new(0);

fn next_source_port() -> u16 {
    // Deterministic sequence 40000..=59999 within one process.
    40_000 + NEXT_SOURCE_PORT.fetch_add(1, Ordering::Relaxed) % 20_000
}

/// One request to send through the gateway.
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path including query string.
    pub path: String,
    /// `Host` header.
    pub host: String,
    /// Fake client address placed in the PROXY header (`None`: no PROXY header
    /// at all, for testing plain connections).
    pub source: Option<IpAddr>,
    /// Fake client port in the PROXY header (`None`: a per-process sequence).
    pub source_port: Option<u16>,
    /// Destination address in the PROXY header (`None`: 127.0.0.1 / ::1 to
    /// match the source family).
    pub dest: Option<IpAddr>,
    /// Destination port in the PROXY header.
    pub dest_port: u16,
    /// `User-Agent` header (`None`: omitted).
    pub user_agent: Option<String>,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
    /// Request body (sent with `Content-Length`).
    pub body: Option<Vec<u8>>,
    /// If set, the client closes the socket this long after sending the
    /// request, without reading the response; [`send`] then returns `Ok(0)`.
    pub disconnect_after: Option<Duration>,
    /// Overall timeout for connect + write + read.
    pub timeout: Duration,
}

impl TestRequest {
    /// A request with the given method and path; source 203.0.113.11, XrayR's
    /// user agent, host [`DEFAULT_HOST`], timeout 10 s.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            host: DEFAULT_HOST.to_owned(),
            source: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11))),
            source_port: None,
            dest: None,
            dest_port: 8443,
            user_agent: Some(XRAYR_USER_AGENT.to_owned()),
            headers: Vec::new(),
            body: None,
            disconnect_after: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// `POST path` (empty body unless [`TestRequest::body`] is used).
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Sets the fake client address carried in the PROXY header.
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    /// Parses and sets the fake client address (errors on a bad literal).
    pub fn from_str_ip(self, ip: &str) -> Result<Self> {
        Ok(self.from_ip(ip.parse().with_context(|| format!("bad IP {ip:?}"))?))
    }

    /// Sets the fake client port carried in the PROXY header.
    pub fn source_port(mut self, port: u16) -> Self {
        self.source_port = Some(port);
        self
    }

    /// Sends no PROXY header at all.
    pub fn without_proxy_header(mut self) -> Self {
        self.source = None;
        self
    }

    /// Sets the `Host` header.
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }

    /// Sets (or with `None`, removes) the `User-Agent` header.
    pub fn user_agent(mut self, ua: Option<&str>) -> Self {
        self.user_agent = ua.map(str::to_owned);
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Asks the stub upstream to answer with `code` (`x-test-status`).
    pub fn force_status(self, code: u16) -> Self {
        self.header(crate::upstream::STATUS_HEADER, &code.to_string())
    }

    /// Asks the stub upstream to delay its response (`x-test-delay-ms`).
    pub fn delay_ms(self, ms: u64) -> Self {
        self.header(crate::upstream::DELAY_HEADER, &ms.to_string())
    }

    /// Close the connection `after` sending, without reading the response.
    pub fn disconnect_after(mut self, after: Duration) -> Self {
        self.disconnect_after = Some(after);
        self
    }

    /// Sets the overall timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The PROXY protocol v1 header line (with `\r\n`), or `None`.
    pub fn proxy_header(&self) -> Option<String> {
        let src = self.source?;
        let sport = self.source_port.unwrap_or_else(next_source_port);
        let (fam, dst) = match src {
            IpAddr::V4(_) => ("TCP4", self.dest.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            IpAddr::V6(_) => ("TCP6", self.dest.unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST))),
        };
        Some(format!(
            "PROXY {fam} {src} {dst} {sport} {}\r\n",
            self.dest_port
        ))
    }

    /// The HTTP/1.1 request bytes (without the PROXY header).
    pub fn http_bytes(&self) -> Vec<u8> {
        self.http_bytes_with(true)
    }

    fn http_bytes_with(&self, close: bool) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.path, self.host
        );
        if let Some(ua) = &self.user_agent {
            head.push_str(&format!("User-Agent: {ua}\r\n"));
        }
        head.push_str("Accept: application/json\r\n");
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = self.body.as_deref().unwrap_or_default();
        if !body.is_empty() || self.method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            if !body.is_empty() {
                head.push_str("Content-Type: application/json\r\n");
            }
        }
        head.push_str(if close {
            "Connection: close\r\n\r\n"
        } else {
            "\r\n"
        });
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

fn remaining(deadline: Instant) -> Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        bail!("request timed out");
    }
    Ok(deadline - now)
}

/// Sends `req` to the gateway at `gateway` (must be a loopback address) and
/// returns the response status code, reading the whole response until the
/// server closes the connection (so Envoy never sees an early disconnect).
/// Returns `Ok(0)` when [`TestRequest::disconnect_after`] is set.
pub fn send(gateway: SocketAddr, req: &TestRequest) -> Result<u16> {
    send_full(gateway, req).map(|(code, _)| code)
}

/// Like [`send`] but also returns the raw response bytes (head + body).
pub fn send_full(gateway: SocketAddr, req: &TestRequest) -> Result<(u16, Vec<u8>)> {
    anyhow::ensure!(
        gateway.ip().is_loopback(),
        "refusing to connect to non-loopback address {gateway}"
    );
    let deadline = Instant::now() + req.timeout;
    let mut stream = TcpStream::connect_timeout(&gateway, remaining(deadline)?)
        .with_context(|| format!("connect to gateway {gateway}"))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let mut bytes = Vec::new();
    if let Some(h) = req.proxy_header() {
        bytes.extend_from_slice(h.as_bytes());
    }
    bytes.extend_from_slice(&req.http_bytes());
    stream
        .write_all(&bytes)
        .with_context(|| format!("write request to {gateway}"))?;
    stream.flush()?;

    if let Some(after) = req.disconnect_after {
        std::thread::sleep(after.min(remaining(deadline)?));
        let _ = stream.shutdown(Shutdown::Both);
        drop(stream);
        return Ok((0, Vec::new()));
    }

    let mut resp = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(remaining(deadline).with_context(|| {
            format!(
                "timed out after {:?} reading response to {} {}",
                req.timeout, req.method, req.path
            )
        })?))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!(
                    "timed out after {:?} reading response to {} {}",
                    req.timeout,
                    req.method,
                    req.path
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !resp.is_empty() => break,
            Err(e) => return Err(e).context("read response"),
        }
    }
    let code = parse_status(&resp).with_context(|| {
        format!(
            "bad response to {} {}: {:?}",
            req.method,
            req.path,
            String::from_utf8_lossy(&resp[..resp.len().min(200)])
        )
    })?;
    Ok((code, resp))
}

/// One kept-alive connection through the gateway, as XrayR's HTTP client reuses one through
/// an NLB: a single PROXY header (one client `ip:port`), then any number of requests. Envoy
/// logs every request on it with the same `downstream_remote_address`, so with its sorted JSON
/// keys consecutive lines share their first ~300 bytes.
#[derive(Debug)]
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Connects to `gateway` (loopback only) and sends the PROXY header of `client`.
    ///
    /// # Errors
    /// Connection or write failures.
    pub fn connect(gateway: SocketAddr, client: &TestRequest) -> Result<KeepAlive> {
        anyhow::ensure!(
            gateway.ip().is_loopback(),
            "refusing to connect to non-loopback address {gateway}"
        );
        let stream = TcpStream::connect_timeout(&gateway, client.timeout)
            .with_context(|| format!("connect to gateway {gateway}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(client.timeout))?;
        stream.set_write_timeout(Some(client.timeout))?;
        let mut k = KeepAlive {
            stream,
            buf: Vec::new(),
        };
        if let Some(h) = client.proxy_header() {
            k.stream.write_all(h.as_bytes())?;
        }
        Ok(k)
    }

    /// Sends `req` (its PROXY settings are ignored: the connection has one) and reads its
    /// response (`Content-Length` or chunked); returns the status code.
    ///
    /// # Errors
    /// I/O errors, a closed connection or a malformed response.
    pub fn send(&mut self, req: &TestRequest) -> Result<u16> {
        self.stream.write_all(&req.http_bytes_with(false))?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let code = parse_status(&self.buf[..head_end])?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        self.buf.drain(..head_end);
        if let Some(len) = header("content-length:") {
            let len: usize = len.parse()?;
            while self.buf.len() < len {
                self.fill()?;
            }
            self.buf.drain(..len);
        } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill()?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    self.fill()?;
                }
                self.buf.drain(..need);
                if size == 0 {
                    break;
                }
            }
        }
        Ok(code)
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).context("read response")?;
        anyhow::ensure!(n > 0, "gateway closed the kept-alive connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn parse_status(resp: &[u8]) -> Result<u16> {
    let line_end = resp
        .windows(2)
        .position(|w| w == b"\r\n")
        .context("no status line")?;
    let line = std::str::from_utf8(&resp[..line_end])?;
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    anyhow::ensure!(version.starts_with("HTTP/1."), "not HTTP/1.x: {line}");
    let code = parts.next().context("no status code")?.parse::<u16>()?;
    Ok(code)
}

/// Sends each request sequentially on its own connection and returns the
/// status codes in order. Bounded: at most [`MAX_BATCH`] requests, each with
/// its own timeout; the first error aborts the batch.
pub fn send_many(gateway: SocketAddr, reqs: &[TestRequest]) -> Result<Vec<u16>> {
    anyhow::ensure!(
        reqs.len() <= MAX_BATCH,
        "batch of {} exceeds MAX_BATCH {MAX_BATCH}",
        reqs.len()
    );
    reqs.iter()
        .enumerate()
        .map(|(i, r)| {
            send(gateway, r).with_context(|| format!("request #{i}: {} {}", r.method, r.path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_header_v4_and_v6() -> Result<()> {
        let r = TestRequest::get("/").source_port(40001);
        assert_eq!(
            r.proxy_header().as_deref(),
            Some("PROXY TCP4 203.0.113.11 127.0.0.1 40001 8443\r\n")
        );
        let r6 = r.from_str_ip("2001:db8:1::10")?;
        assert_eq!(
            r6.proxy_header().as_deref(),
            Some("PROXY TCP6 2001:db8:1::10 ::1 40001 8443\r\n")
        );
        Ok(())
    }

    #[test]
    fn http_bytes_have_headers_and_length() {
        let r = TestRequest::post("/p?x=1")
            .header("X-Forwarded-For", "198.51.100.99")
            .body("{}");
        let s = String::from_utf8_lossy(&r.http_bytes()).into_owned();
        assert!(s.starts_with("POST /p?x=1 HTTP/1.1\r\nHost: panel.example.com\r\n"));
        assert!(s.contains("X-Forwarded-For: 198.51.100.99\r\n"));
        assert!(s.contains("Content-Length: 2\r\n"));
        assert!(s.ends_with("Connection: close\r\n\r\n{}"));
    }

    #[test]
    fn parses_status_line() -> Result<()> {
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")?,
            503
        );
        assert!(parse_status(b"garbage").is_err());
        Ok(())
    }
}
