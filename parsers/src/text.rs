//! Istio's default TEXT access-log format, parsed with `nom`.
//!
//! The format is `EnvoyTextLogFormat` in istio/istio `pilot/pkg/model/telemetry_logging.go`:
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
//! (one line). Envoy does not escape quoted fields, and four adjacent ones are client-controlled
//! (X-Forwarded-For, User-Agent, X-Request-Id, :authority). The parser therefore reads the
//! Envoy-controlled prefix from the left and the Envoy-controlled suffix (`"%UPSTREAM_HOST%"` and
//! the six unquoted fields, including `%DOWNSTREAM_REMOTE_ADDRESS%`) from the right. If the
//! client-controlled middle splits into anything but exactly four quoted fields, those four are
//! reported as `None`: a forged `"` can then never shift another value into the
//! X-Forwarded-For position, and `downstream_remote_address` stays trustworthy.

use std::borrow::Cow;

use nom::bytes::complete::{tag, take_till1, take_until};
use nom::character::complete::{char, digit1};
use nom::{IResult, Parser};

use crate::json::{parse_decimal, status_code};
use crate::time::parse_rfc3339_ms;
use crate::{AccessRecord, ParseError};

/// Parses one Istio TEXT access-log line (trailing `\r`/`\n` allowed).
///
/// # Errors
/// [`ParseError::NotUtf8`], [`ParseError::TextSyntax`] naming the part that failed,
/// [`ParseError::BadNumber`], [`ParseError::BadTimestamp`].
///
/// ```
/// let line = br#"[2026-11-23T05:38:15.940Z] "GET /api/v1/server/UniProxy/user?node_id=1 HTTP/1.1" 304 - via_upstream - "-" 0 0 3 2 "203.0.113.11" "go-resty/2.7.0" "id-1" "panel" "10.0.1.7:80" outbound|80||xboard.airport-prod.svc.cluster.local 10.0.0.5:4000 10.0.0.5:8080 203.0.113.11:51234 - xboard-route"#;
/// let rec = vpslens_parsers::text::parse(line).unwrap();
/// assert_eq!(rec.response_code, 304);
/// assert_eq!(rec.downstream_remote_address.as_deref(), Some("203.0.113.11:51234"));
/// ```
pub fn parse(line: &[u8]) -> Result<AccessRecord<'_>, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let syntax = |what| ParseError::TextSyntax { what };

    // --- Envoy-controlled suffix, read from the right -------------------------------------
    let last_quote = line.rfind('"').ok_or(syntax("no quoted fields"))?;
    let tail = &line[last_quote + 1..];
    let mut tokens = tail.split(' ');
    if tokens.next() != Some("") {
        return Err(syntax("suffix after %UPSTREAM_HOST%"));
    }
    let mut six = [""; 6];
    for slot in &mut six {
        *slot = tokens
            .next()
            .filter(|t| !t.is_empty())
            .ok_or(syntax("suffix fields"))?;
    }
    if tokens.next().is_some() {
        return Err(syntax("suffix has extra fields"));
    }
    let [upstream_cluster, _ula, _dla, dra, _sni, _route] = six;
    let before_last = &line[..last_quote];
    let open_host = before_last
        .rfind('"')
        .ok_or(syntax("%UPSTREAM_HOST% quote"))?;
    let head_and_middle = before_last[..open_host]
        .strip_suffix(' ')
        .ok_or(syntax("%UPSTREAM_HOST% separator"))?;

    // --- Envoy-controlled prefix, read from the left with nom -----------------------------
    let (rest, prefix) = prefix(head_and_middle).map_err(|_| syntax("prefix"))?;

    // --- Client-controlled middle: "XFF" "UA" "REQID" "AUTHORITY" -------------------------
    let middle = rest
        .strip_prefix('"')
        .and_then(|m| m.strip_suffix('"'))
        .ok_or(syntax("quoted request headers"))?;
    let mut parts = middle.split("\" \"");
    let fields: [Option<&str>; 4] = [parts.next(), parts.next(), parts.next(), parts.next()];
    let unambiguous = parts.next().is_none() && fields.iter().all(Option::is_some);
    let quoted = |i: usize| -> Option<Cow<'_, str>> {
        if unambiguous {
            fields[i].and_then(value).map(Cow::Borrowed)
        } else {
            None
        }
    };

    let code = parse_decimal(prefix.code).ok_or(ParseError::BadNumber {
        field: "response_code",
    })?;
    let number = |field: &'static str, s: &str| -> Result<Option<u64>, ParseError> {
        match value(s) {
            None => Ok(None),
            Some(v) => parse_decimal(v)
                .map(Some)
                .ok_or(ParseError::BadNumber { field }),
        }
    };
    Ok(AccessRecord {
        start_time_ms: parse_rfc3339_ms(prefix.start_time)?,
        method: value(prefix.method).map(Cow::Borrowed),
        path: value(prefix.path).map(Cow::Borrowed),
        response_code: status_code(code)?,
        response_flags: value(prefix.flags).map(Cow::Borrowed),
        bytes_received: number("bytes_received", prefix.bytes_received)?.unwrap_or(0),
        bytes_sent: number("bytes_sent", prefix.bytes_sent)?.unwrap_or(0),
        duration_ms: number("duration", prefix.duration)?,
        x_forwarded_for: quoted(0),
        downstream_remote_address: value(dra).map(Cow::Borrowed),
        upstream_cluster: value(upstream_cluster).map(Cow::Borrowed),
    })
}

