//! Istio's default JSON access-log format.
//!
//! Keys are those of `EnvoyJSONLogFormatIstio` (istio/istio `pilot/pkg/model/telemetry_logging.go`)
//! in any order; unknown keys are ignored so operators may add their own. Envoy's `json_format`
//! renders typed values (numbers for `response_code`, `duration`, `bytes_*`; `null` when absent),
//! older setups and `text_format`-built JSON print strings (`"200"`) and `"-"`: both are accepted.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::time::parse_rfc3339_ms;
use crate::{AccessRecord, ParseError};

/// Parses one Istio JSON access-log line (without its trailing newline; surrounding whitespace
/// is allowed).
///
/// # Errors
/// [`ParseError::JsonSyntax`] for invalid or truncated JSON, [`ParseError::JsonType`] for a value
/// of a type Envoy never prints there, [`ParseError::MissingField`] when `start_time` or
/// `response_code` is absent, [`ParseError::BadNumber`] / [`ParseError::BadTimestamp`] for
/// malformed values.
///
/// ```
/// let line = br#"{"start_time":"2026-11-23T05:38:15.940Z","method":"GET","response_code":200,
///   "duration":12,"downstream_remote_address":"203.0.113.11:40000","response_flags":"-"}"#;
/// let rec = vpslens_parsers::json::parse(line).unwrap();
/// assert_eq!(rec.response_code, 200);
/// assert_eq!(rec.duration_ms, Some(12));
/// assert_eq!(rec.response_flags, None);
/// ```
pub fn parse(line: &[u8]) -> Result<AccessRecord<'_>, ParseError> {
    match scan(line) {
        Some(raw) => raw.into_record(),
        None => parse_with_serde(line),
    }
}

/// [`parse`] through `serde_json` only, without the fast scanner. Same results as [`parse`]
/// for every input (the differential tests hold the two together); exposed for those tests
/// and the benches.
///
/// # Errors
/// As [`parse`].
pub fn parse_with_serde(line: &[u8]) -> Result<AccessRecord<'_>, ParseError> {
    let raw: RawRecord<'_> = serde_json::from_slice(line).map_err(map_json_error)?;
    raw.into_record()
}

/// The fast path: a single-pass scanner for the flat objects Envoy's `json_format` prints.
///
/// It accepts only the plain case: valid UTF-8 without control characters or backslashes (so no
/// escapes), string, `null` and non-negative integer values,
/// no nesting, no repeated known key, compact or space-separated tokens. Anything else returns
/// `None` and the caller falls back to `serde_json`, which then decides (including every error).
/// Whatever it returns is exactly what the `serde_json` path would have built.
fn scan(line: &[u8]) -> Option<RawRecord<'_>> {
    // The whole line is valid UTF-8 (so every slice between two `"` is a `str`), and it has no
    // control characters (forbidden in JSON strings) and no backslash (no escapes). Without
    // escapes every `"` opens or closes a string, so strings are consecutive quote pairs.
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let quotes = Quotes::index(line)?;
    let mut q = quotes.positions[..quotes.len].iter().map(|&p| p as usize);
    let mut raw = RawRecord::default();
    let mut i = skip_spaces(line, 0);
    if line.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_spaces(line, i + 1);
    if line.get(i) == Some(&b'}') {
        return end(line, i + 1).then_some(raw);
    }
    loop {
        // Key: the next quote must be right here.
        if q.next()? != i {
            return None;
        }
        let k_end = q.next()?;
        let key = line.get(i + 1..k_end)?;
        i = skip_spaces(line, k_end + 1);
        if line.get(i) != Some(&b':') {
            return None;
        }
        i = skip_spaces(line, i + 1);
        // Value.
        let (value, next) = if line.get(i) == Some(&b'"') {
            if q.next()? != i {
                return None;
            }
            let v_end = q.next()?;
            // Both ends sit next to an ASCII `"`: char boundaries, so `get` always succeeds.
            let s = text.get(i + 1..v_end)?;
            (Scalar::Str(Cow::Borrowed(s)), v_end + 1)
        } else {
            scan_bare(line, i)?
        };
        if let Some(slot) = raw.slot(key) {
            if slot.is_some() {
                return None; // duplicate field: serde's error
            }
            *slot = Some(value);
        }
        i = skip_spaces(line, next);
        match line.get(i) {
            Some(b',') => i = skip_spaces(line, i + 1),
            Some(b'}') => return end(line, i + 1).then_some(raw),
            _ => return None,
        }
    }
}

