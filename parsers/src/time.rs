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
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
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
