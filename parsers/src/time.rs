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

    use time::format_description::well_known::Rfc3339;
    use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

    /// Unix milliseconds of a `time` value, the fraction truncated as ours is.
    fn unix_ms(t: OffsetDateTime) -> i64 {
        t.unix_timestamp() * 1000 + i64::from(t.millisecond())
    }

    /// The fields of one timestamp, as Envoy (or a custom format) prints them.
    #[derive(Debug, Clone)]
    struct Fields {
        year: i32,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        /// Fraction digits as printed (0–9 of them; empty = no fraction).
        fraction: String,
        /// `None` = `Z`, else the offset in minutes (±23:59).
        offset_minutes: Option<i16>,
    }

    impl Fields {
        fn render(&self, sep: char, zulu: char) -> String {
            let mut s = format!(
                "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
                self.year, self.month, self.day, self.hour, self.minute, self.second
            );
            if !self.fraction.is_empty() {
                s.push('.');
                s.push_str(&self.fraction);
            }
            match self.offset_minutes {
                None => s.push(zulu),
                Some(m) => {
                    let sign = if m < 0 { '-' } else { '+' };
                    let m = m.unsigned_abs();
                    s.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
                }
            }
            s
        }

        /// What the `time` crate builds from the same fields (its own calendar: month
        /// lengths, leap years, offsets); `None` where it rejects them.
        fn oracle(&self) -> Option<i64> {
            let date =
                Date::from_calendar_date(self.year, Month::try_from(self.month).ok()?, self.day)
                    .ok()?;
            let nanos: u32 = format!("{:0<9}", self.fraction).parse().ok()?;
            let clock = Time::from_hms_nano(self.hour, self.minute, self.second, nanos).ok()?;
            let offset =
                UtcOffset::from_whole_seconds(i32::from(self.offset_minutes.unwrap_or(0)) * 60)
                    .ok()?;
            Some(unix_ms(
                PrimitiveDateTime::new(date, clock).assume_offset(offset),
            ))
        }
    }

    fn fields() -> impl Strategy<Value = Fields> {
        (
            // The range Envoy prints, with the years where the leap rule turns more often.
            prop_oneof![
                1970i32..=9999,
                proptest::sample::select(vec![1970, 1972, 2000, 2024, 2100, 2400, 9996, 9999]),
            ],
            0u8..=13,
            // Month ends (Feb 29/30/31, Apr 31) as often as the rest.
            prop_oneof![0u8..=28, 28u8..=32],
            (0u8..=24, 0u8..=60, 0u8..=59),
            "[0-9]{0,9}",
            proptest::option::of(-(23 * 60 + 59)..=(23i16 * 60 + 59)),
        )
            .prop_map(
                |(year, month, day, (hour, minute, second), fraction, offset_minutes)| Fields {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    fraction,
                    offset_minutes,
                },
            )
    }

    proptest! {
        /// Calendar arithmetic and field ranges against the `time` crate, which shares no code
        /// with ours: the same instant for every date it accepts, a rejection for every one it
        /// rejects (month 0 or 13, Feb 29 in 2100, Feb 30, Apr 31, hour 24, minute 60).
        #[test]
        fn agrees_with_the_time_crate_on_every_field(f in fields(), sep in proptest::sample::select(vec!['T', 't', ' ']), zulu in proptest::sample::select(vec!['Z', 'z'])) {
            let s = f.render(sep, zulu);
            prop_assert_eq!(parse_rfc3339_ms(&s).ok(), f.oracle(), "{}", s);
        }

        /// The same strings (and one-byte corruptions of them) through `time`'s own RFC 3339
        /// parser: the digits and separators are read the same way.
        #[test]
        fn agrees_with_the_time_crate_parser(f in fields(), corrupt in proptest::option::weighted(0.3, (0usize..19, 0x20u8..0x7f))) {
            let mut bytes = f.render('T', 'Z').into_bytes();
            if let Some((at, b)) = corrupt {
                // `time` takes any byte between date and time; RFC 3339 (§5.6 and its note)
                // allows `T`, `t` or a space, which ours takes (the test above).
                prop_assume!(at != 10);
                bytes[at] = b;
            }
            let s = String::from_utf8(bytes).unwrap();
            let theirs = OffsetDateTime::parse(&s, &Rfc3339).ok().map(unix_ms);
            prop_assert_eq!(parse_rfc3339_ms(&s).ok(), theirs, "{}", s);
        }
    }

    /// Every year Envoy can print, around the leap day (the century rule is too rare for the
    /// random cases above to be sure of hitting 2100 or 2200).
    #[test]
    fn leap_days_of_every_year_agree_with_the_time_crate() {
        for year in 1970..=9999 {
            for (month, day) in [(2, 28), (2, 29), (2, 30), (3, 1), (12, 31)] {
                let f = Fields {
                    year,
                    month,
                    day,
                    hour: 23,
                    minute: 59,
                    second: 59,
                    fraction: "999".to_owned(),
                    offset_minutes: Some(-60),
                };
                let s = f.render('T', 'Z');
                assert_eq!(parse_rfc3339_ms(&s).ok(), f.oracle(), "{s}");
            }
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
