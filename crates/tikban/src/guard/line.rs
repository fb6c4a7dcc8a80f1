//! Log lines as files hold them → `(time, topics, message)`, for [`super::replay`].
//!
//! Every shape a RouterOS owner has (docs/guard.md, "Log shapes"):
//!
//! | shape | example start |
//! |---|---|
//! | API or console, no time | `system,error,critical login failure …` |
//! | console `/log print` | `2026-10-02 17:35:45 system,error,critical …` |
//! | RouterOS 6 console | `oct/02 17:35:45 …`, or `17:35:45 …` for today |
//! | disk log file | `Oct/02/2026 16:49:36 system,error,critical …` |
//! | rsyslog file (fail2ban, hub tests) | `Feb 15 11:25:46 gw.local system,error,critical …` |
//! | rsyslog with ISO 8601 | `2023-03-19T12:34:09.757188+01:00 10.120.127.1 system,… …` |
//! | BSD syslog datagram | `<27>Oct  2 17:36:35 MikroTik login failure …` (no topics) |
//! | CEF | `… CEF:0\|MikroTik\|…\|system,error,critical\|High\|… msg=… src=…` |
//!
//! Times: ISO 8601 offsets are applied (times are UTC); every other time has no zone and is
//! taken as UTC. A BSD syslog time has no year: it takes the year given to [`LineReader::new`]
//! (`--year`, else the current one), plus one each time the month steps back by more than six
//! (December → January). A time without a date takes the date of the last dated line. A line
//! without any time gets `None`; the replay gives it the previous line's time.
//!
//! After a syslog time comes the sender's host name, unless the next word is a topic list
//! (`system,error,critical`). A first word is a topic list when it is lower-case letters, digits
//! and `-` joined by commas and either holds a comma or is a known single topic (`system`,
//! `firewall`, `info`…). So a BSD syslog firewall line whose log prefix is `drop-in` keeps
//! `drop-in` as its prefix.

use std::net::IpAddr;

use super::parse::parse_ip;
use super::time::{Date, Timestamp, month_of};

/// One line, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The line's time, UTC.
    pub time: Option<Timestamp>,
    /// Its topics; empty when the line carries none.
    pub topics: &'a str,
    /// The log message.
    pub message: &'a str,
    /// CEF's `src=` field: the router's own address field, which replaces the address of a
    /// login line (never a firewall line's).
    pub src: Option<IpAddr>,
}

/// Reads lines into [`Record`]s, keeping the year and date context between lines.
#[derive(Debug, Clone)]
pub struct LineReader {
    year: i32,
    last_month: u32,
    last_date: Option<Date>,
    /// A CEF message after unescaping.
    scratch: String,
}

/// RouterOS topics that may stand alone as a line's first word. Sorted: searched by bisection.
const TOPICS: &[&str] = &[
    "account",
    "bgp",
    "bridge",
    "caps",
    "certificate",
    "container",
    "critical",
    "debug",
    "dhcp",
    "dns",
    "error",
    "event",
    "firewall",
    "hotspot",
    "info",
    "interface",
    "ipsec",
    "l2tp",
    "lte",
    "manager",
    "netwatch",
    "ntp",
    "ospf",
    "ovpn",
    "ppp",
    "pppoe",
    "route",
    "script",
    "ssh",
    "sstp",
    "system",
    "warning",
    "web-proxy",
    "wireguard",
    "wireless",
];

impl LineReader {
    /// A reader for lines whose syslog times lack a year: they get `year`.
    pub fn new(year: i32) -> Self {
        LineReader {
            year,
            last_month: 0,
            last_date: None,
            scratch: String::new(),
        }
    }

    /// Takes one line apart (without its line end).
    pub fn record<'a>(&'a mut self, line: &'a str) -> Record<'a> {
        let spaces = line.bytes().take_while(|&b| b == b' ').count();
        let line = &line[spaces..];
        let line = strip_priority(line);
        let (time, rest, host) = self.time(line);
        let rest = if host { skip_host(rest) } else { rest };
        if let Some(cef) = rest.strip_prefix("CEF:") {
            if let Some(r) = self.cef(time, cef) {
                return r;
            }
        }
        let (topics, message) = split_topics(rest);
        Record {
            time,
            topics,
            message,
            src: None,
        }
    }

