//! Issue 5, GeoIP/ASN: real Envoy (PROXY protocol) → `vpslens run` with small MMDB files built
//! by the testkit writer. Unregistered clients are counted by `country`/`asn` exactly, a forged
//! X-Forwarded-For changes nothing, registered nodes get `country`/`asn` on `vpslens_node_info`,
//! and a configured database that cannot be opened stops start-up with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use vpslens_testkit::client::{send, TestRequest};
use vpslens_testkit::mmdb::{self, CountryLayout};
use vpslens_testkit::process::free_port;
use vpslens_testkit::vpslens::Vpslens;

/// `name{k="v",...} value` → (name, labels, value). Label values here hold no `"` or `,`.
fn samples(body: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value.parse().ok()?))
        })
        .collect()
}

fn config(dir: &Path, layout: CountryLayout) -> Result<std::path::PathBuf> {
    let (country, asn) = mmdb::write_test_databases(dir, layout)?;
    let cfg = dir.join("vpslens.yaml");
    std::fs::write(
        &cfg,
        format!(
            "geoip:\n  country_database: {}\n  asn_database: {}\n  node_labels: true\n",
            country.display(),
            asn.display()
        ),
    )?;
    Ok(cfg)
}

#[test]
fn unregistered_clients_are_counted_by_country_and_asn_through_envoy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(dir.path(), CountryLayout::IpLocationDb)?;
    let (_stub, envoy, mut vpslens, listen) = common::start_with_config(dir.path(), &cfg)?;

    let path = format!(
        "/api/v1/server/UniProxy/config?node_id=9&node_type=vless&token={}",
        common::TOKEN
    );
    // (client address, requests, forged X-Forwarded-For) — the forged value names another
    // country's address and must not move the request there.
    let plan: &[(&str, u32, Option<&str>)] = &[
        ("198.51.100.50", 5, None),
        ("198.51.100.51", 2, Some("203.0.113.99")),
        ("203.0.113.77", 3, Some("2001:db8:2::1, 198.51.100.1")),
        ("2001:db8:2::9", 4, None),
        ("192.0.2.50", 2, Some("198.51.100.50")),
        // Registered nodes (jp-01, us-01, de-01) are not unregistered traffic.
        ("203.0.113.11", 2, None),
        ("198.51.100.5", 1, None),
        ("2001:db8:1::10", 1, None),
    ];
    let mut total = 0u64;
    for (ip, n, xff) in plan {
        for _ in 0..*n {
            let mut req = TestRequest::get(&path).from_str_ip(ip)?.force_status(200);
            if let Some(x) = xff {
                req = req.header("X-Forwarded-For", x);
            }
            assert_eq!(send(envoy.listener_addr(), &req)?, 200);
            total += 1;
        }
    }
    let body = vpslens.wait_for_scrape(
        listen,
        |b| b.contains(&format!("vpslens_lines_total{{result=\"ok\"}} {total}")),
        Duration::from_secs(30),
    )?;
    let all = samples(&body);

    let mut unreg: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (name, labels, v) in &all {
        if name == "vpslens_unregistered_requests_total" {
            let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
            assert_eq!(keys, ["asn", "code", "country", "route"], "{labels:?}");
            *unreg
                .entry((labels["country"].clone(), labels["asn"].clone()))
                .or_default() += v;
        }
    }
    let want: BTreeMap<(String, String), f64> = [
        ("NL", "AS64500", 7.0),
        ("JP", "AS64501", 3.0),
        ("DE", "AS64502", 4.0),
        ("unknown", "unknown", 2.0),
    ]
    .iter()
    .map(|(c, a, n)| ((c.to_string(), a.to_string()), *n))
    .collect();
    assert_eq!(unreg, want, "{body}");
    assert!(
        body.contains(
            r#"vpslens_unregistered_requests_total{route="/api/v1/server/UniProxy/config",code="200",country="NL",asn="AS64500"} 7"#
        ),
        "{body}"
    );

    // Registered nodes: counted per node, and labelled from their first registry address.
    let mut info: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, labels, _) in &all {
        if name == "vpslens_node_info" {
            info.insert(
                labels["node"].clone(),
                (labels["country"].clone(), labels["asn"].clone()),
            );
        }
    }
    let pair = |c: &str, a: &str| (c.to_owned(), a.to_owned());
    assert_eq!(info["jp-01"], pair("JP", "AS64501"));
    assert_eq!(info["jp-02"], pair("JP", "AS64501"));
    assert_eq!(info["us-01"], pair("NL", "AS64500"));
    assert_eq!(info["de-01"], pair("DE", "AS64502"));
    let node_total: f64 = all
        .iter()
        .filter(|(n, _, _)| n == "vpslens_node_requests_total")
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(node_total, 4.0);

    // The overflow counter knows the new labels; nothing overflowed here.
    for label in ["country", "asn"] {
        assert!(
            body.contains(&format!(
                "vpslens_label_overflow_total{{label=\"{label}\"}} 0"
            )),
            "{body}"
        );
    }
    // No client address, token or forged value became a label.
    for needle in [
        "198.51.100.50",
        "203.0.113.99",
        "2001:db8:2::",
        common::TOKEN,
    ] {
        assert!(!body.contains(needle), "{needle} leaked into /metrics");
    }
    vpslens_testkit::prometheus::promtool_check_metrics(&body)?;

    // /api/unregistered (JSON, never labels) shows each busy address with its country/ASN.
    let (_, top) = vpslens_testkit::http::get(&format!("http://{listen}/api/unregistered"))?;
    let top: serde_json::Value = serde_json::from_str(&top)?;
    assert_eq!(top[0]["address"], "198.51.100.50", "{top}");
    assert_eq!(top[0]["requests"], 5);
    assert_eq!(
        (top[0]["country"].as_str(), top[0]["asn"].as_str()),
        (Some("NL"), Some("AS64500")),
        "{top}"
    );
    // The fleet page shows the same row with its country and ASN.
    let (_, page) = vpslens_testkit::http::get(&format!("http://{listen}/"))?;
    let row = page
        .lines()
        .find(|l| l.starts_with("<tr data-address=\"198.51.100.50\">"))
        .unwrap_or_else(|| panic!("no row in\n{page}"));
    assert!(row.ends_with("<td>NL</td><td>AS64500</td></tr>"), "{row}");
    vpslens.stop_graceful()?;
    Ok(())
}

