//! The deterministic XrayR/V2bX-like traffic plan behind `fixtures/`, the
//! registry it is attributed against, the expected per-node truth, and a
//! checker that re-derives the truth from a real access log.
//!
//! Used by the `gen-fixtures` binary and by tests that verify the checked-in
//! fixture files are consistent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::client::TestRequest;
use crate::envoy::LogFormat;
use crate::upstream::{UNIPROXY_PREFIX, USER_ETAG};

/// The obviously fake panel token every planned request carries.
pub const FAKE_TOKEN: &str = "FAKE-TOKEN-do-not-use";
/// Key used for traffic from addresses not in the registry.
pub const UNREGISTERED: &str = "unregistered";
/// A user agent containing a double quote (stress for TEXT parsing).
pub const QUOTED_USER_AGENT: &str = "Mozilla/5.0 (compatible; \"quoted\" probe/1.0)";
/// V2bX's user agent (resty, newer version).
pub const V2BX_USER_AGENT: &str = "go-resty/2.16.2 (https://github.com/go-resty/resty)";
/// Number of polling rounds in the plan.
pub const ROUNDS: u32 = 10;

/// A node that sends traffic in the plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanNode {
    /// Node name (registry `name`).
    pub name: &'static str,
    /// Xboard node id (`node_id` query parameter).
    pub node_id: u32,
    /// Address the node's traffic comes from (PROXY header source).
    pub source: &'static str,
    /// Registry `addresses` (empty: not in the registry).
    pub registry_addresses: &'static [&'static str],
    /// `node_type` query parameter.
    pub node_type: &'static str,
    /// Registry labels.
    pub labels: &'static [(&'static str, &'static str)],
    /// User agent the node's agent sends.
    pub user_agent: &'static str,
}

impl PlanNode {
    /// Whether the node is in `registry.yaml`.
    pub fn registered(&self) -> bool {
        !self.registry_addresses.is_empty()
    }
}

/// All nodes of the plan; the last one (`sg-01`) is not registered.
pub const NODES: &[PlanNode] = &[
    PlanNode {
        name: "jp-01",
        node_id: 1,
        source: "203.0.113.11",
        registry_addresses: &["203.0.113.11"],
        node_type: "vless",
        labels: &[("app", "xrayr"), ("region", "jp"), ("provider", "vultr")],
        user_agent: crate::client::XRAYR_USER_AGENT,
    },
    PlanNode {
        name: "jp-02",
        node_id: 2,
        source: "203.0.113.12",
        registry_addresses: &["203.0.113.12"],
        node_type: "vless",
        labels: &[("app", "xrayr"), ("region", "jp"), ("provider", "vultr")],
        user_agent: crate::client::XRAYR_USER_AGENT,
    },
    PlanNode {
        name: "us-01",
        node_id: 3,
        source: "198.51.100.5",
        registry_addresses: &["198.51.100.0/28"],
        node_type: "vless",
        labels: &[("app", "xrayr"), ("region", "us"), ("provider", "aws")],
        user_agent: crate::client::XRAYR_USER_AGENT,
    },
    PlanNode {
        name: "de-01",
        node_id: 4,
        source: "2001:db8:1::10",
        registry_addresses: &["2001:db8:1::/64"],
        node_type: "vmess",
        labels: &[("app", "v2bx"), ("region", "de"), ("provider", "hetzner")],
        user_agent: V2BX_USER_AGENT,
    },
    PlanNode {
        name: "sg-01",
        node_id: 5,
        source: "192.0.2.50",
        registry_addresses: &[],
        node_type: "vless",
        labels: &[],
        user_agent: crate::client::XRAYR_USER_AGENT,
    },
];

