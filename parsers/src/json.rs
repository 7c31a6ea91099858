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
    let raw: RawRecord<'_> = serde_json::from_slice(line).map_err(map_json_error)?;
    raw.into_record()
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
#[derive(Deserialize)]
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