    /// The time at the start of `line`: `(time, rest, a host name follows)`.
    fn time<'a>(&mut self, line: &'a str) -> (Option<Timestamp>, &'a str, bool) {
        let b = line.as_bytes();
        if b.get(4) == Some(&b'-') {
            if let Some((t, rest, host)) = self.iso(line) {
                return (Some(t), rest, host);
            }
        }
        if b.get(3) == Some(&b'/') {
            if let Some((t, rest)) = self.slashed(line) {
                return (Some(t), rest, false);
            }
        }
        if b.get(3) == Some(&b' ') {
            if let Some((t, rest)) = self.bsd(line) {
                return (Some(t), rest, true);
            }
        }
        if b.get(2) == Some(&b':') {
            if let Some((h, m, s)) = clock(b, 0) {
                if b.get(8) == Some(&b' ') {
                    let date = self
                        .last_date
                        .or_else(|| Date::new(self.year, 1, 1))
                        .and_then(|d| Timestamp::from_civil(d, h, m, s, 0));
                    if let Some(t) = date {
                        return (Some(t), &line[9..], false);
                    }
                }
            }
        }
        (None, line, false)
    }

    /// `2023-03-19T12:34:09.757188+01:00 host …` (host follows) or `2026-10-02 17:35:45 …`.
    fn iso<'a>(&mut self, line: &'a str) -> Option<(Timestamp, &'a str, bool)> {
        let b = line.as_bytes();
        let year = digits(b, 0, 4)?;
        if b.get(7) != Some(&b'-') {
            return None;
        }
        let date = Date::new(year as i32, digits(b, 5, 2)?, digits(b, 8, 2)?)?;
        let t_form = match b.get(10)? {
            b'T' => true,
            b' ' => false,
            _ => return None,
        };
        let (h, m, s) = clock(b, 11)?;
        let mut i = 19;
        let mut ms = 0;
        let mut offset_min: i64 = 0;
        if t_form {
            if b.get(i) == Some(&b'.') {
                i += 1;
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                for (k, d) in b[start..i].iter().take(3).enumerate() {
                    ms += u32::from(d - b'0') * [100, 10, 1][k];
                }
            }
            match b.get(i) {
                Some(b'Z') => i += 1,
                Some(&sign @ (b'+' | b'-')) => {
                    let oh = digits(b, i + 1, 2)?;
                    let colon = usize::from(b.get(i + 3) == Some(&b':'));
                    let om = digits(b, i + 3 + colon, 2)?;
                    offset_min = i64::from(oh * 60 + om);
                    if sign == b'-' {
                        offset_min = -offset_min;
                    }
                    i += 5 + colon;
                }
                _ => {}
            }
        }
        if b.get(i) != Some(&b' ') {
            return None;
        }
        let local = Timestamp::from_civil(date, h, m, s, ms)?;
        let utc = i64::try_from(local.as_millis()).ok()? - offset_min * 60_000;
        let utc = Timestamp::from_millis(u64::try_from(utc).ok()?);
        self.last_date = Some(date);
        Some((utc, &line[i + 1..], t_form))
    }

    /// `Oct/02/2026 16:49:36 …` (disk log) or `oct/02 17:35:45 …` (RouterOS 6 console).
    fn slashed<'a>(&mut self, line: &'a str) -> Option<(Timestamp, &'a str)> {
        let b = line.as_bytes();
        let month = month_of(line.get(..3)?)?;
        let day = digits(b, 4, 2)?;
        let (year, at) = match b.get(6)? {
            b'/' => (digits(b, 7, 4)? as i32, 12),
            b' ' => (self.year, 7),
            _ => return None,
        };
        if at == 12 && b.get(11) != Some(&b' ') {
            return None;
        }
        let (h, m, s) = clock(b, at)?;
        if b.get(at + 8) != Some(&b' ') {
            return None;
        }
        let date = Date::new(year, month, day)?;
        self.last_date = Some(date);
        Some((Timestamp::from_civil(date, h, m, s, 0)?, &line[at + 9..]))
    }

    /// `Oct  2 17:36:35 host …`, `Feb 15 11:25:46 host …`.
    fn bsd<'a>(&mut self, line: &'a str) -> Option<(Timestamp, &'a str)> {
        let b = line.as_bytes();
        let month = month_of(line.get(..3)?)?;
        let day = match b.get(4)? {
            b' ' => digits(b, 5, 1)?,
            _ => digits(b, 4, 2)?,
        };
        if b.get(6) != Some(&b' ') {
            return None;
        }
        let (h, m, s) = clock(b, 7)?;
        if b.get(15) != Some(&b' ') {
            return None;
        }
        if self.last_month > 0 && month + 6 < self.last_month {
            self.year += 1;
        }
        let date = Date::new(self.year, month, day)?;
        self.last_month = month;
        self.last_date = Some(date);
        Some((Timestamp::from_civil(date, h, m, s, 0)?, &line[16..]))
    }

    /// `CEF:0|vendor|product|version|class|name|severity|extension`: the name is the topic
    /// list; `msg=` (the first) is the message, `src=` (the last) the address.
    fn cef<'a>(&'a mut self, time: Option<Timestamp>, body: &'a str) -> Option<Record<'a>> {
        let b = body.as_bytes();
        let mut fields = [""; 7];
        let (mut k, mut start, mut i) = (0, 0, 0);
        while i < b.len() && k < 7 {
            match b[i] {
                b'\\' => i += 2,
                b'|' => {
                    fields[k] = &body[start..i];
                    k += 1;
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        if k < 7 {
            return None;
        }
        let ext = &body[start..];
        let (mut msg, mut src) = (None, None);
        for (key, value) in cef_pairs(ext) {
            match key {
                "msg" if msg.is_none() => msg = Some(value),
                "src" => src = Some(value),
                _ => {}
            }
        }
        self.scratch.clear();
        unescape_cef(msg?, &mut self.scratch);
        Some(Record {
            time,
            topics: fields[5],
            message: &self.scratch,
            src: src.and_then(parse_ip),
        })
    }
}

/// The `key=value` pairs of a CEF extension. A key is letters, digits, `_` or `.` right before
/// an unescaped `=`, at the start or after a space; its value runs to the space before the next
/// key. Escaped values (`\=`, `\\`) are returned raw.
fn cef_pairs(ext: &str) -> impl Iterator<Item = (&str, &str)> {
    let b = ext.as_bytes();
    let mut keys = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'=' => {
                let mut k = i;
                while k > 0 && (b[k - 1].is_ascii_alphanumeric() || matches!(b[k - 1], b'_' | b'.'))
                {
                    k -= 1;
                }
                if k < i && (k == 0 || b[k - 1] == b' ') {
                    keys.push((k, i));
                }
                i += 1;
            }
            _ => i += 1,
        }
        // Bounded by the line length; each '=' is visited once.
    }
    let ends: Vec<usize> = keys
        .iter()
        .skip(1)
        .map(|&(k, _)| k.saturating_sub(1))
        .chain(std::iter::once(ext.len()))
        .collect();
    keys.into_iter()
        .zip(ends)
        .map(move |((k, eq), end)| (&ext[k..eq], ext.get(eq + 1..end).unwrap_or("")))
}

