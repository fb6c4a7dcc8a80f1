//! Time values: the `timeout` parser and the v7/v6 printers (`docs/reference/routeros-api.md` §7, §9 "Timeout"),
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
    format_date_time(t, DateStyle::Iso)
}

/// How a RouterOS version writes calendar dates.
///
/// RouterOS 7.10 switched from `jul/14/2023` to `2023-07-14`: `/system clock get date` gives
/// `jul/14/2023` on 7.8 and `2023-07-14` on 7.10 (phistrom/datetime-routeros issue 1), and 7.11
/// prints "some dates" in ISO form (DinoTools/monitoring-check_routeros PR 67). Before 7.10 an
/// address-list `creation-time` reads `jun/14/2022 07:53:49` (networktocode/ntc-templates
/// `tests/mikrotik_routeros/ip_firewall_address-list_print_terse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateStyle {
    /// `2023-07-14 19:24:07` (7.10 and later).
    Iso,
    /// `jul/14/2023 19:24:07` (before 7.10).
    Legacy,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// A UTC instant broken down into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    secs_of_day: u64,
}

impl Civil {
    fn of(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        Civil {
            year,
            month,
            day,
            secs_of_day: secs % 86_400,
        }
    }

    fn clock(self) -> String {
        let s = self.secs_of_day;
        format!("{:02}:{:02}:{:02}", s / 3_600, s % 3_600 / 60, s % 60)
    }

    fn month_name(self) -> &'static str {
        // `month` is 1..=12 by construction in `civil_from_days`.
        MONTHS[(self.month as usize).saturating_sub(1) % 12]
    }
}

/// A full date and time in `style`, UTC: `2023-07-14 19:24:07` or `jul/14/2023 19:24:07`.
pub(crate) fn format_date_time(t: SystemTime, style: DateStyle) -> String {
    let c = Civil::of(t);
    match style {
        DateStyle::Iso => format!("{:04}-{:02}-{:02} {}", c.year, c.month, c.day, c.clock()),
        DateStyle::Legacy => format!(
            "{}/{:02}/{:04} {}",
            c.month_name(),
            c.day,
            c.year,
            c.clock()
        ),
    }
}

/// A `/log` `time` relative to `now`, as the manual describes the console: an entry from today
/// shows only the time, one from this year leaves the year out, older ones show the full date
/// (MikroTik manual, "Log": "If logs are printed on the same date when the log entry was added,
/// then only the time will be shown"). The this-year form is `sep/15 09:54:33` before 7.10 (the
/// manual's example) and `08-31 07:08:09` after (a recorded API row in a public script).
pub(crate) fn format_relative(t: SystemTime, now: SystemTime, style: DateStyle) -> String {
    let (c, n) = (Civil::of(t), Civil::of(now));
    if (c.year, c.month, c.day) == (n.year, n.month, n.day) {
        return c.clock();
    }
    if c.year == n.year {
        return match style {
            DateStyle::Iso => format!("{:02}-{:02} {}", c.month, c.day, c.clock()),
            DateStyle::Legacy => format!("{}/{:02} {}", c.month_name(), c.day, c.clock()),
        };
    }
    format_date_time(t, style)
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
    fn formats_dates_in_both_styles() {
        let t = UNIX_EPOCH + Duration::from_secs(1_655_192_029); // 2022-06-14 07:33:49
        assert_eq!(format_date_time(t, DateStyle::Iso), "2022-06-14 07:33:49");
        assert_eq!(
            format_date_time(t, DateStyle::Legacy),
            "jun/14/2022 07:33:49"
        );
    }

    #[test]
    fn relative_log_times_drop_what_is_implied() {
        let day = 86_400;
        let now = UNIX_EPOCH + Duration::from_secs(1_790_844_612); // 2026-10-01 08:50:12
        let today = now - Duration::from_secs(3_600);
        let this_year = now - Duration::from_secs(20 * day);
        let last_year = now - Duration::from_secs(400 * day);
        assert_eq!(format_relative(today, now, DateStyle::Iso), "07:50:12");
        assert_eq!(
            format_relative(this_year, now, DateStyle::Iso),
            "09-11 08:50:12"
        );
        assert_eq!(
            format_relative(this_year, now, DateStyle::Legacy),
            "sep/11 08:50:12"
        );
        assert_eq!(
            format_relative(last_year, now, DateStyle::Iso),
            "2025-08-27 08:50:12"
        );
        assert_eq!(
            format_relative(last_year, now, DateStyle::Legacy),
            "aug/27/2025 08:50:12"
        );
    }

    #[test]
    fn formats_calendar_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_790_844_612);
        assert_eq!(format_calendar(t), "2026-10-01 08:50:12");
        assert_eq!(format_calendar(UNIX_EPOCH), "1970-01-01 00:00:00");
    }
}
