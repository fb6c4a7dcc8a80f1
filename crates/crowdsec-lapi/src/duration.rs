//! Go `time.Duration` text, as LAPI prints the `duration` field of a decision.
//!
//! `docs/reference/crowdsec-lapi.md` §5: up to v1.6.2 LAPI prints nanosecond precision (`"7h59m58.810113282s"`,
//! `"-369.387773ms"`); from v1.6.3 whole seconds (`"3h59m58s"`). Hours are unbounded and there are
//! no days. Units: `h`, `m`, `s`, `ms`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ns`. `deleted` entries
//! carry negative durations. The grammar follows Go's `time.ParseDuration`.

use std::fmt;
use std::time::Duration;

/// A signed duration with nanosecond resolution, the range of Go's `time.Duration` (an `i64` of
/// nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i64,
}

/// Why a duration string was refused. Each variant carries the offending text (bounded: durations
/// come from the network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string was empty (or only a sign).
    #[error("empty duration, expected e.g. \"4h\" or \"-1.5s\"")]
    Empty,
    /// A number was expected (`[0-9]+(\.[0-9]*)?` or `\.[0-9]+`) where something else arrived.
    #[error("invalid duration {input:?}: expected a number at byte {at}")]
    ExpectedNumber {
        /// The input, truncated to 64 bytes.
        input: String,
        /// Byte offset of the problem.
        at: usize,
    },
    /// A number had no unit after it (Go accepts a bare `0` only).
    #[error("invalid duration {input:?}: missing unit after the number at byte {at}")]
    MissingUnit {
        /// The input, truncated to 64 bytes.
        input: String,
        /// Byte offset where the unit was expected.
        at: usize,
    },
    /// The unit is not one of `h m s ms us µs μs ns` (days are not a Go unit).
    #[error(
        "invalid duration {input:?}: unknown unit {unit:?}, expected one of h m s ms us µs μs ns"
    )]
    UnknownUnit {
        /// The input, truncated to 64 bytes.
        input: String,
        /// The unit text that arrived, truncated.
        unit: String,
    },
    /// The value does not fit Go's `time.Duration` (about ±292 years).
    #[error("invalid duration {input:?}: out of range of a Go duration (±2562047h)")]
    Overflow {
        /// The input, truncated to 64 bytes.
        input: String,
    },
}

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const SEC: u128 = 1_000_000_000;
const MIN: u128 = 60 * SEC;
const HOUR: u128 = 60 * MIN;

/// Longest fraction we keep: more digits than this cannot change the nanosecond result for any
/// unit up to hours (3.6e12 ns), so they are read and dropped.
const MAX_FRACTION_DIGITS: u32 = 19;

fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl GoDuration {
    /// Zero.
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    /// Builds from nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration { nanos }
    }

    /// Builds from whole seconds, saturating at the range of a Go duration.
    pub const fn from_secs(secs: i64) -> Self {
        GoDuration {
            nanos: secs.saturating_mul(1_000_000_000),
        }
    }

    /// Parses Go duration text (`time.ParseDuration` grammar): an optional sign, then one or
    /// more `<number><unit>` groups, or a bare `0`.
    ///
    /// ```
    /// use crowdsec_lapi::GoDuration;
    /// assert_eq!(GoDuration::parse("1h30m").unwrap().as_nanos(), 5_400_000_000_000);
    /// assert_eq!(GoDuration::parse("-369.387773ms").unwrap().as_nanos(), -369_387_773);
    /// assert!(GoDuration::parse("1d").is_err()); // no days in Go
    /// ```
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let bytes = input.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&c) = bytes.first() {
            if c == b'-' || c == b'+' {
                negative = c == b'-';
                i = 1;
            }
        }
        if i == bytes.len() {
            return Err(DurationError::Empty);
        }
        if &bytes[i..] == b"0" {
            return Ok(GoDuration::ZERO);
        }
        let overflow = || DurationError::Overflow {
            input: truncated(input),
        };
        let mut total: u128 = 0;
        while i < bytes.len() {
            // Integer part.
            let int_start = i;
            let mut int: u128 = 0;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                int = int
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u128::from(bytes[i] - b'0')))
                    .filter(|v| *v <= u128::from(u64::MAX))
                    .ok_or_else(overflow)?;
                i += 1;
            }
            let has_int = i > int_start;
            // Fraction part.
            let mut frac: u128 = 0;
            let mut frac_scale: u128 = 1;
            let mut has_frac = false;
            if i < bytes.len() && bytes[i] == b'.' {
                i += 1;
                let mut digits = 0u32;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    if digits < MAX_FRACTION_DIGITS {
                        frac = frac * 10 + u128::from(bytes[i] - b'0');
                        frac_scale *= 10;
                        digits += 1;
                    }
                    has_frac = true;
                    i += 1;
                }
            }
            if !has_int && !has_frac {
                return Err(DurationError::ExpectedNumber {
                    input: truncated(input),
                    at: i,
                });
            }
            // Unit: everything up to the next digit or '.'.
            let unit_start = i;
            while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
                i += 1;
            }
            if unit_start == i {
                return Err(DurationError::MissingUnit {
                    input: truncated(input),
                    at: i,
                });
            }
            let unit = match &input.get(unit_start..i) {
                Some("ns") => NS,
                Some("us") | Some("\u{b5}s") | Some("\u{3bc}s") => US,
                Some("ms") => MS,
                Some("s") => SEC,
                Some("m") => MIN,
                Some("h") => HOUR,
                _ => {
                    let unit = String::from_utf8_lossy(&bytes[unit_start..i]);
                    return Err(DurationError::UnknownUnit {
                        input: truncated(input),
                        unit: truncated(&unit),
                    });
                }
            };
            let whole = int.checked_mul(unit).ok_or_else(overflow)?;
            // frac < 10^19 and unit <= 3.6e12, so the product fits u128 (< 3.6e31).
            let part = whole + frac * unit / frac_scale;
            total = total.checked_add(part).ok_or_else(overflow)?;
            if total > 1u128 << 63 {
                return Err(overflow());
            }
        }
        let nanos = if negative {
            // total <= 2^63 was checked above, so this fits.
            (-(total as i128)) as i64
        } else {
            i64::try_from(total).map_err(|_| overflow())?
        };
        Ok(GoDuration { nanos })
    }

    /// Nanoseconds, negative for the past.
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// True when the duration is below zero (`deleted` entries).
    pub const fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// Whole seconds, rounding any fraction **up** (RouterOS wants whole seconds and a ban must not
    /// end early, `docs/reference/routeros-api.md` §9). Negative durations round towards zero.
    pub const fn ceil_secs(self) -> i64 {
        let s = self.nanos / 1_000_000_000;
        if self.nanos % 1_000_000_000 > 0 {
            s + 1
        } else {
            s
        }
    }

    /// The duration as a `std::time::Duration`, or `None` when it is negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }
}