/// Positions of every `"` of a line, found 16 bytes at a time (SIMD through the `wide` crate's
/// safe API) in the same pass that rejects control characters and backslashes.
struct Quotes {
    positions: [u32; Quotes::MAX],
    len: usize,
}

impl Quotes {
    /// More quotes than this (a format with far more fields than Istio's 23) go to serde_json.
    const MAX: usize = 256;

    /// `None` when the line has a control character or a backslash, more than [`Quotes::MAX`]
    /// quotes, or more than `u32::MAX` bytes.
    #[inline]
    fn index(line: &[u8]) -> Option<Quotes> {
        use wide::{i8x16, CmpEq, CmpGt, CmpLt};
        u32::try_from(line.len()).ok()?;
        let quote = i8x16::splat(b'"' as i8);
        let backslash = i8x16::splat(b'\\' as i8);
        let last_control = i8x16::splat(0x1f);
        let zero = i8x16::splat(0);
        let mut out = Quotes {
            positions: [0; Quotes::MAX],
            len: 0,
        };
        let mut bad = 0i32;
        let mut base = 0usize;
        let mut blocks = line.chunks_exact(16);
        let block = |bytes: [u8; 16], base: usize, out: &mut Quotes| -> Option<i32> {
            // Bytes >= 0x80 are negative as i8: UTF-8, allowed. Control = 0 <= b <= 0x1f.
            let v = i8x16::from(bytes.map(|b| b as i8));
            let control = !(v.cmp_gt(last_control) | v.cmp_lt(zero));
            let mut quotes = v.cmp_eq(quote).move_mask();
            while quotes != 0 {
                let at = base + quotes.trailing_zeros() as usize;
                *out.positions.get_mut(out.len)? = u32::try_from(at).ok()?;
                out.len += 1;
                quotes &= quotes - 1;
            }
            Some((v.cmp_eq(backslash) | control).move_mask())
        };
        for b in &mut blocks {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(b);
            bad |= block(bytes, base, &mut out)?;
            base += 16;
        }
        // The tail, padded with spaces (harmless: not quotes, not control characters).
        let mut bytes = [b' '; 16];
        let rest = blocks.remainder();
        bytes[..rest.len()].copy_from_slice(rest);
        bad |= block(bytes, base, &mut out)?;
        (bad == 0).then_some(out)
    }
}

#[inline]
fn skip_spaces(line: &[u8], mut i: usize) -> usize {
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Only spaces may follow the closing brace.
#[inline]
fn end(line: &[u8], i: usize) -> bool {
    line.get(i..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b' '))
}

/// One non-string value at `i`: returns it and the index after it, or `None` for anything but
/// `null` or a JSON integer that fits `u64`.
#[inline]
fn scan_bare(line: &[u8], i: usize) -> Option<(Scalar<'static>, usize)> {
    match *line.get(i)? {
        b'n' => (line.get(i..i + 4)? == b"null").then_some((Scalar::Null, i + 4)),
        b'0' => {
            // JSON forbids leading zeros: a lone 0 only.
            let next = line.get(i + 1).copied();
            (!matches!(next, Some(b'0'..=b'9' | b'.' | b'e' | b'E')))
                .then_some((Scalar::U64(0), i + 1))
        }
        b'1'..=b'9' => {
            let mut n: u64 = 0;
            let mut j = i;
            while let Some(&d @ b'0'..=b'9') = line.get(j) {
                n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                j += 1;
            }
            // Fractions and exponents go to serde_json.
            (!matches!(line.get(j), Some(b'.' | b'e' | b'E'))).then_some((Scalar::U64(n), j))
        }
        _ => None,
    }
}

