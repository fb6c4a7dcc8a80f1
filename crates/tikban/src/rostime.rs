//! RouterOS time values as printed by `print` (`docs/reference/routeros-api.md` §7): v7 prints `23h59m55s` or
//! `1w2d3h4m5s` (sometimes with `ms`), v6 prints `23:59:55`, optionally after `1d` or `1w2d`.

use std::time::Duration;

/// Parses a printed time value. `None` for anything else.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        if rest.starts_with(':') {
            // The clock part closes the value: hh:mm:ss.
            let clock = &text[text.len() - rest.len() - digits..];
            return Some(total + parse_clock(clock)?);
        }
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            let secs = match rest.chars().next()? {
                'w' => 7 * 86_400,
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
            (Duration::from_secs(secs), 1)
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

fn parse_clock(clock: &str) -> Option<Duration> {
    let mut parts = clock.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || m > 59 || s > 59 {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_and_v6_forms() {
        let s = Duration::from_secs;
        assert_eq!(parse("23h59m55s"), Some(s(86_395)));
        assert_eq!(
            parse("1w2d3h4m5s"),
            Some(s(7 * 86_400 + 2 * 86_400 + 3 * 3600 + 245))
        );
        assert_eq!(parse("35w3d13h13m56s"), Some(s(21_474_836)));
        assert_eq!(parse("23:59:55"), Some(s(86_395)));
        assert_eq!(parse("00:05:00"), Some(s(300)));
        assert_eq!(parse("35w3d13:13:56"), Some(s(21_474_836)));
        assert_eq!(parse("4m59s900ms"), Some(Duration::from_millis(299_900)));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_other_text() {
        for bad in ["", "abc", "1x", "h", "12:61:00", "1:2:3:4", "--", "1h-2m"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
