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
        Some(rec) => Ok(rec),
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

/// The fast path: a single-pass scanner for the flat objects Envoy's `json_format` prints,
/// filling the record directly.
///
/// It accepts only the plain, valid case: valid UTF-8 without control characters or backslashes
/// (so no escapes), string, `null` and non-negative integer values, no nesting, no repeated known
/// key, compact or space-separated tokens, and values that convert without error. Anything else
/// returns `None` and the caller falls back to `serde_json`, which then decides (including every
/// error). Whatever it returns is exactly what the `serde_json` path would have built
/// (`parsers/tests/json_differential.rs`).
fn scan(line: &[u8]) -> Option<AccessRecord<'_>> {
    // The whole line is valid UTF-8 (so every slice between two `"` is a `str`). The quote
    // cursor rejects control characters (forbidden in JSON strings) and backslashes (no
    // escapes) in every chunk it loads, and it loads every chunk that holds part of a string.
    // Without escapes every `"` opens or closes a string, so strings are consecutive quote pairs.
    let text = simdutf8::basic::from_utf8(line).ok()?;
    // String bounds are stored as two u32s.
    u32::try_from(line.len()).ok()?;
    let mut q = QuoteCursor::new(line)?;
    let mut rec = Fields::default();
    let mut i = skip_spaces(line, 0);
    if line.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_spaces(line, i + 1);
    if line.get(i) == Some(&b'}') {
        return end(line, i + 1).then(|| rec.finish(text)).flatten();
    }
    loop {
        // Key: the next quote must be right here.
        if q.next()? != i {
            return None;
        }
        let k_end = q.next()?;
        let key = key_slot(line, i + 1, k_end);
        i = k_end + 1;
        if line.get(i) != Some(&b':') {
            i = skip_spaces(line, i);
            if line.get(i) != Some(&b':') {
                return None;
            }
        }
        i = skip_spaces(line, i + 1);
        // Value.
        if line.get(i) == Some(&b'"') {
            if q.next()? != i {
                return None;
            }
            let v_end = q.next()?;
            rec.put(key, Kind::Str, (i as u64 + 1) | ((v_end as u64) << 32))?;
            i = v_end + 1;
        } else {
            let (kind, value, next) = scan_bare(line, i)?;
            rec.put(key, kind, value)?;
            i = next;
        }
        // Envoy prints compact JSON: spaces are only looked for where the separator is not.
        if line.get(i) != Some(&b',') {
            i = skip_spaces(line, i);
            if line.get(i) == Some(&b'}') {
                return end(line, i + 1).then(|| rec.finish(text)).flatten();
            }
            if line.get(i) != Some(&b',') {
                return None;
            }
        }
        i = skip_spaces(line, i + 1);
    }
}

/// Walks the `"` of a line in order, classifying 64 bytes at a time (SIMD through the `wide`
/// crate's safe API). Every chunk it loads is also checked for control characters and
/// backslashes; `next` returns `None` when one was seen.
struct QuoteCursor<'a> {
    line: &'a [u8],
    /// Offset of the chunk `pending` describes.
    base: usize,
    /// Quotes of the current chunk not yet returned (bit `k` = byte `base + k`).
    pending: u64,
}

impl<'a> QuoteCursor<'a> {
    /// A cursor at the first chunk; `None` if that chunk has a control character or backslash.
    #[inline]
    fn new(line: &'a [u8]) -> Option<Self> {
        let pending = match first_chunk(line) {
            Some(chunk) => chunk_quotes(chunk)?,
            None => chunk_quotes(&padded(line))?,
        };
        Some(QuoteCursor {
            line,
            base: 0,
            pending,
        })
    }

    /// The position of the next `"`, or `None` at the end of the line or when a chunk on the way
    /// has a control character or backslash.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.pending == 0 {
            self.refill()?;
        }
        let at = self.base + self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        Some(at)
    }

    /// Loads whole chunks until one has a quote (the line's partial last chunk is
    /// [`QuoteCursor::refill_tail`]'s).
    #[inline(never)]
    fn refill(&mut self) -> Option<()> {
        loop {
            self.base += 64;
            match self.line.get(self.base..).and_then(first_chunk) {
                Some(chunk) => {
                    self.pending = chunk_quotes(chunk)?;
                    if self.pending != 0 {
                        return Some(());
                    }
                }
                None => return self.refill_tail(),
            }
        }
    }

    /// The bytes from `base` to the end of the line, fewer than 64: the line's last 64 bytes are
    /// classified (those before `base` again) and the mask shifted so bit 0 is `base`. Lines
    /// shorter than 64 bytes never get here (their only chunk is the first).
    #[inline(never)]
    fn refill_tail(&mut self) -> Option<()> {
        let len = self.line.len();
        if self.base >= len {
            return None;
        }
        let start = len.checked_sub(64)?;
        let chunk = self.line.get(start..).and_then(first_chunk)?;
        // 0 < base - start < 64: base < len and base + 64 > len.
        self.pending = chunk_quotes(chunk)? >> (self.base - start);
        if self.pending == 0 {
            // No quote left: the end of the line.
            self.base = len;
            return None;
        }
        Some(())
    }
}