fn map_json_error(e: serde_json::Error) -> ParseError {
    match e.classify() {
        serde_json::error::Category::Data => ParseError::JsonType { field: "(object)" },
        _ => ParseError::JsonSyntax { column: e.column() },
    }
}

/// Any JSON value Envoy may print for one key, borrowed when possible.
#[derive(Debug)]
enum Scalar<'a> {
    Null,
    Str(Cow<'a, str>),
    U64(u64),
    /// Only negative integers arrive here (serde_json visits non-negative ones as u64).
    Negative,
    F64(f64),
    /// Booleans, objects and arrays: never printed by Envoy for Istio's keys.
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON scalar")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(if v < 0 {
                    Scalar::Negative
                } else {
                    Scalar::U64(v.unsigned_abs())
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::F64(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The keys vpslens reads; every other key is skipped by serde without allocation.
#[derive(Deserialize, Default)]
struct RawRecord<'a> {
    #[serde(borrow, default)]
    start_time: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    method: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    path: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    protocol: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    response_code: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    response_flags: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    bytes_received: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    bytes_sent: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    duration: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    x_forwarded_for: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    downstream_remote_address: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    upstream_cluster: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    authority: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    user_agent: Option<Scalar<'a>>,
}

impl<'a> RawRecord<'a> {
    /// The slot of a key the fast scanner met; `None` for keys vpslens ignores.
    #[inline]
    fn slot(&mut self, key: &[u8]) -> Option<&mut Option<Scalar<'a>>> {
        // By length first: one comparison for most keys instead of a chain of memcmp calls.
        let slot = match (key.len(), key) {
            (4, b"path") => &mut self.path,
            (6, b"method") => &mut self.method,
            (8, b"protocol") => &mut self.protocol,
            (8, b"duration") => &mut self.duration,
            (9, b"authority") => &mut self.authority,
            (10, b"start_time") => &mut self.start_time,
            (10, b"bytes_sent") => &mut self.bytes_sent,
            (10, b"user_agent") => &mut self.user_agent,
            (13, b"response_code") => &mut self.response_code,
            (14, b"response_flags") => &mut self.response_flags,
            (14, b"bytes_received") => &mut self.bytes_received,
            (15, b"x_forwarded_for") => &mut self.x_forwarded_for,
            (16, b"upstream_cluster") => &mut self.upstream_cluster,
            (25, b"downstream_remote_address") => &mut self.downstream_remote_address,
            _ => return None,
        };
        Some(slot)
    }

    fn into_record(self) -> Result<AccessRecord<'a>, ParseError> {
        let start = text("start_time", self.start_time)?.ok_or(ParseError::MissingField {
            field: "start_time",
        })?;
        let code =
            number("response_code", self.response_code)?.ok_or(ParseError::MissingField {
                field: "response_code",
            })?;
        Ok(AccessRecord {
            start_time_ms: parse_rfc3339_ms(&start)?,
            method: text("method", self.method)?,
            path: text("path", self.path)?,
            protocol: text("protocol", self.protocol)?,
            response_code: status_code(code)?,
            response_flags: text("response_flags", self.response_flags)?,
            bytes_received: number("bytes_received", self.bytes_received)?.unwrap_or(0),
            bytes_sent: number("bytes_sent", self.bytes_sent)?.unwrap_or(0),
            duration_ms: number("duration", self.duration)?,
            x_forwarded_for: text("x_forwarded_for", self.x_forwarded_for)?,
            downstream_remote_address: text(
                "downstream_remote_address",
                self.downstream_remote_address,
            )?,
            upstream_cluster: text("upstream_cluster", self.upstream_cluster)?,
            authority: text("authority", self.authority)?,
            user_agent: text("user_agent", self.user_agent)?,
        })
    }
}

