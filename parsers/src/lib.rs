//! Pure parsers for vpslens: Envoy/Istio access-log lines in, typed records out.
//!
//! **Architecture Invariant:** this crate never does I/O, never spawns, never uses tokio and never
//! panics on input: every malformed input yields a [`ParseError`] with a stable
//! [`reason`](ParseError::reason). Fuzz targets live in `parsers/fuzz/`.
//!
//! - [`json`]: Istio's default JSON format (`EnvoyJSONLogFormatIstio`), typed or string values.
//! - [`text`]: Istio's default TEXT format (`EnvoyTextLogFormat`), parsed with `nom`.
//! - [`client`]: the real client address (`downstream_remote_address` or trusted XFF hop).
//! - [`route`]: path → bounded route label, `node_id`/`node_type`, never the `token`.
//! - [`cluster`]: Istio cluster names (`outbound|80||svc.ns.svc.cluster.local`).
//! - [`container`]: CRI and docker `json-file` framing with partial-line reassembly.
//! - [`time`]: RFC 3339 `%START_TIME%`.
//!
//! ```
//! use vpslens_parsers::{parse_line, LogFormat, client, route::RouteTable};
//! let line = br#"{"start_time":"2026-11-23T05:38:15.940Z","method":"GET","path":"/api/v1/server/UniProxy/user?node_id=1&node_type=vless&token=FAKE","response_code":304,"duration":3,"downstream_remote_address":"203.0.113.11:40000"}"#;
//! let rec = parse_line(line, LogFormat::Auto).unwrap();
//! let ip = client::client_address(&rec, client::ClientAddressSource::DownstreamRemote).unwrap();
//! let routes = RouteTable::default();
//! let target = routes.classify(rec.path.as_deref().unwrap_or(""));
//! assert_eq!((ip.to_string().as_str(), routes.label(target.route)), ("203.0.113.11", "/api/v1/server/UniProxy/user"));
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod container;
mod error;
pub mod json;
mod record;
pub mod route;
pub mod text;
pub mod time;

pub use error::{ParseError, ParseErrorKind};
pub use record::AccessRecord;

/// Which access-log format a source writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Per line: `{` → JSON, `[` → TEXT (leading whitespace skipped).
    #[default]
    Auto,
    /// Istio's default JSON format.
    IstioJson,
    /// Istio's default TEXT format.
    IstioText,
}

/// Parses one access-log line (no framing) in `format`.
///
/// # Errors
/// [`ParseError::Empty`] for blank lines, [`ParseError::UnknownFormat`] when `Auto` sees neither
/// `{` nor `[`, else the format parser's error.
pub fn parse_line(line: &[u8], format: LogFormat) -> Result<AccessRecord<'_>, ParseError> {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(ParseError::Empty)?;
    let line = &line[start..];
    match format {
        LogFormat::IstioJson => json::parse(line),
        LogFormat::IstioText => text::parse(line),
        LogFormat::Auto => match line[0] {
            b'{' => json::parse(line),
            b'[' => text::parse(line),
            _ => Err(ParseError::UnknownFormat),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_detection() {
        assert_eq!(
            parse_line(b"   \n", LogFormat::Auto),
            Err(ParseError::Empty)
        );
        assert_eq!(
            parse_line(b"hello", LogFormat::Auto),
            Err(ParseError::UnknownFormat)
        );
        assert_eq!(
            parse_line(b"{", LogFormat::Auto).unwrap_err().reason(),
            "json_syntax"
        );
        assert_eq!(
            parse_line(b"[", LogFormat::Auto).unwrap_err().reason(),
            "text_syntax"
        );
        assert_eq!(
            parse_line(b"[", LogFormat::IstioJson).unwrap_err().reason(),
            "json_syntax"
        );
    }
}