/// The first 64 bytes of `bytes`, if it has that many.
#[inline(always)]
fn first_chunk(bytes: &[u8]) -> Option<&[u8; 64]> {
    bytes.first_chunk::<64>()
}

/// A line shorter than 64 bytes, padded with spaces.
#[inline(never)]
fn padded(line: &[u8]) -> [u8; 64] {
    let mut chunk = [b' '; 64];
    for (c, &b) in chunk.iter_mut().zip(line) {
        *c = b;
    }
    chunk
}

/// The quote mask of a 64-byte chunk, or `None` if it holds a control character (0x00–0x1f) or
/// a backslash.
#[inline(always)]
fn chunk_quotes(chunk: &[u8; 64]) -> Option<u64> {
    use wide::u8x16;
    let blocks: [[u8; 16]; 4] = bytemuck::cast(*chunk);
    let mut quotes = 0u64;
    let mut bad = u8x16::splat(0);
    for (k, block) in blocks.into_iter().enumerate() {
        let v = u8x16::from(block);
        // `v - 0x1f` saturates to 0 exactly for the control characters 0x00..=0x1f.
        bad |= v.saturating_sub(u8x16::splat(0x1f)).cmp_eq(u8x16::splat(0))
            | v.cmp_eq(u8x16::splat(b'\\'));
        quotes |= u64::from(v.cmp_eq(u8x16::splat(b'"')).move_mask() as u16) << (16 * k);
    }
    (!bad.any()).then_some(quotes)
}

/// Known keys, as indices into [`Fields`]; the same names as [`RawRecord`]'s fields.
mod key {
    pub const START_TIME: u8 = 0;
    pub const METHOD: u8 = 1;
    pub const PATH: u8 = 2;
    pub const RESPONSE_CODE: u8 = 3;
    pub const RESPONSE_FLAGS: u8 = 4;
    pub const BYTES_RECEIVED: u8 = 5;
    pub const BYTES_SENT: u8 = 6;
    pub const DURATION: u8 = 7;
    pub const X_FORWARDED_FOR: u8 = 8;
    pub const DOWNSTREAM_REMOTE_ADDRESS: u8 = 9;
    pub const UPSTREAM_CLUSTER: u8 = 10;
    /// Any key vpslens ignores (a scratch slot: its values are never read).
    pub const OTHER: u8 = 15;
    /// The known keys' bits.
    pub const KNOWN: u16 = (1 << 11) - 1;
    /// Every known key and its slot.
    pub const ALL: [(&str, u8); 11] = [
        ("start_time", START_TIME),
        ("method", METHOD),
        ("path", PATH),
        ("response_code", RESPONSE_CODE),
        ("response_flags", RESPONSE_FLAGS),
        ("bytes_received", BYTES_RECEIVED),
        ("bytes_sent", BYTES_SENT),
        ("duration", DURATION),
        ("x_forwarded_for", X_FORWARDED_FOR),
        ("downstream_remote_address", DOWNSTREAM_REMOTE_ADDRESS),
        ("upstream_cluster", UPSTREAM_CLUSTER),
    ];
}

/// One entry of [`KEY_TABLE`]: a known key as 32 zero-padded bytes and a mask of its length.
#[derive(Clone, Copy)]
struct KeyEntry {
    /// Bytes 0..16 and 16..32 of the key, zero-padded, little-endian.
    words: [u128; 2],
    /// `0xff` for every byte of the key, 0 after it.
    mask: [u128; 2],
    /// Key length (0 = empty entry).
    len: usize,
    slot: u8,
}

/// Bucket of a key from its first 8 bytes (little-endian, zero-padded for shorter keys) and its
/// length (a multiplicative hash; the odd constant was picked by search to be collision-free
/// over the 14 known keys, which [`build_key_table`] asserts at compile time).
#[inline(always)]
const fn key_bucket(first8: u64, len: usize) -> usize {
    ((first8.wrapping_mul(0x956b_d470_6b06_a7d7) >> 59) as usize ^ len) & 31
}