/// Envoy prints `-` for a missing value.
fn value(s: &str) -> Option<&str> {
    if s.is_empty() || s == "-" {
        None
    } else {
        Some(s)
    }
}

struct Prefix<'a> {
    start_time: &'a str,
    method: &'a str,
    path: &'a str,
    code: &'a str,
    flags: &'a str,
    bytes_received: &'a str,
    bytes_sent: &'a str,
    duration: &'a str,
}

fn token(i: &str) -> IResult<&str, &str> {
    take_till1(|c| c == ' ').parse(i)
}

/// `[START] "METHOD PATH PROTO" CODE FLAGS DETAILS TERM "UTFR" BR BS DUR UST ` — everything up
/// to the opening quote of X-Forwarded-For.
fn prefix(i: &str) -> IResult<&str, Prefix<'_>> {
    let (i, (_, start_time, _)) = (char('['), take_until("]"), tag("] \"")).parse(i)?;
    let (i, (method, _)) = (token, char(' ')).parse(i)?;
    // The protocol is checked (`HTTP/…` or `-`) but not kept.
    let (i, (path, _protocol)) = request_target(i)?;
    let (i, (code, _, flags, _, _details, _, _term, _)) = (
        digit1,
        char(' '),
        token,
        char(' '),
        token,
        char(' '),
        token,
        tag(" \""),
    )
        .parse(i)?;
    let (i, (_utfr, _)) = (take_until("\" "), tag("\" ")).parse(i)?;
    let (i, (bytes_received, _, bytes_sent, _, duration, _, _ust, _)) = (
        token,
        char(' '),
        token,
        char(' '),
        token,
        char(' '),
        token,
        char(' '),
    )
        .parse(i)?;
    Ok((
        i,
        Prefix {
            start_time,
            method,
            path,
            code,
            flags,
            bytes_received,
            bytes_sent,
            duration,
        },
    ))
}

