//! Issue 5, must-show, through a real Envoy: 100,000 requests from 100,000 distinct
//! unregistered addresses (PROXY protocol, one connection each), with 100,000 distinct paths,
//! user agents and forged X-Forwarded-For values and hostile status codes, into `vpslens run`
//! with GeoIP on (databases with 513 countries/ASNs, far above the caps). Afterwards:
//! exactly 100,000 lines were read, every family on `/metrics` and `/metrics/istio` is within a
//! bound computed from the configured caps, no client-controlled string is exposed,
//! `/api/unregistered` holds at most `unregistered_top` entries, and vpslens' peak RSS (VmHWM)
//! stays under [`RSS_BOUND_KIB`]. Timing is printed, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::mmdb::{MmdbWriter, Value};
use vpslens_testkit::vpslens::metric_value;

/// Requests (and distinct client addresses, paths, user agents) — the number.
const REQUESTS: usize = 100_000;
/// Sender threads (each request is its own connection with its own PROXY header).
const SENDERS: usize = 8;
/// Peak resident memory allowed for the vpslens process.
const RSS_BOUND_KIB: u64 = 128 * 1024;

/// The caps under test (written to the config file; the bounds below are derived from them).
struct Caps {
    codes: usize,
    response_flags: usize,
    destinations: usize,
    unregistered_top: usize,
    countries: usize,
    asns: usize,
}

const CAPS: Caps = Caps {
    codes: 16,
    response_flags: 8,
    destinations: 4,
    unregistered_top: 500,
    countries: 8,
    asns: 16,
};

/// Route templates in the default table (Xboard's six) plus `other`.
const ROUTE_LABELS: usize = 6 + 1;
/// Envoy's default histogram buckets.
const BUCKETS: usize = 19;

/// The client address of request `i`: even → 198.18.0.0/15 (RFC 2544 benchmarking range),
/// odd → 2001:db8:ffff::/48. All distinct, none registered.
fn client(i: usize) -> IpAddr {
    let k = u32::try_from(i / 2).unwrap();
    if i.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + k))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            (k >> 16) as u16,
            k as u16,
        ))
    }
}

/// GeoIP databases where every /24 of 198.18.0.0/15 has its own country code and ASN
/// (512 of each) and 2001:db8:ffff::/48 one more: far above the caps.
fn flood_databases(dir: &std::path::Path) -> Result<(String, String)> {
    let mut country = MmdbWriter::new("flood-country");
    let mut asn = MmdbWriter::new("flood-asn");
    for i in 0..512u32 {
        let net = format!("198.{}.{}.0/24", 18 + i / 256, i % 256);
        let cc = [b'A' + (i % 26) as u8, b'A' + (i / 26) as u8];
        let cc = std::str::from_utf8(&cc)?.to_owned();
        country.insert(&net, Value::map([("country_code", Value::String(cc))]))?;
        asn.insert(
            &net,
            Value::map([("autonomous_system_number", Value::U32(65_000 + i))]),
        )?;
    }
    country.insert(
        "2001:db8:ffff::/48",
        Value::map([("country_code", Value::from("ZZ"))]),
    )?;
    asn.insert(
        "2001:db8:ffff::/48",
        Value::map([("autonomous_system_number", Value::U32(4_200_000_000))]),
    )?;
    let c = dir.join("country.mmdb");
    let a = dir.join("asn.mmdb");
    country.write(&c)?;
    asn.write(&a)?;
    Ok((c.display().to_string(), a.display().to_string()))
}

/// Sample lines per metric family name (histogram `_bucket`/`_sum`/`_count` and counter
/// samples folded into the `# TYPE` family they follow).
fn samples_by_family(body: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut family = String::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap_or("").to_owned();
            out.entry(family.clone()).or_insert(0);
        } else if !l.starts_with('#') && !l.is_empty() {
            *out.entry(family.clone()).or_insert(0) += 1;
        }
    }
    out
}

fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM")
}