/// The known keys by [`key_bucket`]: one table load and a masked 32-byte comparison per key
/// instead of a branchy match (the keys of a line come in a fixed order the branch predictor
/// does not learn well).
static KEY_TABLE: [KeyEntry; 32] = build_key_table();

/// Longest key the table holds (longer keys are never known).
const MAX_KEY: usize = 32;

const fn word(bytes: &[u8], from: usize, len: usize) -> u128 {
    let mut w = 0u128;
    let mut j = 0;
    while j < len && from + j < bytes.len() {
        w |= (bytes[from + j] as u128) << (8 * j);
        j += 1;
    }
    w
}

const fn build_key_table() -> [KeyEntry; 32] {
    let empty = KeyEntry {
        words: [0; 2],
        mask: [0; 2],
        len: 0,
        slot: key::OTHER,
    };
    let mut t = [empty; 32];
    let mut n = 0;
    while n < key::ALL.len() {
        let (name, slot) = key::ALL[n];
        let b = name.as_bytes();
        assert!(!b.is_empty() && b.len() <= MAX_KEY);
        #[allow(clippy::cast_possible_truncation)]
        let at = key_bucket(word(b, 0, 8) as u64, b.len());
        assert!(t[at].len == 0, "key table collision");
        let ones = [0xffu8; MAX_KEY];
        t[at] = KeyEntry {
            words: [word(b, 0, 16), word(b, 16, 16)],
            mask: [
                word(ones.split_at(b.len()).0, 0, 16),
                word(ones.split_at(b.len()).0, 16, 16),
            ],
            len: b.len(),
            slot,
        };
        n += 1;
    }
    t
}

/// The [`key`] slot of the JSON key `line[start..end]`.
#[inline(always)]
fn key_slot(line: &[u8], start: usize, end: usize) -> u8 {
    let len = end.wrapping_sub(start);
    // The 32 bytes from the key's start (a key this close to the end of the line is compared
    // byte by byte).
    let Some(w) = line
        .get(start..start.wrapping_add(MAX_KEY))
        .and_then(|w| <&[u8; MAX_KEY]>::try_from(w).ok())
    else {
        return key_slot_slow(line.get(start..end).unwrap_or_default());
    };
    let [lo, hi]: [[u8; 16]; 2] = bytemuck::cast(*w);
    let (lo, hi) = (u128::from_le_bytes(lo), u128::from_le_bytes(hi));
    #[allow(clippy::cast_possible_truncation)]
    let e = &KEY_TABLE[key_bucket(lo as u64 & first8_mask(len), len)];
    // Without branches: whether a key is known varies key by key within a line.
    let differ = ((lo ^ e.words[0]) & e.mask[0]) | ((hi ^ e.words[1]) & e.mask[1]);
    std::hint::select_unpredictable((e.len == len) & (differ == 0), e.slot, key::OTHER)
}

/// The mask of a key's first `min(len, 8)` bytes in a little-endian u64.
#[inline(always)]
fn first8_mask(len: usize) -> u64 {
    // Branch-free; for `len` 0 the shift wraps to 0 (all ones), which is harmless: no table
    // entry has length 0.
    u64::MAX.wrapping_shr(8 * (8 - len.min(8)) as u32)
}

#[cold]
fn key_slot_slow(k: &[u8]) -> u8 {
    key::ALL
        .iter()
        .find(|(name, _)| name.as_bytes() == k)
        .map_or(key::OTHER, |&(_, slot)| slot)
}

/// What a value of [`Fields`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Absent,
    Null,
    /// `val` = start | end << 32 of the string's bytes (without quotes).
    Str,
    /// `val` = the integer.
    Num,
}

/// The values the fast scanner met, by [`key`] slot, stored without branching on the key;
/// converted once at the end ([`Fields::finish`]) in a fixed order.
#[derive(Default)]
struct Fields {
    kind: [Kind; 16],
    val: [u64; 16],
    /// Bit `slot` set once that key was met (a second known one is serde's duplicate-field
    /// error).
    seen: u16,
}

impl Fields {
    /// Records a value; `None` for a duplicate known key.
    #[inline(always)]
    fn put(&mut self, slot: u8, kind: Kind, val: u64) -> Option<()> {
        let k = usize::from(slot & 15);
        let bit = 1u16 << k;
        if self.seen & bit & key::KNOWN != 0 {
            return None;
        }
        self.seen |= bit;
        self.kind[k] = kind;
        self.val[k] = val;
        Some(())
    }