impl fmt::Display for GoDuration {
    /// Prints the shortest exact form in Go style, e.g. `1h2m3.5s`, `-250ms` or `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0s");
        }
        if self.nanos < 0 {
            f.write_str("-")?;
        }
        let n = self.nanos.unsigned_abs();
        if n < 1_000_000_000 {
            return if n % 1_000_000 == 0 {
                write!(f, "{}ms", n / 1_000_000)
            } else if n % 1_000 == 0 {
                write!(f, "{}us", n / 1_000)
            } else {
                write!(f, "{n}ns")
            };
        }
        let h = n / 3_600_000_000_000;
        let m = n / 60_000_000_000 % 60;
        let s = n / 1_000_000_000 % 60;
        let frac = n % 1_000_000_000;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        if frac == 0 {
            write!(f, "{s}s")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{s}.{}s", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> i64 {
        GoDuration::parse(s).unwrap().as_nanos()
    }

    #[test]
    fn parses_lapi_samples_from_1_4_6_and_1_6_3() {
        assert_eq!(
            p("7h59m58.810113282s"),
            ((7 * 3600 + 59 * 60 + 58) * SEC as i64) + 810_113_282
        );
        assert_eq!(p("362.588857ms"), 362_588_857);
        assert_eq!(p("-1.160293305s"), -1_160_293_305);
        assert_eq!(p("-369.387773ms"), -369_387_773);
        assert_eq!(p("3h59m58s"), (3 * 3600 + 59 * 60 + 58) * 1_000_000_000);
        assert_eq!(p("0s"), 0);
        assert_eq!(p("-13h57m25s"), -(13 * 3600 + 57 * 60 + 25) * 1_000_000_000);
        assert_eq!(
            p("4999h59m53s"),
            (4999 * 3600 + 59 * 60 + 53) * 1_000_000_000
        );
    }

    #[test]
    fn accepts_every_go_unit_including_both_micro_signs() {
        assert_eq!(p("1ns"), 1);
        assert_eq!(p("1us"), 1_000);
        assert_eq!(p("1\u{b5}s"), 1_000);
        assert_eq!(p("1\u{3bc}s"), 1_000);
        assert_eq!(p("1ms"), 1_000_000);
        assert_eq!(p("1s"), 1_000_000_000);
        assert_eq!(p("1m"), 60_000_000_000);
        assert_eq!(p("1h"), 3_600_000_000_000);
    }

    #[test]
    fn accepts_go_edge_forms() {
        assert_eq!(p("0"), 0);
        assert_eq!(p("-0"), 0);
        assert_eq!(p("+5s"), 5_000_000_000);
        assert_eq!(p(".5s"), 500_000_000);
        assert_eq!(p("1.s"), 1_000_000_000);
        assert_eq!(p("1h1h"), 7_200_000_000_000);
        assert_eq!(p("1.0000000001s"), 1_000_000_000); // sub-ns digits dropped
        assert_eq!(p("0.000000000999999999999999h"), 3599); // long fractions truncate
        assert_eq!(p("2562047h47m16.854775807s"), i64::MAX);
        assert_eq!(p("-2562047h47m16.854775808s"), i64::MIN);
    }

    #[test]
    fn rejects_days_bare_numbers_and_garbage() {
        assert!(matches!(
            GoDuration::parse("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            GoDuration::parse("5"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(GoDuration::parse(""), Err(DurationError::Empty)));
        assert!(matches!(GoDuration::parse("-"), Err(DurationError::Empty)));
        assert!(matches!(
            GoDuration::parse("s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            GoDuration::parse(".s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            GoDuration::parse("1h "),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            GoDuration::parse("1H"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            GoDuration::parse("--1s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        assert!(matches!(
            GoDuration::parse("2562047h47m16.854775808s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            GoDuration::parse("99999999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(GoDuration::parse("9223372036854775808ns").is_err());
    }

    #[test]
    fn ceil_secs_rounds_fractions_up_for_positive_values() {
        assert_eq!(GoDuration::from_nanos(1).ceil_secs(), 1);
        assert_eq!(GoDuration::from_nanos(1_000_000_000).ceil_secs(), 1);
        assert_eq!(GoDuration::from_nanos(1_000_000_001).ceil_secs(), 2);
        assert_eq!(GoDuration::from_nanos(-1_500_000_000).ceil_secs(), -1);
        assert_eq!(GoDuration::ZERO.ceil_secs(), 0);
    }

    #[test]
    fn error_text_names_the_input_and_the_expectation() {
        let e = GoDuration::parse("3d").unwrap_err().to_string();
        assert!(e.contains("\"3d\"") && e.contains("unknown unit"), "{e}");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(n in any::<i64>()) {
            let d = GoDuration::from_nanos(n);
            prop_assert_eq!(GoDuration::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn components_sum_like_go(h in 0u64..100_000, m in 0u64..60, s in 0u64..60, ns in 0u64..1_000_000_000, neg: bool) {
            let text = format!("{}{h}h{m}m{s}.{ns:09}s", if neg { "-" } else { "" });
            let abs = ((h * 3600 + m * 60 + s) * 1_000_000_000 + ns) as i64;
            prop_assert_eq!(p(&text), if neg { -abs } else { abs });
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,40}") {
            let _ = GoDuration::parse(&s);
        }

        #[test]
        fn never_panics_on_duration_like_text(s in "[-+]?[0-9.]{0,25}(h|m|s|ms|us|µs|μs|ns|d|)[0-9.]{0,5}(h|s)?") {
            let _ = GoDuration::parse(&s);
        }
    }
}