fn request(i: usize) -> TestRequest {
    // Distinct path (a third on a real route template with a distinct query), distinct user
    // agent, distinct forged X-Forwarded-For (naming registered nodes too), hostile codes.
    let path = if i.is_multiple_of(3) {
        format!(
            "/api/v1/server/UniProxy/config?node_id={i}&node_type=t{i}&token={}",
            common::TOKEN
        )
    } else {
        format!(
            "/api/v1/server/UniProxy/x{i}/probe-{i}?token={}",
            common::TOKEN
        )
    };
    TestRequest::get(&path)
        .from_ip(client(i))
        .user_agent(Some(&format!("flood-agent-{i}")))
        .header(
            "X-Forwarded-For",
            &format!(
                "203.0.113.{}, 10.99.{}.{}",
                i % 256,
                (i >> 8) % 256,
                i % 256
            ),
        )
        .force_status(200 + u16::try_from(i % 400).unwrap())
}

#[test]
fn hundred_thousand_distinct_clients_through_envoy_stay_under_the_caps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (country_db, asn_db) = flood_databases(dir.path())?;
    let cfg = dir.path().join("vpslens.yaml");
    std::fs::write(
        &cfg,
        format!(
            "limits: {{codes: {}, response_flags: {}, destinations: {}, unregistered_top: {}, countries: {}, asns: {}}}\n\
             geoip: {{country_database: {country_db}, asn_database: {asn_db}, node_labels: true}}\n",
            CAPS.codes, CAPS.response_flags, CAPS.destinations, CAPS.unregistered_top,
            CAPS.countries, CAPS.asns
        ),
    )?;
    let (stub, envoy, vpslens, listen) = common::start_with_config(dir.path(), &cfg)?;
    let nodes = common::REGISTRY.matches("- name:").count();
    let pid = vpslens.pid().context("vpslens pid")?;
    let baseline = samples_by_family(&vpslens.scrape(listen)?);
    let (_, istio_before) = vpslens_testkit::http::get(&format!("http://{listen}/metrics/istio"))?;
    let istio_baseline: usize = samples_by_family(&istio_before).values().sum();

    // The flood: SENDERS threads take request numbers from a shared counter.
    let gateway = envoy.listener_addr();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let codes: Vec<Result<Vec<u16>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SENDERS)
            .map(|_| {
                s.spawn(|| -> Result<Vec<u16>> {
                    let mut seen = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= REQUESTS {
                            return Ok(seen);
                        }
                        let code = send(gateway, &request(i))
                            .with_context(|| format!("request #{i} from {}", client(i)))?;
                        seen.push(code);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sender panicked")))
            })
            .collect()
    });
    let sent_in = started.elapsed();
    let mut answered = 0usize;
    for c in codes {
        answered += c?.len();
    }
    assert_eq!(answered, REQUESTS);
    assert_eq!(stub.request_count(), REQUESTS as u64);

    // Envoy logged one line per request (it flushes its file buffer every 200 ms) …
    let log_path = envoy.access_log_path().to_owned();
    let (logged, log_size) = vpslens_testkit::process::wait_for_value(
        "Envoy to log every request",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let log = std::fs::read(&log_path)?;
            let lines = log.iter().filter(|&&b| b == b'\n').count();
            Ok((lines >= REQUESTS).then_some((lines, log.len() as f64)))
        },
    )?;
    assert_eq!(logged, REQUESTS, "Envoy logged more lines than requests");
    // … and vpslens has read all of it: then it has counted every line it ever will, and
    // the line counts must equal the log's exactly (no sleep standing in for "nothing more
    // arrives").
    let body = vpslens.wait_for_scrape(
        listen,
        |b| metric_value(b, "vpslens_source_read_bytes_total").is_some_and(|n| n >= log_size),
        Duration::from_secs(240),
    )?;
    let drained_in = started.elapsed();
    assert_eq!(
        metric_value(&body, "vpslens_source_read_bytes_total"),
        Some(log_size)
    );
    assert_eq!(
        metric_value(&body, "vpslens_source_lines_total"),
        Some(logged as f64)
    );
    assert_eq!(
        metric_value(&body, "vpslens_lines_total{result=\"ok\""),
        Some(logged as f64)
    );
    for r in ["malformed", "no_client", "too_long"] {
        assert_eq!(
            metric_value(&body, &format!("vpslens_lines_total{{result=\"{r}\"")),
            Some(0.0)
        );
    }
    let unreg_total: f64 = body
        .lines()
        .filter(|l| l.starts_with("vpslens_unregistered_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(unreg_total, REQUESTS as f64, "forged XFF credited a node?");

    // Series bounds from the caps. Unregistered: routes × (codes + other) × (countries +
    // other) × (asns + other); every other family holds what it held before the flood.
    let after = samples_by_family(&body);
    let unreg_bound = ROUTE_LABELS * (CAPS.codes + 1) * (CAPS.countries + 1) * (CAPS.asns + 1);
    let unreg = after["vpslens_unregistered_requests_total"];
    assert!(unreg <= unreg_bound, "{unreg} > {unreg_bound}");
    for (family, n) in &after {
        if family != "vpslens_unregistered_requests_total" {
            assert_eq!(Some(n), baseline.get(family), "{family} grew");
        }
    }
    let total: usize = after.values().sum();
    let baseline_total: usize = baseline.values().sum();
    let bound = baseline_total + unreg_bound;
    assert!(total <= bound, "{total} samples > bound {bound}");
    // The caps were actually hit (overflow → `other`, counted).
    for label in ["code", "country", "asn"] {
        let v = metric_value(
            &body,
            &format!("vpslens_label_overflow_total{{label=\"{label}\""),
        )
        .unwrap_or(0.0);
        assert!(v > 0.0, "{label} never overflowed");
    }

    // /metrics/istio: per registered node only, within nodes × reporters × (destinations +
    // other) × (codes + other) × (flags + other) × (1 + 3 histograms × (buckets + 3)).
    let (_, istio) = vpslens_testkit::http::get(&format!("http://{listen}/metrics/istio"))?;
    let istio_total: usize = samples_by_family(&istio).values().sum();
    let istio_bound = nodes
        * 2
        * (CAPS.destinations + 1)
        * (CAPS.codes + 1)
        * (CAPS.response_flags + 1)
        * (1 + 3 * (BUCKETS + 3));
    assert!(istio_total <= istio_bound);
    assert_eq!(
        istio_total, istio_baseline,
        "unregistered traffic in istio families"
    );

    // Nothing client-controlled is exposed.
    let (_, api_nodes) = vpslens_testkit::http::get(&format!("http://{listen}/api/nodes"))?;
    for (what, text) in [
        ("metrics", &body),
        ("istio", &istio),
        ("api/nodes", &api_nodes),
    ] {
        for needle in [
            "198.18.",
            "198.19.",
            "2001:db8:ffff",
            "flood-agent",
            "/x1",
            "probe-",
            "10.99.",
            "node_type=t",
            common::TOKEN,
        ] {
            assert!(!text.contains(needle), "{needle} leaked into {what}");
        }
    }

    // The heavy-hitter list is bounded by unregistered_top whatever the limit asked.
    let (code, top) =
        vpslens_testkit::http::get(&format!("http://{listen}/api/unregistered?limit=100000"))?;
    assert_eq!(code, 200);
    let top: serde_json::Value = serde_json::from_str(&top)?;
    let entries = top.as_array().context("not a list")?.len();
    assert!(entries > 0 && entries <= CAPS.unregistered_top, "{entries}");

    let hwm = vm_hwm_kib(pid)?;
    let log_bytes = std::fs::metadata(envoy.access_log_path())?.len();
    eprintln!(
        "flood: {REQUESTS} requests sent in {:.1}s ({:.0}/s), drained by vpslens at {:.1}s; \
         access log {:.1} MiB; /metrics {total} samples (bound {bound}; unregistered {unreg} \
         of {unreg_bound}); /metrics/istio {istio_total} samples; vpslens VmHWM {} KiB",
        sent_in.as_secs_f64(),
        REQUESTS as f64 / sent_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        log_bytes as f64 / 1_048_576.0,
        hwm
    );
    assert!(hwm < RSS_BOUND_KIB, "vpslens VmHWM {hwm} KiB");
    // Nothing was read or counted twice while the checks above ran (a re-read after a false
    // truncation or rotation would show here).
    let last = vpslens.scrape(listen)?;
    for (series, want) in [
        ("vpslens_source_read_bytes_total", log_size),
        ("vpslens_lines_total{result=\"ok\"", logged as f64),
        ("vpslens_source_truncations_total", 0.0),
        ("vpslens_source_rotations_total", 0.0),
    ] {
        assert_eq!(metric_value(&last, series), Some(want), "{series}");
    }
    Ok(())
}