/// One planned request and what it must produce.
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    /// Sending node's name (`sg-01` for the unregistered one).
    pub node: &'static str,
    /// Registry attribution: node name, or [`UNREGISTERED`].
    pub attributed_to: &'static str,
    /// The request.
    pub request: TestRequest,
    /// Status code the client sees (0 = client disconnected first) and Envoy logs.
    pub expected_code: u16,
    /// Endpoint kind: `config`, `user`, `push`, `alive`, `status`, `alivelist`, `other`.
    pub endpoint: &'static str,
    /// Upstream delay injected (ms), if any.
    pub delay_ms: Option<u64>,
    /// Tags for special cases (`forged_xff`, `client_disconnect`, ...).
    pub tags: Vec<&'static str>,
}

fn query(n: &PlanNode) -> String {
    format!(
        "node_id={}&node_type={}&token={FAKE_TOKEN}",
        n.node_id, n.node_type
    )
}

fn base(n: &PlanNode, method: &str, endpoint: &'static str) -> Result<PlannedRequest> {
    let path = format!("{UNIPROXY_PREFIX}/{endpoint}?{}", query(n));
    let request = TestRequest::new(method, &path)
        .from_str_ip(n.source)?
        .user_agent(Some(n.user_agent));
    Ok(PlannedRequest {
        node: n.name,
        attributed_to: if n.registered() { n.name } else { UNREGISTERED },
        request,
        expected_code: 200,
        endpoint,
        delay_ms: None,
        tags: Vec::new(),
    })
}

/// Deterministic pseudo-random hex (xorshift), for the long path segment.
fn pseudo_random_hex(len: usize, mut seed: u64) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        s.push_str(&format!("{seed:016x}"));
    }
    s.truncate(len);
    s
}

impl PlannedRequest {
    fn status(mut self, code: u16) -> Self {
        self.request = self.request.force_status(code);
        self.expected_code = code;
        self
    }
    fn delay(mut self, ms: u64) -> Self {
        self.request = self.request.delay_ms(ms);
        self.delay_ms = Some(ms);
        self
    }
    fn tag(mut self, t: &'static str) -> Self {
        self.tags.push(t);
        self
    }
}

