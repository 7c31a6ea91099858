//! RFC 3339 timestamps as Envoy prints `%START_TIME%`.
//!
//! Envoy's default `%START_TIME%` rendering is `2026-11-23T05:38:15.940Z` (UTC, milliseconds;
//! `envoy/source/common/formatter`, `AccessLogDateTimeFormatter`). Custom formats and CRI framing
//! use other fractional widths and numeric offsets, so any RFC 3339 `date-time` is accepted.

use crate::ParseError;

/// Parses an RFC 3339 `date-time` (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` or space) into
/// milliseconds since the Unix epoch. Fractions beyond milliseconds are truncated.
///
/// # Errors
/// [`ParseError::BadTimestamp`] for anything else, including out-of-range fields.
///
/// ```
/// use vpslens_parsers::time::parse_rfc3339_ms;
/// assert_eq!(parse_rfc3339_ms("2026-11-23T05:38:15.940Z").unwrap(), 1_795_412_295_940);
/// assert_eq!(parse_rfc3339_ms("2026-11-23T06:38:15.94+01:00").unwrap(), 1_795_412_295_940);
/// ```
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, ParseError> {
    let b = s.as_bytes();
    let head = match b.first_chunk::<19>() {
        Some(head) if b.len() >= 20 => head,
        _ => return Err(ParseError::BadTimestamp),
    };
    // `YYYY-MM-DDTHH:MM:SS`, checked without a branch per byte (this runs once per line).
    let d = |i: usize| head[i].wrapping_sub(b'0');
    let mut bad = false;
    for i in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] {
        bad |= d(i) > 9;
    }
    bad |= head[4] != b'-'
        || head[7] != b'-'
        || !matches!(head[10], b'T' | b't' | b' ')
        || head[13] != b':'
        || head[16] != b':';
    if bad {
        return Err(ParseError::BadTimestamp);
    }
    let two = |i: usize| i64::from(d(i)) * 10 + i64::from(d(i + 1));
    let (year, month, day) = (two(0) * 100 + two(2), two(5), two(8));
    let (hour, min, sec) = (two(11), two(14), two(17));
    if !in_range(year, month, day, hour, min, sec) {
        return Err(ParseError::BadTimestamp);
    }
    let mut i = 19;
    let mut millis: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err(ParseError::BadTimestamp);
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err(ParseError::BadTimestamp);
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(ParseError::BadTimestamp),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    Ok(secs * 1000 + millis)
}

/// The calendar and clock ranges (a leap second `60` allowed, as RFC 3339 does).
fn in_range(year: i64, month: i64, day: i64, hour: i64, min: i64, sec: i64) -> bool {
    (1..=12).contains(&month)
        && day != 0
        && day <= days_in_month(year, month)
        && hour <= 23
        && min <= 59
        && sec <= 60
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<i64, ParseError> {
    let mut v: i64 = 0;
    for &c in b.get(at..at + n).ok_or(ParseError::BadTimestamp)? {
        if !c.is_ascii_digit() {
            return Err(ParseError::BadTimestamp);
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Ok(v)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parser as first written (a digit helper per field): the reference the straight-line
    /// version is held to.
    fn reference(s: &str) -> Result<i64, ParseError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(ParseError::BadTimestamp);
        }
        let year = digits(b, 0, 4)?;
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let min = digits(b, 14, 2)?;
        let sec = digits(b, 17, 2)?;
        if b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(ParseError::BadTimestamp);
        }
        // The field ranges are one shared rule (`in_range`); this checks the digit and
        // separator handling against the straight-line version.
        if !in_range(year, month, day, hour, min, sec) {
            return Err(ParseError::BadTimestamp);
        }
        // The tail (fraction, offset) is shared code: compare through a canonical suffix.
        let days = days_from_civil(year, month, day);
        let base = (days * 86_400 + hour * 3600 + min * 60 + sec) * 1000;
        let tail = format!("1970-01-01T00:00:00{}", &s[19..]);
        parse_rfc3339_ms(&tail).map(|t| base + t)
    }

    proptest! {
        #[test]
        fn equals_the_reference(
            ymd in (0u32..10_000, 0u32..14, 0u32..33),
            hms in (0u32..26, 0u32..62, 0u32..62),
            sep in proptest::sample::select(vec!['T', 't', ' ']),
            mutate in proptest::option::weighted(0.3, (0usize..19, any::<u8>())),
            tail in prop_oneof![Just("Z"), Just(".940Z"), Just(".5+01:00"), Just("-05:30"), Just("")],
        ) {
            let date = format!(
                "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
                ymd.0, ymd.1, ymd.2, hms.0, hms.1, hms.2
            );
            let mut bytes = date.into_bytes();
            if let Some((at, b)) = mutate {
                bytes[at] = b & 0x7f;
            }
            let s = format!("{}{tail}", String::from_utf8(bytes).unwrap());
            prop_assert_eq!(parse_rfc3339_ms(&s), reference(&s), "{}", s);
        }
    }

    #[test]
    fn epoch_and_known_values() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.5Z"),
            Ok(951_782_400_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T05:38:15.940123456Z"),
            Ok(1_795_412_295_940)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T00:38:15.940-05:00"),
            Ok(1_795_412_295_940)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T05:38:15",
            "2026-13-23T05:38:15Z",
            "2026-02-30T05:38:15Z",
            "2026-11-23T25:38:15Z",
            "2026-11-23T05:38:15.Z",
            "2026-11-23T05:38:15.940",
            "2026-11-23T05:38:15.940Zjunk",
            "2026-11-23T05:38:15+0100",
            "2026/11/23T05:38:15Z",
            "２026-11-23T05:38:15Z",
        ] {
            assert_eq!(
                parse_rfc3339_ms(bad),
                Err(ParseError::BadTimestamp),
                "{bad}"
            );
        }
    }
}
