//! The few date formats the watcher needs, without a date library: RFC 3339 out (alert times)
//! and in (the JWT `expire`), and the HTTP `Date` header in (IMF-fixdate, RFC 9110 §5.6.7).
//! All in whole Unix seconds, UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both in range by construction: day 1..=31, month 1..=12.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds of a date and time, or `None` if a field is out of range (31 February, 24:00…).
fn unix(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&mo) || d == 0 || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    // Reject a day past the end of its month: it would land in the next one.
    if civil_from_days(days) != (y, mo, d) {
        return None;
    }
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s.min(59)))
}

/// Whole seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            // Round towards the past, as the seconds of a later time do.
            -secs - i64::from(before.subsec_nanos() > 0)
        }
    }
}

/// `t` as RFC 3339 in UTC with whole seconds, e.g. `2024-05-01T12:00:00Z` (what Go's
/// `time.Parse(time.RFC3339, …)` reads). Years are clamped to 0000..=9999.
pub(crate) fn format_rfc3339(t: SystemTime) -> String {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = unix_seconds(t).clamp(MIN, MAX);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |n, &b| {
        n.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` or a space, any case) to Unix
/// seconds, the fraction dropped. `None` for anything else.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 64 {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), hh @ .., b':', m1, m2] if hh.len() == 2 => {
            let oh = i64::from(digits(hh)?);
            let om = i64::from(digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    Some(unix(y, mo, d, h, mi, sec)? - offset)
}

/// Parses an HTTP `Date` in the preferred IMF-fixdate form, `Sun, 06 Nov 1994 08:49:37 GMT`,
/// to Unix seconds. (Go's `net/http` always sends this form.) `None` for anything else.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let mo = MONTHS.iter().position(|m| *m == &b[8..11])?;
    let mo = u32::try_from(mo).ok()? + 1;
    unix(
        i64::from(digits(&b[12..16])?),
        mo,
        digits(&b[5..7])?,
        digits(&b[17..19])?,
        digits(&b[20..22])?,
        digits(&b[23..25])?,
    )
}

/// A `SystemTime` from Unix seconds (for tests and clamping).
#[cfg(test)]
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Go duration text of whole seconds, e.g. `4h0m0s`, `10s` (what `time.ParseDuration` reads).
/// At least `1s`; at most 100 years.
pub(crate) fn go_duration_secs(d: Duration) -> String {
    const MAX: u64 = 100 * 365 * 86_400;
    let secs = d.as_secs().clamp(1, MAX);
    let secs = i64::try_from(secs).unwrap_or(1);
    crate::GoDuration::from_secs(secs).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_utc_with_whole_seconds() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(from_unix(1_796_163_543)),
            "2026-12-01T22:19:03Z"
        );
        assert_eq!(
            format_rfc3339(from_unix(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_millis(1_999)),
            "1970-01-01T00:00:01Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn parses_rfc3339_as_lapi_and_go_write_it() {
        // The `expire` of a 1.4.6 login (seen on 1.4.6), and Go's other shapes.
        assert_eq!(parse_rfc3339("2026-12-01T23:19:03Z"), Some(1_796_167_143));
        assert_eq!(
            parse_rfc3339("2026-12-02T00:19:03+01:00"),
            Some(1_796_167_143)
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T22:49:03-00:30"),
            Some(1_796_167_143)
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T23:19:03.123456789Z"),
            Some(1_796_167_143)
        );
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T23:19:03",
            "2026-02-30T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T23:19:03.Z",
            "2026-12-01T23:19:03+0100",
            "2026-12-01T23:19:03+01:00junk",
            "２026-12-01T23:19:03Z",
            "+026-12-01T23:19:03Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_imf_fixdate() {
        assert_eq!(
            parse_http_date("Tue, 01 Dec 2026 22:19:03 GMT"),
            Some(1_796_163_543)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_durations_are_whole_seconds_and_at_least_one() {
        assert_eq!(go_duration_secs(Duration::from_secs(4 * 3600)), "4h0m0s");
        assert_eq!(go_duration_secs(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration_secs(Duration::from_millis(10)), "1s");
        assert_eq!(go_duration_secs(Duration::MAX), "876000h0m0s");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_the_identity(secs in -62_167_219_200i64..253_402_300_799) {
            let text = format_rfc3339(from_unix(secs));
            prop_assert_eq!(parse_rfc3339(&text), Some(secs));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
            let _ = parse_http_date(&s);
        }
    }
}