/// CEF value escapes: `\=`, `\\`, `\|`, `\n`, `\r`; any other backslash stays.
fn unescape_cef(value: &str, out: &mut String) {
    let mut rest = value;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(e @ ('=' | '\\' | '|')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
}

/// `<27>` at the start of a syslog datagram.
fn strip_priority(line: &str) -> &str {
    let b = line.as_bytes();
    if b.first() != Some(&b'<') {
        return line;
    }
    match b.iter().take(5).position(|&c| c == b'>') {
        Some(end) if end > 1 && b[1..end].iter().all(u8::is_ascii_digit) => &line[end + 1..],
        _ => line,
    }
}

/// Drops the host name after a syslog time (see the module docs).
fn skip_host(rest: &str) -> &str {
    match split_word(rest) {
        Some((word, after)) if !word.starts_with("CEF:") && !is_topics(word) => after,
        _ => rest,
    }
}

/// `topics message`, or `("", rest)` when the first word is no topic list.
fn split_topics(rest: &str) -> (&str, &str) {
    match split_word(rest) {
        Some((word, message)) if is_topics(word) => (word, message),
        _ => ("", rest),
    }
}

/// The first word and the text after its space (a byte scan: cheaper than a char searcher
/// for the few bytes of a host name or topic list).
fn split_word(text: &str) -> Option<(&str, &str)> {
    let i = text.as_bytes().iter().position(|&b| b == b' ')?;
    Some((&text[..i], &text[i + 1..]))
}

fn is_topics(word: &str) -> bool {
    let b = word.as_bytes();
    if b.is_empty() || b.len() > 128 || b[0] == b',' || b[b.len() - 1] == b',' {
        return false;
    }
    let mut comma = false;
    let mut prev = 0u8;
    for &c in b {
        match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => {}
            b',' if prev != b',' => comma = true,
            _ => return false,
        }
        prev = c;
    }
    comma || TOPICS.binary_search(&word).is_ok()
}