#[test]
fn maxmind_layout_without_asn_database_exports_only_country() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (country, _) = mmdb::write_test_databases(dir.path(), CountryLayout::MaxMind)?;
    let cfg = dir.path().join("vpslens.yaml");
    std::fs::write(
        &cfg,
        format!("geoip: {{country_database: {}}}\n", country.display()),
    )?;
    let (_stub, envoy, mut vpslens, listen) = common::start_with_config(dir.path(), &cfg)?;
    for ip in ["2001:db8:ffff::1", "2001:db8:ffff::2", "203.0.113.200"] {
        let req = TestRequest::get("/api/v1/server/UniProxy/user")
            .from_str_ip(ip)?
            .force_status(404);
        assert_eq!(send(envoy.listener_addr(), &req)?, 404);
    }
    let body = vpslens.wait_for_scrape(
        listen,
        |b| b.contains("vpslens_lines_total{result=\"ok\"} 3"),
        Duration::from_secs(30),
    )?;
    let lines: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("vpslens_unregistered_requests_total{"))
        .collect();
    assert_eq!(
        lines,
        [
            r#"vpslens_unregistered_requests_total{route="/api/v1/server/UniProxy/user",code="404",country="DE"} 2"#,
            r#"vpslens_unregistered_requests_total{route="/api/v1/server/UniProxy/user",code="404",country="JP"} 1"#,
        ]
    );
    // node_labels is off by default: no geo labels on the info series.
    assert!(body
        .lines()
        .filter(|l| l.starts_with("vpslens_node_info{"))
        .all(|l| !l.contains("country=") && !l.contains("asn=")));
    vpslens.stop_graceful()?;
    Ok(())
}

#[test]
fn a_configured_but_unreadable_database_stops_start_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("nodes.yaml");
    std::fs::write(&registry, common::REGISTRY)?;
    let junk = dir.path().join("GeoLite2-ASN.mmdb");
    std::fs::write(&junk, b"this is not a MaxMind database")?;
    for (key, path) in [
        ("country_database", dir.path().join("missing.mmdb")),
        ("asn_database", junk.clone()),
    ] {
        let cfg = dir.path().join("vpslens.yaml");
        std::fs::write(&cfg, format!("geoip: {{{key}: {}}}\n", path.display()))?;
        let log = dir.path().join("access.log");
        std::fs::write(&log, "")?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut v = Vpslens::run(
            Path::new(env!("CARGO_BIN_EXE_vpslens")),
            &[
                "run",
                "--config",
                &cfg.display().to_string(),
                "--registry",
                &registry.display().to_string(),
                "--listen",
                &listen,
                &log.display().to_string(),
            ],
        )?;
        let status = v
            .wait_exit(Duration::from_secs(20))?
            .expect("vpslens kept running with a broken GeoIP database");
        assert!(!status.success());
        let err = v.stderr();
        assert!(err.contains(&format!("geoip.{key}")), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    Ok(())
}