    /// The string at `slot`: `Some(None)` when absent or `null`, `None` for a number.
    #[inline]
    fn str<'a>(&self, text: &'a str, slot: u8) -> Option<Option<&'a str>> {
        let k = usize::from(slot);
        match self.kind[k] {
            Kind::Absent | Kind::Null => Some(None),
            Kind::Num => None,
            Kind::Str => {
                let v = self.val[k];
                #[allow(clippy::cast_possible_truncation)]
                let (start, end) = ((v & 0xffff_ffff) as usize, (v >> 32) as usize);
                text.get(start..end).map(Some)
            }
        }
    }

    /// A text field as [`text`] converts it; `None` where that fails.
    #[inline]
    fn text<'a>(&self, text: &'a str, slot: u8) -> Option<Option<Cow<'a, str>>> {
        Some(
            self.str(text, slot)?
                .filter(|s| !is_empty_marker(s))
                .map(Cow::Borrowed),
        )
    }

    /// A number field as [`number`] converts it; `None` where that fails.
    #[inline]
    fn number(&self, text: &str, slot: u8) -> Option<Option<u64>> {
        let k = usize::from(slot);
        match self.kind[k] {
            Kind::Absent | Kind::Null => Some(None),
            Kind::Num => Some(Some(self.val[k])),
            Kind::Str => match self.str(text, slot)?? {
                s if is_empty_marker(s) => Some(None),
                s => parse_decimal(s).map(Some),
            },
        }
    }

    /// The record as [`RawRecord::into_record`] builds it; `None` where that fails (serde_json
    /// then reports why).
    #[inline]
    fn finish(self, text: &str) -> Option<AccessRecord<'_>> {
        let start = self.str(text, key::START_TIME)??;
        let code = self.number(text, key::RESPONSE_CODE)??;
        Some(AccessRecord {
            start_time_ms: parse_rfc3339_ms(start).ok()?,
            method: self.text(text, key::METHOD)?,
            path: self.text(text, key::PATH)?,
            response_code: status_code(code).ok()?,
            response_flags: self.text(text, key::RESPONSE_FLAGS)?,
            bytes_received: self.number(text, key::BYTES_RECEIVED)?.unwrap_or(0),
            bytes_sent: self.number(text, key::BYTES_SENT)?.unwrap_or(0),
            duration_ms: self.number(text, key::DURATION)?,
            x_forwarded_for: self.text(text, key::X_FORWARDED_FOR)?,
            downstream_remote_address: self.text(text, key::DOWNSTREAM_REMOTE_ADDRESS)?,
            upstream_cluster: self.text(text, key::UPSTREAM_CLUSTER)?,
        })
    }
}

/// Index of the first non-space byte at or after `i`. It runs around every token; in the
/// compact JSON Envoy prints it is one failed compare, so that case is tested before the loop
/// (the loop alone compiles to ~280 more instructions per line).
#[inline]
fn skip_spaces(line: &[u8], mut i: usize) -> usize {
    if line.get(i) != Some(&b' ') {
        return i;
    }
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

/// One non-string value at `i`: returns its [`Kind`] (`Null` or `Num`), its value (0 for `null`)
/// and the index after it, or `None` for anything but `null` or a JSON integer that fits `u64`.
#[inline]
fn scan_bare(line: &[u8], i: usize) -> Option<(Kind, u64, usize)> {
    match *line.get(i)? {
        b'n' => (line.get(i..i + 4)? == b"null").then_some((Kind::Null, 0, i + 4)),
        b'0' => {
            // JSON forbids leading zeros: a lone 0 only.
            let next = line.get(i + 1).copied();
            (!matches!(next, Some(b'0'..=b'9' | b'.' | b'e' | b'E'))).then_some((
                Kind::Num,
                0,
                i + 1,
            ))
        }
        b'1'..=b'9' => {
            let mut n: u64 = 0;
            let mut j = i;
            while let Some(&d @ b'0'..=b'9') = line.get(j) {
                n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                j += 1;
            }
            // Fractions and exponents go to serde_json.
            (!matches!(line.get(j), Some(b'.' | b'e' | b'E'))).then_some((Kind::Num, n, j))
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
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow, default)]
    start_time: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    method: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    path: Option<Scalar<'a>>,
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
        Some(Scalar::Str(s)) if is_empty_marker(&s) => Ok(None),
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
        Some(Scalar::Str(s)) if is_empty_marker(&s) => Ok(None),
        Some(Scalar::Str(s)) => parse_decimal(&s)
            .map(Some)
            .ok_or(ParseError::BadNumber { field }),
        Some(Scalar::Other) => Err(ParseError::JsonType { field }),
    }
}

