//! Stable-toolchain companion of the fuzz targets: arbitrary and mutated inputs never panic,
//! and whatever parses yields bounded values.

use proptest::prelude::*;
use vpslens_parsers::client::{client_address, ClientAddressSource};
use vpslens_parsers::container::{parse_cri, parse_docker, Reassembler};
use vpslens_parsers::route::RouteTable;
use vpslens_parsers::{parse_line, LogFormat};

const JSON: &str = r#"{"start_time":"2026-11-23T05:38:15.940Z","method":"GET","path":"/api/v1/server/UniProxy/user?node_id=1&node_type=vless&token=FAKE-TOKEN-do-not-use","response_code":304,"response_flags":"-","duration":3,"x_forwarded_for":"198.51.100.9,203.0.113.11","downstream_remote_address":"203.0.113.11:40000"}"#;
const TEXT: &str = r#"[2026-11-23T05:38:15.940Z] "GET /api/v1/server/UniProxy/user?node_id=1 HTTP/1.1" 304 - via_upstream - "-" 0 0 3 2 "203.0.113.11" "go-resty/2.7.0" "id-1" "panel" "10.0.1.7:80" outbound|80||xboard.airport-prod.svc.cluster.local 10.0.0.5:4000 10.0.0.5:8080 203.0.113.11:51234 - xboard-route"#;

fn exercise(data: &[u8]) {
    let routes = RouteTable::default();
    for format in [LogFormat::Auto, LogFormat::IstioJson, LogFormat::IstioText] {
        if let Ok(rec) = parse_line(data, format) {
            assert!(rec.response_code == 0 || (100..=999).contains(&rec.response_code));
            let _ = client_address(&rec, ClientAddressSource::DownstreamRemote);
            let _ = client_address(&rec, ClientAddressSource::XForwardedFor { trusted_hops: 1 });
            let t = routes.classify(rec.path.as_deref().unwrap_or(""));
            let label = routes.label(t.route);
            assert!(routes.labels().any(|l| l == label));
        }
    }
    let mut r = Reassembler::new(128);
    for chunk in [parse_cri(data), parse_docker(data)].into_iter().flatten() {
        let _ = r.push(chunk);
    }
}

#[test]
fn the_seed_lines_parse() {
    assert!(parse_line(JSON.as_bytes(), LogFormat::Auto).is_ok());
    assert!(parse_line(TEXT.as_bytes(), LogFormat::Auto).is_ok());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&data);
    }

    #[test]
    fn mutated_real_lines_never_panic(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut line = [JSON, TEXT][which].as_bytes().to_vec();
        for (at, byte, op) in edits {
            if line.is_empty() {
                break;
            }
            let i = at.index(line.len());
            match op {
                0 => line[i] = byte,
                1 => line.insert(i, byte),
                _ => line.truncate(i),
            }
        }
        exercise(&line);
    }
}

/// The address parser before its one-parse rewrite: std's parser first, then `ip:port`.
fn socket_ip_reference(s: &str) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv6Addr};
    use std::str::FromStr;
    let valid_port =
        |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !after.is_empty() && !valid_port(after.strip_prefix(':')?) {
            return None;
        }
        IpAddr::V6(Ipv6Addr::from_str(host).ok()?)
    } else if let Ok(ip) = IpAddr::from_str(s) {
        ip
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') || !valid_port(port) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(ip.to_canonical())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn socket_ip_parser_equals_the_reference(s in "[0-9a-f.:\\[\\]]{0,45}") {
        prop_assert_eq!(vpslens_parsers::client::parse_socket_ip(&s), socket_ip_reference(&s));
    }

    #[test]
    fn socket_ip_parser_equals_the_reference_on_dotted_quads(
        s in "([0-9]{0,4}\\.){0,4}[0-9]{0,4}(:[0-9]{0,6})?",
    ) {
        // Leading zeros, long octets, missing or extra dots: std's IPv4 rules, byte for byte.
        prop_assert_eq!(vpslens_parsers::client::parse_socket_ip(&s), socket_ip_reference(&s));
    }

    #[test]
    fn socket_ip_parser_equals_the_reference_on_real_shapes(
        a in 0u16..300, b in 0u16..300, c in 0u16..300, d in 0u16..300,
        port in proptest::option::of(0u32..100_000),
        v6 in any::<u128>(), which in 0u8..4,
    ) {
        let s = match (which, port) {
            (0, Some(p)) => format!("{a}.{b}.{c}.{d}:{p}"),
            (0, None) | (1, None) => format!("{a}.{b}.{c}.{d}"),
            (1, Some(p)) => format!("[::ffff:{a}.{b}.{c}.{d}]:{p}"),
            (2, Some(p)) => format!("[{}]:{p}", std::net::Ipv6Addr::from(v6)),
            _ => format!("{}", std::net::Ipv6Addr::from(v6)),
        };
        prop_assert_eq!(vpslens_parsers::client::parse_socket_ip(&s), socket_ip_reference(&s));
    }
}
