//! Kubernetes container-log framing: CRI and docker `json-file`.
//!
//! - CRI (containerd, CRI-O; kubelet `pkg/kubelet/kuberuntime/logs`):
//!   `<RFC3339Nano> <stdout|stderr> <P|F> <message>`. `P` marks a partial chunk (containerd
//!   splits lines at 16 KiB), `F` the final chunk of a line. Timestamps vary in width.
//! - docker `json-file`: `{"log":"<message>\n","stream":"stdout","time":"…"}`; a `log` value
//!   without a trailing `\n` is a partial chunk (docker splits at 16 KiB).
//!
//! [`Reassembler`] joins partial chunks into whole lines under a byte limit.

use std::borrow::Cow;

use serde::Deserialize;

use crate::ParseError;

/// How the lines of a file are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One access-log entry per line (Envoy writing a file directly).
    Raw,
    /// CRI container-log lines.
    Cri,
    /// docker `json-file` lines.
    DockerJson,
}

/// Guesses the framing from a file's first line.
///
/// ```
/// use vpslens_parsers::container::{detect_framing, Framing};
/// assert_eq!(detect_framing(b"2026-11-23T05:38:15.940123456Z stdout F {\"a\":1}"), Framing::Cri);
/// assert_eq!(detect_framing(br#"{"log":"x\n","stream":"stdout","time":"t"}"#), Framing::DockerJson);
/// assert_eq!(detect_framing(br#"{"start_time":"2026-11-23T05:38:15Z"}"#), Framing::Raw);
/// ```
pub fn detect_framing(first_line: &[u8]) -> Framing {
    if first_line.starts_with(b"{\"log\":") {
        return Framing::DockerJson;
    }
    if parse_cri(first_line).is_ok() {
        return Framing::Cri;
    }
    Framing::Raw
}

/// Output stream of a container-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (where Istio's default `/dev/stdout` access log goes).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One container-log chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Which stream wrote it.
    pub stream: Stream,
    /// False for a partial chunk (more of the same line follows).
    pub last: bool,
    /// The chunk's bytes, without framing and without the line's newline.
    pub message: Cow<'a, [u8]>,
}

/// Parses a CRI line `<time> <stream> <P|F> <message>`.
///
/// # Errors
/// [`ParseError::CriSyntax`] naming the part that failed.
pub fn parse_cri(line: &[u8]) -> Result<Chunk<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let err = |what| ParseError::CriSyntax { what };
    let sp = memchr::memchr(b' ', line).ok_or(err("timestamp"))?;
    let ts = std::str::from_utf8(&line[..sp]).map_err(|_| err("timestamp"))?;
    crate::time::parse_rfc3339_ms(ts).map_err(|_| err("timestamp"))?;
    let rest = &line[sp + 1..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return Err(err("stream"));
    };
    let (last, message) = match rest {
        [b'F', b' ', msg @ ..] => (true, msg),
        [b'P', b' ', msg @ ..] => (false, msg),
        [b'F'] => (true, &[][..]),
        [b'P'] => (false, &[][..]),
        _ => return Err(err("tag")),
    };
    Ok(Chunk {
        stream,
        last,
        message: Cow::Borrowed(message),
    })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
}

/// Parses a docker `json-file` line.
///
/// # Errors
/// [`ParseError::DockerSyntax`].
pub fn parse_docker(line: &[u8]) -> Result<Chunk<'_>, ParseError> {
    let d: DockerLine<'_> = serde_json::from_slice(line).map_err(|_| ParseError::DockerSyntax)?;
    let stream = match d.stream.as_deref() {
        Some("stderr") => Stream::Stderr,
        _ => Stream::Stdout,
    };
    let (last, message) = match d.log {
        Cow::Borrowed(s) => match s.strip_suffix('\n') {
            Some(m) => (true, Cow::Borrowed(m.as_bytes())),
            None => (false, Cow::Borrowed(s.as_bytes())),
        },
        Cow::Owned(mut s) => {
            let last = s.ends_with('\n');
            if last {
                s.pop();
            }
            (last, Cow::Owned(s.into_bytes()))
        }
    };
    Ok(Chunk {
        stream,
        last,
        message,
    })
}

/// What [`Reassembler::push`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled<'a> {
    /// A whole line (borrowed when it was a single final chunk).
    Line(Cow<'a, [u8]>),
    /// A partial chunk was buffered; nothing to emit yet.
    Pending,
    /// The joined line exceeded the limit; it is dropped whole (count it once).
    TooLong,
}