/// `n` ASCII digits at `at`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `hh:mm:ss` at `at`.
fn clock(b: &[u8], at: usize) -> Option<(u32, u32, u32)> {
    if b.get(at + 2) != Some(&b':') || b.get(at + 5) != Some(&b':') {
        return None;
    }
    Some((
        digits(b, at, 2)?,
        digits(b, at + 3, 2)?,
        digits(b, at + 6, 2)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: &str) -> (Option<String>, String, String, Option<IpAddr>) {
        let mut r = LineReader::new(2026);
        let x = r.record(line);
        (
            x.time.map(|t| t.to_string()),
            x.topics.to_owned(),
            x.message.to_owned(),
            x.src,
        )
    }

    const MSG: &str = "login failure for user guest from 192.168.88.17 via ssh";

    #[test]
    fn every_time_shape() {
        let cases = [
            (format!("system,error,critical {MSG}"), None),
            (
                format!("2026-10-02 17:35:45 system,error,critical {MSG}"),
                Some("2026-10-02T17:35:45Z"),
            ),
            (
                format!("Oct/02/2026 16:49:36 system,error,critical {MSG}"),
                Some("2026-10-02T16:49:36Z"),
            ),
            (
                format!("oct/02 17:35:45 system,error,critical {MSG}"),
                Some("2026-10-02T17:35:45Z"),
            ),
            (
                format!("Feb 15 11:25:46 gw.local system,error,critical {MSG}"),
                Some("2026-02-15T11:25:46Z"),
            ),
            (
                format!(
                    "2023-03-19T12:34:09.757188+01:00 10.120.127.1 system,error,critical {MSG}"
                ),
                Some("2023-03-19T11:34:09.757Z"),
            ),
            (
                format!("2023-03-19T12:34:09Z host system,error,critical {MSG}"),
                Some("2023-03-19T12:34:09Z"),
            ),
            (
                format!("2023-03-19T12:34:09-0530 host system,error,critical {MSG}"),
                Some("2023-03-19T18:04:09Z"),
            ),
        ];
        for (line, time) in cases {
            let (t, topics, message, _) = rec(&line);
            assert_eq!(t.as_deref(), time, "{line}");
            assert_eq!(topics, "system,error,critical", "{line}");
            assert_eq!(message, MSG, "{line}");
        }
        let (t, topics, message, _) = rec(&format!("<27>Oct  2 17:36:35 MikroTik {MSG}"));
        assert_eq!(
            (t.as_deref(), topics.as_str(), message.as_str()),
            (Some("2026-10-02T17:36:35Z"), "", MSG)
        );
    }

    #[test]
    fn cef_takes_topics_msg_and_the_last_src() {
        let line = "Oct  2 17:36:35 MikroTik CEF:0|MikroTik|hAP ax^2|7.25beta5|10|\
                    system,error,critical|High|dvchost=MikroTik dvc=192.168.88.36 msg=login \
                    failure for user guest from 192.168.88.17 via ssh app=ssh duser=guest \
                    outcome=failure src=192.168.88.17";
        let (t, topics, message, src) = rec(line);
        assert_eq!(t.as_deref(), Some("2026-10-02T17:36:35Z"));
        assert_eq!(topics, "system,error,critical");
        assert_eq!(message, MSG);
        assert_eq!(src, Some("192.168.88.17".parse().unwrap()));
        // Escaped '=' and '\' in a user name: one value, unescaped; no forged key.
        let line = r"CEF:0|MikroTik|x|7|10|system,error,critical|High|msg=login failure for user a src\=6.6.6.6 b\\ from 10.0.0.1 via ssh duser=a src\=6.6.6.6 b\\ outcome=failure src=10.0.0.1";
        let (_, _, message, src) = rec(line);
        assert_eq!(
            message,
            r"login failure for user a src=6.6.6.6 b\ from 10.0.0.1 via ssh"
        );
        assert_eq!(src, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_topic_list_is_sorted_for_bisection() {
        assert!(TOPICS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn cef_unescaping() {
        let mut out = String::new();
        unescape_cef(r"a\=b\\c\nd\|e\xf\", &mut out);
        assert_eq!(out, "a=b\\c\nd|e\\xf\\");
        assert!(is_topics("system,error,critical") && is_topics("firewall"));
        for bad in ["", ",a", "a,", "a,,b", "Drop", "drop-in", "gw.local", "a b"] {
            assert!(!is_topics(bad), "{bad}");
        }
    }

    #[test]
    fn host_or_topics_after_a_syslog_time() {
        // No host: the topic list is recognised.
        let (_, topics, message, _) = rec(&format!("Feb 15 11:25:46 system,error,critical {MSG}"));
        assert_eq!(
            (topics.as_str(), message.as_str()),
            ("system,error,critical", MSG)
        );
        // BSD syslog firewall line: the log prefix stays in the message.
        let fw =
            "drop-in input: in:ether1 out:(unknown 0), proto UDP, 1.2.3.4:5->6.7.8.9:53, len 60";
        let (_, topics, message, _) = rec(&format!("<28>Oct  2 17:36:35 MikroTik {fw}"));
        assert_eq!((topics.as_str(), message.as_str()), ("", fw));
    }

    #[test]
    fn bsd_years_roll_over_in_january() {
        let mut r = LineReader::new(2025);
        let t = |r: &mut LineReader, l: &str| r.record(l).time.unwrap().to_string();
        assert_eq!(
            t(&mut r, "Dec 31 23:59:59 h system,info x"),
            "2025-12-31T23:59:59Z"
        );
        assert_eq!(
            t(&mut r, "Jan  1 00:00:01 h system,info x"),
            "2026-01-01T00:00:01Z"
        );
        assert_eq!(
            t(&mut r, "Jan  1 00:00:02 h system,info x"),
            "2026-01-01T00:00:02Z"
        );
        // A time alone takes the last date.
        assert_eq!(t(&mut r, "12:00:00 system,info x"), "2026-01-01T12:00:00Z");
    }

    #[test]
    fn odd_lines_never_panic_and_keep_the_text() {
        for line in [
            "",
            "<",
            "<999999>",
            "2026-",
            "2026-10-02T",
            "Oct",
            "Oct/",
            "Oct/02/20",
            "12:",
            "CEF:",
            "CEF:0|a|b",
            "x CEF:0|||||||",
            "Feb 30 11:25:46 h m",
            "é2026-10-02 17:35:45 x",
            "Oct  2 17:36:35",
            "2026-10-02T17:36:35.1234567890123+99:99 h m",
        ] {
            let mut r = LineReader::new(2026);
            let _ = r.record(line);
        }
        let (t, topics, message, _) = rec("Feb 30 11:25:46 h message");
        assert_eq!((t, topics.as_str()), (None, ""));
        assert_eq!(message, "Feb 30 11:25:46 h message");
    }
}