/// The full traffic plan, in sending order (identical for JSON and TEXT runs).
pub fn plan() -> Result<Vec<PlannedRequest>> {
    let mut out = Vec::new();
    let by = |name: &str| -> Result<&'static PlanNode> {
        NODES
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    };
    for round in 0..ROUNDS {
        for n in NODES {
            // 1. config
            let mut r = base(n, "GET", "config")?;
            match (n.name, round) {
                ("jp-02", 1) => {
                    r.request = r.request.user_agent(Some(QUOTED_USER_AGENT));
                    r = r.tag("quoted_user_agent");
                }
                ("jp-02", 6 | 7) => r = r.status(500),
                ("jp-01", 2) => r = r.delay(30),
                ("de-01", 6) => r = r.delay(600),
                ("us-01", 5) => {
                    r.request = r.request.header("X-Forwarded-For", "203.0.113.11");
                    r = r.tag("forged_xff");
                }
                ("us-01", 7) => {
                    // Upstream answers after 1 s; the client hangs up after 100 ms.
                    r = r.delay(1000);
                    r.request = r.request.disconnect_after(Duration::from_millis(100));
                    r.expected_code = 0;
                    r = r.tag("client_disconnect");
                }
                _ => {}
            }
            out.push(r);

            // 2. user (odd rounds: conditional request -> 304)
            let mut r = base(n, "GET", "user")?;
            if round % 2 == 1 {
                r.request = r.request.header("If-None-Match", USER_ETAG);
                r.expected_code = 304;
            }
            if (n.name, round) == ("us-01", 4) {
                r = r.delay(120);
            }
            out.push(r);

            // 3. push
            let mut r = base(n, "POST", "push")?.tap_body(r#"{"1":[1024,20480],"2":[0,512]}"#);
            match (n.name, round) {
                ("jp-02", 2..=5) => r = r.status(503),
                ("de-01", 4) => r = r.status(422),
                _ => {}
            }
            out.push(r);

            // 4. alive
            let mut r = base(n, "POST", "alive")?.tap_body(r#"{"1":["100.64.0.1_1"]}"#);
            if (n.name, round) == ("jp-02", 8) {
                r = r.status(503);
            }
            out.push(r);

            // V2bX also reports status and reads the alive list.
            if n.name == "de-01" {
                out.push(base(n, "POST", "status")?.tap_body(
                    r#"{"cpu":1.5,"mem":{"total":1024,"used":512},"swap":{"total":0,"used":0},"disk":{"total":10,"used":5}}"#,
                ));
                out.push(base(n, "GET", "alivelist")?);
            }
        }
        // Scanner-ish requests to unknown paths (stub answers 404).
        if round == 0 {
            let n = by("sg-01")?;
            let mut r = base(n, "GET", "other")?;
            r.request = TestRequest::get("/admin/login?x=1")
                .from_str_ip(n.source)?
                .user_agent(Some(n.user_agent));
            r.expected_code = 404;
            out.push(r.tag("unknown_path"));
        }
        if round == 3 {
            let n = by("jp-01")?;
            let mut r = base(n, "GET", "other")?;
            let seg = pseudo_random_hex(240, 0x9e37_79b9_7f4a_7c15);
            r.request = TestRequest::get(&format!("{UNIPROXY_PREFIX}/{seg}?{}", query(n)))
                .from_str_ip(n.source)?
                .user_agent(Some(n.user_agent));
            r.expected_code = 404;
            out.push(r.tag("long_path"));
        }
        if round == ROUNDS - 1 {
            let n = by("us-01")?;
            let mut r = base(n, "GET", "other")?;
            r.request = TestRequest::get("/admin/login?x=1")
                .from_str_ip(n.source)?
                .user_agent(Some(n.user_agent));
            r.expected_code = 404;
            out.push(r.tag("unknown_path"));
        }
    }
    Ok(out)
}

impl PlannedRequest {
    fn tap_body(mut self, body: &str) -> Self {
        self.request = self.request.body(body);
        self
    }
}

/// Per-node truth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTruth {
    /// All requests (access-log lines) attributed to the node.
    pub requests: u64,
    /// 2xx responses.
    pub status_2xx: u64,
    /// 3xx responses.
    pub status_3xx: u64,
    /// 4xx responses.
    pub status_4xx: u64,
    /// 5xx responses.
    pub status_5xx: u64,
    /// Response code 0 (client disconnected before a response; flag `DC`).
    pub status_0: u64,
    /// Count per exact response code.
    pub codes: BTreeMap<String, u64>,
    /// Count per endpoint kind (`config`, `user`, ..., `other`).
    pub endpoints: BTreeMap<String, u64>,
    /// Injected upstream delays (ms) of this node's requests, in order.
    pub delays_ms: Vec<u64>,
}

impl NodeTruth {
    fn add(&mut self, code: u16, endpoint: Option<&str>) {
        self.requests += 1;
        match code {
            0 => self.status_0 += 1,
            200..=299 => self.status_2xx += 1,
            300..=399 => self.status_3xx += 1,
            400..=499 => self.status_4xx += 1,
            500..=599 => self.status_5xx += 1,
            _ => {}
        }
        *self.codes.entry(code.to_string()).or_insert(0) += 1;
        if let Some(e) = endpoint {
            *self.endpoints.entry(e.to_owned()).or_insert(0) += 1;
        }
    }

    /// Compares the counters a log can reveal (not endpoints/delays).
    fn counts_eq(&self, other: &NodeTruth) -> bool {
        self.requests == other.requests
            && self.status_2xx == other.status_2xx
            && self.status_3xx == other.status_3xx
            && self.status_4xx == other.status_4xx
            && self.status_5xx == other.status_5xx
            && self.status_0 == other.status_0
            && self.codes == other.codes
            && self.endpoints == other.endpoints
    }
}

