//! Time values: the `timeout` parser and the v7/v6 printers (`routeros-api.md` §7, §9 "Timeout"),
//! plus the `creation-time` calendar format.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest timeout the router accepts: `35w3d13:13:56` = 21 474 836 s = ⌊(2³¹−1)/100⌋ s (§9).
pub const MAX_TIMEOUT_SECS: u64 = 21_474_836;

/// The router's message for a timeout above [`MAX_TIMEOUT_SECS`] (§9, verbatim).
pub const OUT_OF_RANGE: &str = "value of timeout is out of range (00:00:00 .. 35w3d13:13:56)";

/// Why a timeout was refused; `Display` is the trap message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Above `35w3d13:13:56` (§9).
    #[error("{OUT_OF_RANGE}")]
    OutOfRange,
    /// Not a time value. The router's wording is **unverified**.
    #[error("invalid value for argument timeout")]
    Invalid,
}

/// Parses a timeout: `3600` (bare seconds), `3600s`, `2h30m`, `1w2d3h4m5s`, `00:05:00`,
/// `1d00:05:00`, `35w3d13:13:56` (§9). Fractional seconds are **unverified** and refused.
pub fn parse_timeout(text: &str) -> Result<Duration, TimeError> {
    let secs = parse_secs(text.trim())?;
    if secs > MAX_TIMEOUT_SECS {
        return Err(TimeError::OutOfRange);
    }
    Ok(Duration::from_secs(secs))
}

fn parse_secs(text: &str) -> Result<u64, TimeError> {
    if text.is_empty() {
        return Err(TimeError::Invalid);
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_digit() {
            let d = u64::from(c as u8 - b'0');
            // Overflow means "far too large": report it as out of range, like any big value.
            let n = num
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(d))
                .ok_or(TimeError::OutOfRange)?;
            num = Some(n);
            rest = &rest[1..];
            continue;
        }
        if c == ':' {
            // Clock tail `HH:MM:SS` (or `MM:SS`) ends the value.
            let clock = clock_secs(num, &rest[1..])?;
            return total.checked_add(clock).ok_or(TimeError::OutOfRange);
        }
        let unit = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(TimeError::Invalid),
        };
        let n = num.take().ok_or(TimeError::Invalid)?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or(TimeError::OutOfRange)?;
        rest = &rest[1..];
    }
    match num {
        Some(n) => total.checked_add(n).ok_or(TimeError::OutOfRange),
        None => Ok(total),
    }
}

/// `first` is the number before the first `:`; `rest` is what follows it.
fn clock_secs(first: Option<u64>, rest: &str) -> Result<u64, TimeError> {
    let first = first.ok_or(TimeError::Invalid)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let field = |s: &str| -> Result<u64, TimeError> {
        if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TimeError::Invalid);
        }
        let v: u64 = s.parse().map_err(|_| TimeError::Invalid)?;
        if v >= 60 {
            return Err(TimeError::Invalid);
        }
        Ok(v)
    };
    let (h, m, s) = match parts.as_slice() {
        [m, s] => (first, field(m)?, field(s)?),
        _ => return Err(TimeError::Invalid),
    };
    h.checked_mul(3_600)
        .and_then(|v| v.checked_add(m * 60 + s))
        .ok_or(TimeError::OutOfRange)
}

/// v7 duration text: `23h59m55s`, `1w2d3h4m5s`; zero parts are left out, zero is `0s` (§7).
pub fn format_v7(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, name) in [
        (604_800, 'w'),
        (86_400, 'd'),
        (3_600, 'h'),
        (60, 'm'),
        (1, 's'),
    ] {
        let n = secs / unit;
        secs %= unit;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(name);
        }
    }
    out
}

/// v6 duration text: `23:59:55`, `1d02:03:04`, `35w3d13:13:56` (§7).
pub fn format_v6(d: Duration) -> String {
    let secs = d.as_secs();
    let (w, d_, rem) = (secs / 604_800, secs % 604_800 / 86_400, secs % 86_400);
    let mut out = String::new();
    if w > 0 {
        out.push_str(&format!("{w}w"));
    }
    if d_ > 0 {
        out.push_str(&format!("{d_}d"));
    }
    out.push_str(&format!(
        "{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    ));
    out
}

/// `creation-time` text in the current manual's form, `2026-10-01 08:50:12` (§7), in UTC.
pub fn format_calendar(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<u64, TimeError> {
        parse_timeout(s).map(|d| d.as_secs())
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(p("1d"), Ok(86_400));
        assert_eq!(p("2h30m"), Ok(9_000));
        assert_eq!(
            p("1w2d3h4m5s"),
            Ok(604_800 + 2 * 86_400 + 3 * 3_600 + 4 * 60 + 5)
        );
        assert_eq!(p("3600s"), Ok(3_600));
        assert_eq!(p("3600"), Ok(3_600));
        assert_eq!(p("00:05:00"), Ok(300));
        assert_eq!(p("1d00:00:01"), Ok(86_401));
        assert_eq!(p("35w3d13:13:56"), Ok(MAX_TIMEOUT_SECS));
    }

    #[test]
    fn maximum_is_accepted_and_one_more_second_is_out_of_range() {
        assert_eq!(p("21474836s"), Ok(MAX_TIMEOUT_SECS));
        assert_eq!(p("21474837s"), Err(TimeError::OutOfRange));
        assert_eq!(p("35w3d13:13:57"), Err(TimeError::OutOfRange));
        assert_eq!(p("99999999999999999999999"), Err(TimeError::OutOfRange));
        assert_eq!(
            TimeError::OutOfRange.to_string(),
            "value of timeout is out of range (00:00:00 .. 35w3d13:13:56)"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1x", "h", "1:2:3:4", "00:61:00", "1.5s"] {
            assert_eq!(p(bad), Err(TimeError::Invalid), "{bad}");
        }
    }

    #[test]
    fn formats_v7_and_v6() {
        assert_eq!(format_v7(Duration::from_secs(86_395)), "23h59m55s");
        assert_eq!(format_v7(Duration::from_secs(698_045)), "1w1d1h54m5s");
        assert_eq!(format_v7(Duration::from_secs(0)), "0s");
        assert_eq!(format_v7(Duration::from_secs(3_600)), "1h");
        assert_eq!(format_v6(Duration::from_secs(86_395)), "23:59:55");
        assert_eq!(
            format_v6(Duration::from_secs(MAX_TIMEOUT_SECS)),
            "35w3d13:13:56"
        );
    }

    #[test]
    fn formats_calendar_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_790_844_612);
        assert_eq!(format_calendar(t), "2026-10-01 08:50:12");
        assert_eq!(format_calendar(UNIX_EPOCH), "1970-01-01 00:00:00");
    }
}