/// Joins partial container-log chunks of one stream into lines, keeping at most `max_line_bytes`
/// buffered. A line longer than that is dropped in full and reported once as
/// [`Assembled::TooLong`].
///
/// ```
/// use vpslens_parsers::container::{parse_cri, Assembled, Reassembler};
/// let mut r = Reassembler::new(1024);
/// let a = parse_cri(b"2026-11-23T05:38:15Z stdout P {\"a\":").unwrap();
/// assert_eq!(r.push(a), Assembled::Pending);
/// let b = parse_cri(b"2026-11-23T05:38:15Z stdout F 1}").unwrap();
/// assert_eq!(r.push(b), Assembled::Line(b"{\"a\":1}".to_vec().into()));
/// ```
#[derive(Debug)]
pub struct Reassembler {
    max_line_bytes: usize,
    buf: Vec<u8>,
    overflowed: bool,
}

impl Reassembler {
    /// A reassembler that drops lines longer than `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        Reassembler {
            max_line_bytes,
            buf: Vec::new(),
            overflowed: false,
        }
    }

    /// True when a partial line is buffered (a checkpoint taken now would split it).
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty() || self.overflowed
    }

    /// Feeds one chunk.
    pub fn push<'a>(&mut self, chunk: Chunk<'a>) -> Assembled<'a> {
        if !self.overflowed && self.buf.len() + chunk.message.len() > self.max_line_bytes {
            self.overflowed = true;
            self.buf = Vec::new();
        }
        if chunk.last {
            if self.overflowed {
                self.overflowed = false;
                return Assembled::TooLong;
            }
            if self.buf.is_empty() {
                return Assembled::Line(chunk.message);
            }
            let mut line = std::mem::take(&mut self.buf);
            line.extend_from_slice(&chunk.message);
            return Assembled::Line(Cow::Owned(line));
        }
        if !self.overflowed {
            self.buf.extend_from_slice(&chunk.message);
        }
        Assembled::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_variants() {
        let c = parse_cri(b"2026-11-23T05:38:15.9Z stderr F hello world\n").unwrap();
        assert_eq!(c.stream, Stream::Stderr);
        assert!(c.last);
        assert_eq!(&*c.message, b"hello world");
        let c = parse_cri(b"2026-11-23T05:38:15.123456789+00:00 stdout P").unwrap();
        assert!(!c.last);
        assert!(c.message.is_empty());
    }

    #[test]
    fn cri_errors() {
        for (line, what) in [
            (&b"nospace"[..], "timestamp"),
            (b"notatime stdout F x", "timestamp"),
            (b"2026-11-23T05:38:15Z stdin F x", "stream"),
            (b"2026-11-23T05:38:15Z stdout X x", "tag"),
            (b"2026-11-23T05:38:15Z stdout Fx", "tag"),
        ] {
            assert_eq!(parse_cri(line), Err(ParseError::CriSyntax { what }));
        }
    }

    #[test]
    fn docker_lines() {
        let c = parse_docker(
            br#"{"log":"{\"a\":1}\n","stream":"stdout","time":"2026-11-23T05:38:15Z"}"#,
        )
        .unwrap();
        assert!(c.last);
        assert_eq!(&*c.message, br#"{"a":1}"#);
        let c = parse_docker(br#"{"log":"part","stream":"stderr"}"#).unwrap();
        assert!(!c.last);
        assert_eq!(c.stream, Stream::Stderr);
        assert_eq!(parse_docker(b"{\"log\":1}"), Err(ParseError::DockerSyntax));
        assert_eq!(parse_docker(b"not json"), Err(ParseError::DockerSyntax));
    }

    #[test]
    fn reassembler_limits_memory_and_recovers() {
        let mut r = Reassembler::new(8);
        let chunk = |m: &'static [u8], last| Chunk {
            stream: Stream::Stdout,
            last,
            message: Cow::Borrowed(m),
        };
        assert_eq!(r.push(chunk(b"12345", false)), Assembled::Pending);
        assert_eq!(r.push(chunk(b"67890", false)), Assembled::Pending);
        assert!(r.is_pending());
        assert_eq!(r.push(chunk(b"x", true)), Assembled::TooLong);
        assert!(!r.is_pending());
        assert_eq!(
            r.push(chunk(b"ok", true)),
            Assembled::Line(Cow::Borrowed(b"ok"))
        );
        assert_eq!(r.push(chunk(b"123456789", true)), Assembled::TooLong);
    }
}