/// HTTP status codes are three digits; Envoy prints 0 when no response was sent.
pub(crate) fn status_code(v: u64) -> Result<u16, ParseError> {
    if v == 0 || (100..=999).contains(&v) {
        // Checked range above: the conversion cannot fail.
        u16::try_from(v).map_err(|_| ParseError::BadNumber {
            field: "response_code",
        })
    } else {
        Err(ParseError::BadNumber {
            field: "response_code",
        })
    }
}

/// A string field; Envoy's empty markers (`null`, `"-"`, `""`) become `None`.
fn text<'a>(
    field: &'static str,
    v: Option<Scalar<'a>>,
) -> Result<Option<Cow<'a, str>>, ParseError> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) if s.is_empty() || s == "-" => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s)),
        Some(_) => Err(ParseError::JsonType { field }),
    }
}

/// A non-negative integer field printed as a number or a decimal string.
fn number(field: &'static str, v: Option<Scalar<'_>>) -> Result<Option<u64>, ParseError> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::U64(n)) => Ok(Some(n)),
        Some(Scalar::Negative) => Err(ParseError::BadNumber { field }),
        Some(Scalar::F64(f)) => {
            if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 {
                // Integral and below 2^53: exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(Some(f as u64))
            } else {
                Err(ParseError::BadNumber { field })
            }
        }
        Some(Scalar::Str(s)) if s.is_empty() || s == "-" => Ok(None),
        Some(Scalar::Str(s)) => parse_decimal(&s)
            .map(Some)
            .ok_or(ParseError::BadNumber { field }),
        Some(Scalar::Other) => Err(ParseError::JsonType { field }),
    }
}