/// A special-case request, listed in `expected.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialCase {
    /// Tag (`forged_xff`, `client_disconnect`, `quoted_user_agent`, `unknown_path`, `long_path`).
    pub tag: String,
    /// 0-based line index in each access log.
    pub line: usize,
    /// Node the request must be attributed to (or `unregistered`).
    pub attributed_to: String,
    /// Expected response code.
    pub response_code: u16,
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
}

/// The contents of `fixtures/expected.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// Human description.
    pub description: String,
    /// Total lines in each access-log fixture.
    pub total_requests: u64,
    /// Per registered node.
    pub nodes: BTreeMap<String, NodeTruth>,
    /// Traffic from addresses not in the registry.
    pub unregistered: NodeTruth,
    /// Source addresses of the unregistered traffic.
    pub unregistered_sources: Vec<String>,
    /// The fake token in every node request's query string.
    pub token: String,
    /// Special cases with their line numbers.
    pub special: Vec<SpecialCase>,
}

/// Computes the expected truth from the plan.
pub fn expected(plan: &[PlannedRequest]) -> Expected {
    let mut nodes: BTreeMap<String, NodeTruth> = NODES
        .iter()
        .filter(|n| n.registered())
        .map(|n| (n.name.to_owned(), NodeTruth::default()))
        .collect();
    let mut unregistered = NodeTruth::default();
    let mut special = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let t = if p.attributed_to == UNREGISTERED {
            &mut unregistered
        } else {
            nodes.entry(p.attributed_to.to_owned()).or_default()
        };
        t.add(p.expected_code, Some(p.endpoint));
        if let Some(d) = p.delay_ms {
            t.delays_ms.push(d);
        }
        for tag in &p.tags {
            special.push(SpecialCase {
                tag: (*tag).to_owned(),
                line: i,
                attributed_to: p.attributed_to.to_owned(),
                response_code: p.expected_code,
                method: p.request.method.clone(),
                path: p.request.path.clone(),
            });
        }
    }
    Expected {
        description: "Per-node truth for fixtures/access-istio-{json,text}.log (identical traffic plan in both). \
Attribution uses the PROXY-protocol source (downstream_remote_address) against registry.yaml; \
X-Forwarded-For is never trusted (one us-01 request forges X-Forwarded-For: 203.0.113.11). \
Counts are per access-log line; status_0 = client disconnect (response_flags DC)."
            .to_owned(),
        total_requests: plan.len() as u64,
        nodes,
        unregistered,
        unregistered_sources: NODES
            .iter()
            .filter(|n| !n.registered())
            .map(|n| n.source.to_owned())
            .collect(),
        token: FAKE_TOKEN.to_owned(),
        special,
    }
}

/// `fixtures/registry.yaml` text.
pub fn registry_yaml() -> String {
    let mut s = String::from(
        "# vpslens node registry used by the fixtures (see fixtures/README.md).\n\
# sg-01 (node_id 5, 192.0.2.50) sends traffic in the fixtures but is deliberately\n\
# NOT listed here: its requests must be counted as unregistered.\n\
nodes:\n",
    );
    for n in NODES.iter().filter(|n| n.registered()) {
        let addrs: Vec<String> = n
            .registry_addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        s.push_str(&format!(
            "  - name: {}\n    addresses: [{}]\n    node_id: {}\n    labels: {{{}}}\n",
            n.name,
            addrs.join(", "),
            n.node_id,
            labels.join(", ")
        ));
    }
    s
}

