//! Evidence that a file holds the bytes a followed file had: digests of its first line and of
//! the bytes just before a recorded offset. See the identity rule in [`super`].

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes before the recorded offset that are digested (several Envoy lines of ~800 bytes, so
/// request ids and start times of distinct requests are inside).
pub const TAIL_BYTES: u64 = 4096;
/// Longest first line digested (bytes); a longer first line is digested up to this length.
pub const HEAD_MAX: u64 = 64 * 1024;

/// A SHA-256 digest, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        Digest(out)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let hex = String::deserialize(d)?;
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(serde::de::Error::custom("digest: expected 64 hex digits"));
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(serde::de::Error::custom("digest: not lower-case hex")),
        };
        let mut out = [0; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = nib(bytes[2 * i])? << 4 | nib(bytes[2 * i + 1])?;
        }
        Ok(Digest(out))
    }
}

/// What a file must hold to be taken for a recorded one at a recorded `offset` (a line
/// boundary > 0): the same whole first line and the same [`TAIL_BYTES`] before `offset`, so
/// at least `offset` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Length of the first line including its newline (bytes, at most [`HEAD_MAX`]).
    pub head_len: u64,
    /// SHA-256 of bytes `[0, head_len)`.
    pub head_sha256: Digest,
    /// Bytes digested before the offset (`min(offset, TAIL_BYTES)`).
    pub tail_len: u64,
    /// SHA-256 of bytes `[offset - tail_len, offset)`.
    pub tail_sha256: Digest,
}

/// Fills `buf` from `f` at `at`; false if the file is shorter or unreadable.
fn fill_at(f: &File, at: u64, buf: &mut [u8]) -> bool {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => return false,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads `len` bytes at `at`; `None` if the file is shorter or unreadable.
pub fn read_exact_at(f: &File, at: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(len).ok()?];
    fill_at(f, at, &mut buf).then_some(buf)
}

/// Whether `f` holds `expected` at `at` (false if shorter or unreadable). Compares a
/// [`TAIL_BYTES`] stack buffer at a time: the tailer checks this after every read.
pub fn holds_at(f: &File, at: u64, expected: &[u8]) -> bool {
    let mut buf = [0u8; TAIL_BYTES as usize];
    let mut pos = at;
    expected.chunks(buf.len()).all(|want| {
        let got = &mut buf[..want.len()];
        let ok = fill_at(f, pos, got) && *got == *want;
        pos += want.len() as u64;
        ok
    })
}

/// The first line of `f` (with its newline) if it ends before `limit`; at most [`HEAD_MAX`]
/// bytes (a longer first line is cut there).
pub fn first_line(f: &File, limit: u64) -> Option<Vec<u8>> {
    let len = limit.min(HEAD_MAX);
    let mut head = read_exact_at(f, 0, len)?;
    if let Some(i) = memchr::memchr(b'\n', &head) {
        head.truncate(i + 1);
        Some(head)
    } else if len == HEAD_MAX {
        Some(head)
    } else {
        None
    }
}

impl Evidence {
    /// Evidence for `f` read up to `offset` (a line boundary); `None` at offset 0 or when the
    /// bytes cannot be read (the file shrank meanwhile).
    pub fn of(f: &File, offset: u64) -> Option<Evidence> {
        if offset == 0 {
            return None;
        }
        let head = first_line(f, offset)?;
        let tail_len = offset.min(TAIL_BYTES);
        let tail = read_exact_at(f, offset - tail_len, tail_len)?;
        Some(Evidence {
            head_len: head.len() as u64,
            head_sha256: Digest::of(&head),
            tail_len,
            tail_sha256: Digest::of(&tail),
        })
    }

    /// Evidence from the first line and the bytes before `offset`, already in memory.
    pub fn from_parts(head: &[u8], tail: &[u8]) -> Evidence {
        Evidence {
            head_len: head.len() as u64,
            head_sha256: Digest::of(head),
            tail_len: tail.len() as u64,
            tail_sha256: Digest::of(tail),
        }
    }

    /// `f` starts with the same first line.
    pub fn head_matches(&self, f: &File) -> bool {
        read_exact_at(f, 0, self.head_len).is_some_and(|h| Digest::of(&h) == self.head_sha256)
    }

    /// `f` holds the same first line and the same bytes before `offset` (so it is at least
    /// `offset` bytes long).
    pub fn matches(&self, f: &File, offset: u64) -> bool {
        if self.tail_len > offset {
            return false;
        }
        let tail_ok = read_exact_at(f, offset - self.tail_len, self.tail_len)
            .is_some_and(|t| Digest::of(&t) == self.tail_sha256);
        tail_ok
            && read_exact_at(f, 0, self.head_len)
                .is_some_and(|h| Digest::of(&h) == self.head_sha256)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = t.reopen().unwrap();
        (t, f)
    }

    #[test]
    fn digest_hex_roundtrip() {
        let d = Digest::of(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
    }

    #[test]
    fn evidence_tells_identical_heads_apart() {
        let head = "x".repeat(300);
        let a = format!("{head}-1\n{head}-2\n");
        let b = format!("{head}-1\n{head}-3\n");
        let (_ta, fa) = file(a.as_bytes());
        let (_tb, fb) = file(b.as_bytes());
        let off = a.len() as u64;
        let e = Evidence::of(&fa, off).unwrap();
        assert!(e.matches(&fa, off));
        assert!(
            !e.matches(&fb, off),
            "same head, different bytes before the offset"
        );
        let (_tc, fc) = file(&a.as_bytes()[..a.len() - 1]);
        assert!(!e.matches(&fc, off), "shorter than the offset");
        assert!(Evidence::of(&fa, 0).is_none());
    }
}
