//! Time for guard: a [`Timestamp`] is milliseconds since the Unix epoch, passed in by the caller
//! (the receive time in the live path, the line's own time in replay). Nothing here reads a
//! clock. The civil-date arithmetic is the proleptic Gregorian calendar (days from and to
//! 1970-01-01), enough for log timestamps; times before 1970 are refused.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// From whole seconds since the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + ms`, saturating.
    pub const fn plus_millis(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`; 0 when `earlier` is later.
    pub const fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// A civil date and time (UTC or zone-less), `None` when a field is out of range or the
    /// moment is before 1970.
    pub fn from_civil(date: Date, hour: u32, minute: u32, second: u32, milli: u32) -> Option<Self> {
        if hour > 23 || minute > 59 || second > 60 || milli > 999 {
            return None;
        }
        let days = u64::try_from(date.days_since_epoch()?).ok()?;
        // A leap second (:60) is folded into the next second, as most systems do.
        let secs = days * 86_400 + u64::from(hour * 3600 + minute * 60 + second);
        Some(Timestamp(secs * 1000 + u64::from(milli)))
    }

    /// The UTC calendar date of this moment.
    pub fn date(self) -> Date {
        Date::from_days_since_epoch((self.0 / 86_400_000) as i64)
    }
}

impl fmt::Display for Timestamp {
    /// `2026-10-02T17:36:35Z`, with `.123` before the `Z` when there are milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.date();
        let in_day = self.0 % 86_400_000;
        let (h, m, s, ms) = (
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day / 1000 % 60,
            in_day % 1000,
        );
        write!(
            f,
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}",
            d.year, d.month, d.day
        )?;
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

/// A calendar date. Built only through [`Date::new`], so it is always valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

impl Date {
    /// A valid date, or `None` (month 1–12, day within the month, leap years counted).
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date {
            year,
            month: month as u8,
            day: day as u8,
        })
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1–12.
    pub fn month(self) -> u32 {
        u32::from(self.month)
    }

    /// The day of the month, 1–31.
    pub fn day(self) -> u32 {
        u32::from(self.day)
    }

    /// Days since 1970-01-01 (negative before), `None` for years far outside any log.
    fn days_since_epoch(self) -> Option<i64> {
        if !(1..=9999).contains(&self.year) {
            return None;
        }
        // Shift the year to start in March so the leap day is the last day of the year.
        let m = i64::from(self.month);
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        Some(era * 146_097 + day_of_era - 719_468)
    }

    fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The month number of an English three-letter abbreviation, any case (`Oct`, `oct`, `OCT`).
pub fn month_of(abbrev: &str) -> Option<u32> {
    let [a, b, c] = <[u8; 3]>::try_from(abbrev.as_bytes()).ok()?;
    let lower = [a, b, c].map(|x| x.to_ascii_lowercase());
    Some(match &lower {
        b"jan" => 1,
        b"feb" => 2,
        b"mar" => 3,
        b"apr" => 4,
        b"may" => 5,
        b"jun" => 6,
        b"jul" => 7,
        b"aug" => 8,
        b"sep" => 9,
        b"oct" => 10,
        b"nov" => 11,
        b"dec" => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        Timestamp::from_civil(Date::new(y, mo, d).unwrap(), h, mi, s, 0).unwrap()
    }

    #[test]
    fn civil_times_match_known_unix_times() {
        assert_eq!(ts(1970, 1, 1, 0, 0, 0).as_secs(), 0);
        // `date -u -d 2026-10-02T17:36:35Z +%s`
        assert_eq!(ts(2026, 10, 2, 17, 36, 35).as_secs(), 1_790_962_595);
        assert_eq!(ts(2000, 2, 29, 12, 0, 0).as_secs(), 951_825_600);
        assert_eq!(ts(2106, 2, 7, 6, 28, 15).as_secs(), u64::from(u32::MAX));
    }

    #[test]
    fn display_round_trips_through_the_calendar() {
        assert_eq!(
            ts(2026, 10, 2, 17, 36, 35).to_string(),
            "2026-10-02T17:36:35Z"
        );
        assert_eq!(
            ts(2024, 2, 29, 23, 59, 59).plus_millis(7).to_string(),
            "2024-02-29T23:59:59.007Z"
        );
        for days in [0i64, 59, 365, 10_957, 20_000, 47_482, 2_932_896] {
            let d = Date::from_days_since_epoch(days);
            assert_eq!(d.days_since_epoch(), Some(days), "{d:?}");
        }
    }

    #[test]
    fn rejects_impossible_dates_and_times() {
        assert!(Date::new(2023, 2, 29).is_none());
        assert!(Date::new(2024, 2, 29).is_some());
        assert!(Date::new(1900, 2, 29).is_none());
        assert!(Date::new(2026, 13, 1).is_none());
        assert!(Date::new(2026, 4, 31).is_none());
        assert!(Date::new(2026, 0, 1).is_none());
        let d = Date::new(2026, 1, 1).unwrap();
        assert!(Timestamp::from_civil(d, 24, 0, 0, 0).is_none());
        assert!(Timestamp::from_civil(d, 0, 60, 0, 0).is_none());
        assert!(Timestamp::from_civil(Date::new(1969, 12, 31).unwrap(), 0, 0, 0, 0).is_none());
    }

    #[test]
    fn month_names_in_any_case() {
        assert_eq!(month_of("Oct"), Some(10));
        assert_eq!(month_of("oct"), Some(10));
        assert_eq!(month_of("JAN"), Some(1));
        assert_eq!(month_of("Octo"), None);
        assert_eq!(month_of("xyz"), None);
    }
}