fn parse_ip_net(s: &str) -> Result<(IpAddr, u8)> {
    match s.split_once('/') {
        Some((ip, len)) => Ok((ip.parse()?, len.parse()?)),
        None => {
            let ip: IpAddr = s.parse()?;
            Ok((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn net_contains(net: (IpAddr, u8), ip: IpAddr) -> bool {
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(net.1.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(net.1.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Attributes a client IP to a registered node name (reference implementation
/// for the checker; exact addresses and CIDRs, first match wins).
pub fn attribute(ip: IpAddr) -> Result<&'static str> {
    for n in NODES {
        for a in n.registry_addresses {
            if net_contains(parse_ip_net(a)?, ip) {
                return Ok(n.name);
            }
        }
    }
    Ok(UNREGISTERED)
}

/// Fields the checker pulls out of one access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFacts {
    /// `%RESPONSE_CODE%`.
    pub code: u16,
    /// `%RESPONSE_FLAGS%`.
    pub flags: String,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    pub remote: SocketAddr,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`.
    pub path: String,
}

/// Extracts [`LineFacts`] from a JSON-format line.
pub fn json_line_facts(line: &str) -> Result<LineFacts> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    let code = v["response_code"]
        .as_u64()
        .context("response_code not a number")?;
    Ok(LineFacts {
        code: u16::try_from(code)?,
        flags: v["response_flags"].as_str().unwrap_or("").to_owned(),
        remote: v["downstream_remote_address"]
            .as_str()
            .context("no downstream_remote_address")?
            .parse()?,
        path: v["path"].as_str().unwrap_or("").to_owned(),
    })
}

/// Extracts [`LineFacts`] from a TEXT-format line (Istio default format).
pub fn text_line_facts(line: &str) -> Result<LineFacts> {
    let rest = line
        .split_once("] \"")
        .map(|x| x.1)
        .context("no request line")?;
    let (req, rest) = rest
        .split_once("\" ")
        .context("unterminated request line")?;
    let path = req.split(' ').nth(1).unwrap_or("").to_owned();
    let mut it = rest.split(' ');
    let code = it.next().context("no code")?.parse()?;
    let flags = it.next().context("no flags")?.to_owned();
    let tail: Vec<&str> = line.split(' ').rev().take(3).collect();
    anyhow::ensure!(tail.len() == 3, "too few fields");
    Ok(LineFacts {
        code,
        flags,
        remote: tail[2]
            .parse()
            .with_context(|| format!("bad remote {:?}", tail[2]))?,
        path,
    })
}

fn endpoint_of(path: &str) -> &'static str {
    let p = path.split('?').next().unwrap_or("");
    match p.strip_prefix(UNIPROXY_PREFIX) {
        Some("/config") => "config",
        Some("/user") => "user",
        Some("/push") => "push",
        Some("/alive") => "alive",
        Some("/status") => "status",
        Some("/alivelist") => "alivelist",
        _ => "other",
    }
}

/// Re-derives per-node counts from a log and compares them with `expected`.
pub fn verify_log(format: LogFormat, content: &str, expected: &Expected) -> Result<()> {
    let mut nodes: BTreeMap<String, NodeTruth> = BTreeMap::new();
    let mut unregistered = NodeTruth::default();
    let mut total = 0u64;
    for (i, line) in content.lines().enumerate() {
        let f = match format {
            LogFormat::Json => json_line_facts(line),
            LogFormat::Text => text_line_facts(line),
        }
        .with_context(|| format!("line {}: {line}", i + 1))?;
        total += 1;
        if f.code == 0 {
            anyhow::ensure!(
                f.flags.contains("DC"),
                "line {}: code 0 without DC flag",
                i + 1
            );
        }
        let t = match attribute(f.remote.ip())? {
            UNREGISTERED => &mut unregistered,
            n => nodes.entry(n.to_owned()).or_default(),
        };
        t.add(f.code, Some(endpoint_of(&f.path)));
    }
    anyhow::ensure!(
        total == expected.total_requests,
        "{total} lines, expected {}",
        expected.total_requests
    );
    for (name, exp) in &expected.nodes {
        let got = nodes.remove(name).unwrap_or_default();
        if !got.counts_eq(exp) {
            bail!("node {name}: log gives {got:?}, expected {exp:?}");
        }
    }
    anyhow::ensure!(nodes.is_empty(), "unexpected nodes {nodes:?}");
    if !unregistered.counts_eq(&expected.unregistered) {
        bail!(
            "unregistered: log gives {unregistered:?}, expected {:?}",
            expected.unregistered
        );
    }
    Ok(())
}

/// File name of the JSON-format access-log fixture.
pub const JSON_LOG: &str = "access-istio-json.log";
/// File name of the TEXT-format access-log fixture.
pub const TEXT_LOG: &str = "access-istio-text.log";
/// File name of the registry fixture.
pub const REGISTRY: &str = "registry.yaml";
/// File name of the expected-truth fixture.
pub const EXPECTED: &str = "expected.json";

/// The workspace's `fixtures/` directory (resolved at compile time).
pub fn fixtures_dir() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    p.canonicalize().unwrap_or(p)
}

/// Loads `expected.json` from `dir`.
pub fn load_expected(dir: &std::path::Path) -> Result<Expected> {
    let path = dir.join(EXPECTED);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Verifies the fixture files in `dir` against the plan: `expected.json` and
/// `registry.yaml` must equal what the plan produces, and both logs must
/// re-derive the same per-node truth.
pub fn check_dir(dir: &std::path::Path) -> Result<()> {
    let expected = expected(&plan()?);
    if load_expected(dir)? != expected {
        bail!("{EXPECTED} differs from the plan; regenerate with scripts/gen-fixtures.sh");
    }
    let reg = std::fs::read_to_string(dir.join(REGISTRY)).context("read registry.yaml")?;
    if reg != registry_yaml() {
        bail!("{REGISTRY} differs from the plan; regenerate with scripts/gen-fixtures.sh");
    }
    for (name, fmt) in [(JSON_LOG, LogFormat::Json), (TEXT_LOG, LogFormat::Text)] {
        let content =
            std::fs::read_to_string(dir.join(name)).with_context(|| format!("read {name}"))?;
        verify_log(fmt, &content, &expected).with_context(|| format!("verify {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_attribution() -> Result<()> {
        assert_eq!(attribute("203.0.113.11".parse()?)?, "jp-01");
        assert_eq!(attribute("198.51.100.15".parse()?)?, "us-01");
        assert_eq!(attribute("198.51.100.16".parse()?)?, UNREGISTERED);
        assert_eq!(attribute("2001:db8:1::ffff".parse()?)?, "de-01");
        assert_eq!(attribute("2001:db8:2::1".parse()?)?, UNREGISTERED);
        assert_eq!(attribute("192.0.2.50".parse()?)?, UNREGISTERED);
        Ok(())
    }

    #[test]
    fn plan_is_deterministic_and_sane() -> Result<()> {
        let p = plan()?;
        let e = expected(&p);
        assert_eq!(e, expected(&plan()?));
        assert!(p.len() > 200 && p.len() < 400, "{}", p.len());
        assert_eq!(e.nodes["jp-02"].status_5xx, 7);
        assert_eq!(e.nodes["de-01"].codes.get("422"), Some(&1));
        assert_eq!(e.nodes["us-01"].status_0, 1);
        assert!(e.unregistered.requests > 0);
        for r in &p {
            if r.endpoint != "other" {
                assert!(r.request.path.contains("token=FAKE-TOKEN-do-not-use"));
            }
        }
        Ok(())
    }

    #[test]
    fn text_facts_survive_quotes_in_user_agent() -> Result<()> {
        let line = r#"[2026-11-23T07:38:57.062Z] "GET /x?a=1 HTTP/1.1" 200 - via_upstream - "-" 0 11 2 1 "198.51.100.99,203.0.113.11" "a "quoted" ua" "id" "h" "127.0.0.1:1" outbound|80||x 127.0.0.1:2 127.0.0.1:8443 [2001:db8:1::10]:40000 - xboard-route"#;
        let f = text_line_facts(line)?;
        assert_eq!(f.code, 200);
        assert_eq!(f.flags, "-");
        assert_eq!(f.path, "/x?a=1");
        assert_eq!(f.remote, "[2001:db8:1::10]:40000".parse()?);
        Ok(())
    }
}
