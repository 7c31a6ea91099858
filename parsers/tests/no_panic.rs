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
