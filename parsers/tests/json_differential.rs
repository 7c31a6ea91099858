//! The JSON fast scanner and `serde_json` agree on every input: same record, same error.
//!
//! `json::parse` tries a hand-written scanner first and falls back to `serde_json` for anything
//! outside the plain case; `json::parse_with_serde` is the reference. Inputs are Envoy-shaped
//! objects with known and unknown keys, every JSON value kind, escapes, non-ASCII, odd spacing,
//! duplicates, and byte-level mutations of those.

use proptest::prelude::*;
use vpslens_parsers::json::{parse, parse_with_serde};

const KEYS: &[&str] = &[
    "start_time",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "x_forwarded_for",
    "downstream_remote_address",
    "upstream_cluster",
    "authority",
    "user_agent",
    "request_id",
    "upstream_service_time",
    "",
    "start_tim",
    "start_time ",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"2026-11-23T05:38:15.940Z\"".to_owned()),
        Just("\"2026-11-23T05:38:15Z\"".to_owned()),
        Just("null".to_owned()),
        Just("nul".to_owned()),
        Just("true".to_owned()),
        Just("\"-\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"UF,URX\"".to_owned()),
        Just("\"203.0.113.11:40000\"".to_owned()),
        Just("\"198.51.100.9, 203.0.113.11\"".to_owned()),
        Just("\"a \\\"quoted\\\" agent\\u00e9\"".to_owned()),
        Just("\"caf\u{e9}\"".to_owned()),
        Just("\"tab\there\"".to_owned()),
        Just("{\"a\":[1,2,null]}".to_owned()),
        Just("[]".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("00".to_owned()),
        Just("01".to_owned()),
        Just("0.5".to_owned()),
        Just("200.0".to_owned()),
        Just("1e3".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551616".to_owned()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (100u16..1000).prop_map(|n| format!("\"{n}\"")),
        "[ -~]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn space() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just(""), 2 => Just(" "), 1 => Just("  "), 1 => Just("\t"), 1 => Just("\n")]
}

fn object() -> impl Strategy<Value = String> {
    let member = (
        proptest::sample::select(KEYS),
        value(),
        space(),
        space(),
        space(),
    );
    (
        proptest::collection::vec(member, 0..20),
        space(),
        space(),
        any::<bool>(),
    )
        .prop_map(|(members, s1, s2, base)| {
            let mut out = String::from("{");
            out.push_str(s1);
            let mut parts = Vec::new();
            if base {
                // Usually give the two required fields so records get built.
                parts.push("\"start_time\":\"2026-11-23T05:38:15.940Z\"".to_owned());
                parts.push("\"response_code\":200".to_owned());
            }
            for (k, v, a, b, c) in members {
                parts.push(format!("{a}\"{k}\"{b}:{c}{v}"));
            }
            out.push_str(&parts.join(","));
            out.push_str(s2);
            out.push('}');
            out
        })
}

fn same(line: &[u8]) {
    assert_eq!(
        parse(line),
        parse_with_serde(line),
        "{}",
        String::from_utf8_lossy(line)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_scanner_equals_serde(line in object()) {
        same(line.as_bytes());
    }

    #[test]
    fn fast_scanner_equals_serde_on_mutations(
        line in object(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        op in 0u8..3,
    ) {
        let mut b = line.into_bytes();
        let at = pos.index(b.len() + 1);
        match op {
            0 => b.insert(at, byte),
            1 if at < b.len() => { b.remove(at); }
            _ => b.truncate(at),
        }
        same(&b);
    }
}

#[test]
fn fixture_lines_take_the_same_result_both_ways() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/access-istio-json.log"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut n = 0;
    for line in text.lines() {
        same(line.as_bytes());
        assert!(parse(line.as_bytes()).is_ok(), "{line}");
        n += 1;
    }
    assert!(n > 200);
}