/// ASCII decimal digits only (no sign, no spaces), at most 19 digits.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPED: &str = r#"{"authority":"panel.example.com","bytes_received":0,"bytes_sent":120,"connection_termination_details":null,"downstream_local_address":"10.0.0.5:8080","downstream_remote_address":"203.0.113.11:51234","duration":12,"method":"GET","path":"/api/v1/server/UniProxy/config?node_id=1&node_type=vless&token=FAKE-TOKEN-do-not-use","protocol":"HTTP/1.1","request_id":"c2f1","requested_server_name":null,"response_code":200,"response_code_details":"via_upstream","response_flags":"-","route_name":"xboard-route","start_time":"2026-11-23T05:38:15.940Z","upstream_cluster":"outbound|80||xboard.airport-prod.svc.cluster.local","upstream_host":"10.0.1.7:80","upstream_local_address":"10.0.0.5:40000","upstream_service_time":"11","upstream_transport_failure_reason":null,"user_agent":"go-resty/2.7.0 (https://github.com/go-resty/resty)","x_forwarded_for":"203.0.113.11"}"#;

    #[test]
    fn quote_index_finds_every_quote_and_rejects_escapes_and_controls() {
        let line = br#"{"a":"bc","d":12,"e":null}"#;
        let q = Quotes::index(line).unwrap();
        let want: Vec<u32> = (0u32..)
            .zip(line.iter())
            .filter(|(_, &b)| b == b'"')
            .map(|(i, _)| i)
            .collect();
        assert_eq!(&q.positions[..q.len], &want[..]);
        assert!(Quotes::index(br#"{"a":"b\"c"}"#).is_none());
        assert!(Quotes::index(b"{\"a\":\"b\tc\"}").is_none());
        assert!(Quotes::index("\"".repeat(Quotes::MAX + 1).as_bytes()).is_none());
    }

    #[test]
    fn quote_index_classifies_every_byte_at_every_block_offset() {
        for b in 0..=255u8 {
            // 40 bytes: two full 16-byte blocks and a tail, so every path is taken.
            for pos in 0..40 {
                let mut line = vec![b'a'; 40];
                line[pos] = b;
                let rejected = b < 0x20 || b == b'\\';
                match Quotes::index(&line) {
                    None => assert!(rejected, "byte {b:#x} at {pos} rejected"),
                    Some(q) => {
                        assert!(!rejected, "byte {b:#x} at {pos} accepted");
                        let want: &[u32] = if b == b'"' { &[pos as u32] } else { &[] };
                        assert_eq!(&q.positions[..q.len], want, "byte {b:#x} at {pos}");
                    }
                }
            }
        }
    }

    #[test]
    fn typed_json_from_envoy() {
        let r = parse(TYPED.as_bytes()).unwrap();
        assert_eq!(r.start_time_ms, 1_795_412_295_940);
        assert_eq!(r.method.as_deref(), Some("GET"));
        assert_eq!(r.response_code, 200);
        assert_eq!(r.bytes_sent, 120);
        assert_eq!(r.duration_ms, Some(12));
        assert_eq!(r.response_flags, None);
        assert_eq!(
            r.downstream_remote_address.as_deref(),
            Some("203.0.113.11:51234")
        );
        assert_eq!(
            r.upstream_cluster.as_deref(),
            Some("outbound|80||xboard.airport-prod.svc.cluster.local")
        );
        assert!(
            matches!(r.path, Some(Cow::Borrowed(_))),
            "no copy without escapes"
        );
    }

    #[test]
    fn string_typed_legacy_json() {
        let line = r#"{"start_time":"2026-11-23T05:38:15.940Z","response_code":"503","duration":"7","bytes_sent":"-","bytes_received":"","response_flags":"UF,URX","x_forwarded_for":"-"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.response_code, 503);
        assert_eq!(r.duration_ms, Some(7));
        assert_eq!(r.bytes_sent, 0);
        assert_eq!(r.response_flags.as_deref(), Some("UF,URX"));
        assert_eq!(r.x_forwarded_for, None);
    }

    #[test]
    fn key_order_and_unknown_keys_do_not_matter() {
        let line = r#"{"extra":{"nested":[1,2,{"a":null}]},"response_code":0,"start_time":"2026-11-23T05:38:15Z","duration":null}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.response_code, 0);
        assert_eq!(r.duration_ms, None);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let line = r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200,"user_agent":"a \"quoted\" agent\u00e9"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.user_agent.as_deref(), Some("a \"quoted\" agenté"));
    }

    #[test]
    fn float_numbers_that_are_integral_are_accepted() {
        let line = r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200.0,"duration":3.0}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!((r.response_code, r.duration_ms), (200, Some(3)));
    }

    #[test]
    fn malformed_inputs_have_reasons() {
        let cases: &[(&str, &str)] = &[
            ("", "json_syntax"),
            ("{", "json_syntax"),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200"#,
                "json_syntax",
            ),
            ("[1,2]", "json_type"),
            (r#"{"response_code":200}"#, "missing_field"),
            (r#"{"start_time":"2026-11-23T05:38:15Z"}"#, "missing_field"),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":null}"#,
                "missing_field",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":"abc"}"#,
                "bad_number",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":-1}"#,
                "bad_number",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":1.5}"#,
                "bad_number",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":42}"#,
                "bad_number",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":1000}"#,
                "bad_number",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200,"duration":" 5"}"#,
                "bad_number",
            ),
            (
                r#"{"start_time":"yesterday","response_code":200}"#,
                "bad_timestamp",
            ),
            (r#"{"start_time":17,"response_code":200}"#, "json_type"),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":true}"#,
                "json_type",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200,"path":{"a":1}}"#,
                "json_type",
            ),
            (
                r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200,"response_code":201}"#,
                "json_type",
            ),
        ];
        for (line, reason) in cases {
            let e = parse(line.as_bytes()).unwrap_err();
            assert_eq!(e.reason(), *reason, "{line}: {e}");
        }
    }
}