/// `PATH PROTO" ` up to the response code: the first `" <digits> ` whose preceding word is a
/// protocol (`HTTP/…` or `-`). Paths cannot contain spaces, but a raw `"` is tolerated.
fn request_target(i: &str) -> IResult<&str, (&str, &str)> {
    let fail = || nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Verify));
    let mut from = 0;
    while let Some(off) = i[from..].find("\" ") {
        let q = from + off;
        let after = &i[q + 2..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after.as_bytes().get(digits) == Some(&b' ') {
            let req = &i[..q];
            if let Some((path, proto)) = req.rsplit_once(' ') {
                if proto == "-" || proto.starts_with("HTTP/") {
                    return Ok((after, (path, proto)));
                }
            }
        }
        from = q + 1;
    }
    Err(fail())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"[2026-11-23T05:38:15.940Z] "POST /api/v1/server/UniProxy/push?node_id=2&node_type=vless&token=FAKE-TOKEN-do-not-use HTTP/1.1" 503 UF,URX upstream_reset_before_response_started{connection_failure} - "delayed_connect_error:_111" 532 91 1004 - "198.51.100.77,203.0.113.12" "go-resty/2.7.0 (https://github.com/go-resty/resty)" "8e0f-11" "panel.example.com" "10.0.1.7:80" outbound|80||xboard.airport-prod.svc.cluster.local - 10.0.0.5:8080 203.0.113.12:40001 - xboard-route"#;

    #[test]
    fn parses_istio_default_text() {
        let r = parse(LINE.as_bytes()).unwrap();
        assert_eq!(r.start_time_ms, 1_795_412_295_940);
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert!(r
            .path
            .as_deref()
            .unwrap()
            .starts_with("/api/v1/server/UniProxy/push?"));
        assert_eq!(r.response_code, 503);
        assert_eq!(r.response_flags.as_deref(), Some("UF,URX"));
        assert_eq!((r.bytes_received, r.bytes_sent), (532, 91));
        assert_eq!(r.duration_ms, Some(1004));
        assert_eq!(
            r.x_forwarded_for.as_deref(),
            Some("198.51.100.77,203.0.113.12")
        );
        assert_eq!(
            r.downstream_remote_address.as_deref(),
            Some("203.0.113.12:40001")
        );
        assert_eq!(
            r.upstream_cluster.as_deref(),
            Some("outbound|80||xboard.airport-prod.svc.cluster.local")
        );
    }

    #[test]
    fn quote_in_user_agent_drops_only_the_client_fields() {
        // Regression: an unescaped `"` in a client header must not move the XFF window.
        let line = LINE.replace(
            "go-resty/2.7.0 (https://github.com/go-resty/resty)",
            r#"evil" "203.0.113.11"#,
        );
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.x_forwarded_for, None);
        assert_eq!(
            r.downstream_remote_address.as_deref(),
            Some("203.0.113.12:40001"),
            "suffix still read from the right"
        );
        // A lone quote that does not form a separator keeps the fields.
        let line = LINE.replace("go-resty/2.7.0", r#"go-"resty"#);
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(
            r.x_forwarded_for.as_deref(),
            Some("198.51.100.77,203.0.113.12")
        );
    }

    #[test]
    fn dashes_and_code_zero() {
        let line = r#"[2026-11-23T05:38:15Z] "GET /x - -" 0 DC downstream_remote_disconnect - "-" 0 0 - - "-" "-" "-" "-" "-" - - - [2001:db8:1::10]:4000 - -"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.response_code, 0);
        assert_eq!(r.duration_ms, None);
        assert_eq!(r.x_forwarded_for, None);
        assert_eq!(r.upstream_cluster, None);
        assert_eq!(
            r.downstream_remote_address.as_deref(),
            Some("[2001:db8:1::10]:4000")
        );
    }

    #[test]
    fn sni_with_space_cannot_shift_the_remote_address() {
        // Regression: a client-chosen SNI containing a space would move
        // %DOWNSTREAM_REMOTE_ADDRESS% if the suffix were split loosely.
        let line = LINE.replace(" - xboard-route", " 203.0.113.11:1 x xboard-route");
        assert_eq!(
            parse(line.as_bytes()).unwrap_err(),
            ParseError::TextSyntax {
                what: "suffix has extra fields"
            }
        );
    }

    #[test]
    fn malformed_text_lines() {
        let cases: &[(&str, &str)] = &[
            ("", "text_syntax"),
            ("[2026-11-23T05:38:15Z] garbage", "text_syntax"),
            (&LINE[..LINE.len() - 20], "text_syntax"),
            (&LINE.replace("\" 503 ", "\" 5x3 "), "text_syntax"),
            (&LINE.replace("\" 503 ", "\" 1234 "), "bad_number"),
            (&LINE.replace(" 532 91 ", " 532 9x1 "), "bad_number"),
            (
                &LINE.replace("2026-11-23T05:38:15.940Z", "yesterday"),
                "bad_timestamp",
            ),
            (&LINE.replace("xboard-route", ""), "text_syntax"),
        ];
        for (line, reason) in cases {
            let e = parse(line.as_bytes()).unwrap_err();
            assert_eq!(e.reason(), *reason, "{line}: {e}");
        }
        assert_eq!(parse(b"[\xff]").unwrap_err(), ParseError::NotUtf8);
    }
}