/// Envoy's "no value" strings: `""` and `"-"` (both paths treat them as absent).
#[inline]
fn is_empty_marker(s: &str) -> bool {
    s.is_empty() || s == "-"
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

    /// Every quote the cursor returns, in order, or `None` if it rejected the line.
    fn all_quotes(line: &[u8]) -> Option<Vec<usize>> {
        let mut q = QuoteCursor::new(line)?;
        let mut out = Vec::new();
        loop {
            match q.next() {
                Some(p) => out.push(p),
                // The end of the line, or a rejected chunk further on.
                None => return (q.base >= line.len()).then_some(out),
            }
        }
    }

    #[test]
    fn quote_cursor_finds_every_quote_and_rejects_escapes_and_controls() {
        let line = br#"{"a":"bc","d":12,"e":null}"#;
        let want: Vec<usize> = (0..line.len()).filter(|&i| line[i] == b'"').collect();
        assert_eq!(all_quotes(line), Some(want));
        assert_eq!(all_quotes(br#"{"a":"b\"c"}"#), None);
        assert_eq!(all_quotes(b"{\"a\":\"b\tc\"}"), None);
        let many = "\"".repeat(1000);
        assert_eq!(all_quotes(many.as_bytes()), Some((0..1000).collect()));
    }

    #[test]
    fn quote_cursor_classifies_every_byte_at_every_chunk_offset() {
        for b in 0..=255u8 {
            // Shorter than a chunk, whole chunks, and partial tails (the tail chunk overlaps the
            // one before it), so every path is taken.
            for (len, pos) in [1, 63, 64, 65, 128, 150, 191]
                .into_iter()
                .flat_map(|len| (0..len).map(move |pos| (len, pos)))
            {
                let mut line = vec![b'a'; len];
                line[pos] = b;
                let rejected = b < 0x20 || b == b'\\';
                match all_quotes(&line) {
                    None => assert!(rejected, "byte {b:#x} at {pos}/{len} rejected"),
                    Some(q) => {
                        assert!(!rejected, "byte {b:#x} at {pos}/{len} accepted");
                        let want: &[usize] = if b == b'"' { &[pos] } else { &[] };
                        assert_eq!(q, want, "byte {b:#x} at {pos}/{len}");
                    }
                }
            }
        }
    }

    #[test]
    fn key_table_knows_exactly_the_known_keys() {
        for (name, slot) in key::ALL {
            // Far from the end (table path) and as the last bytes of the line (byte path).
            let far = format!("\"{name}\":{}", " ".repeat(40));
            assert_eq!(key_slot(far.as_bytes(), 1, 1 + name.len()), slot, "{name}");
            let near = format!("\"{name}");
            assert_eq!(key_slot(near.as_bytes(), 1, near.len()), slot, "{name}");
            // One byte changed anywhere, one byte more or less: unknown.
            for i in 0..name.len() {
                let mut other = far.clone().into_bytes();
                other[1 + i] ^= 0x20;
                assert_eq!(
                    key_slot(&other, 1, 1 + name.len()),
                    key::OTHER,
                    "{name} @{i}"
                );
            }
            assert_eq!(key_slot(far.as_bytes(), 1, name.len()), key::OTHER);
            assert_eq!(key_slot(far.as_bytes(), 1, 2 + name.len()), key::OTHER);
        }
    }

    #[test]
    fn plain_envoy_lines_take_the_fast_path() {
        // The differential tests prove the fast path is never wrong; this proves it is used.
        let rec = scan(TYPED.as_bytes()).expect("fast path");
        assert_eq!(Ok(rec), parse_with_serde(TYPED.as_bytes()));
        let spaced = TYPED.replace(",\"", " , \"").replace("\":", "\" : ");
        assert!(scan(spaced.as_bytes()).is_some());
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/access-istio-json.log"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
        let fast = lines
            .iter()
            .filter(|l| scan(l.as_bytes()).is_some())
            .count();
        assert!(
            fast * 10 >= lines.len() * 9,
            "{fast} of {} fast",
            lines.len()
        );
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
        let line = r#"{"start_time":"2026-11-23T05:38:15Z","response_code":200,"upstream_cluster":"a \"quoted\" cluster\u00e9"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.upstream_cluster.as_deref(), Some("a \"quoted\" clusteré"));
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
