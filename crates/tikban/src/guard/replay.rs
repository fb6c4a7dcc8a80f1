//! `tikban guard replay FILE`: the live detectors over a log file, with each line's own time.
//!
//! It prints one line per ban it would make, then a summary; it touches no router and no LAPI.
//! The reader takes any [`BufRead`] (the binary opens the file, or stdin for `-`) and holds at
//! most one line of [`MAX_LINE`] bytes: a longer line is skipped without being read into memory
//! and counted. Lines it cannot use are counted, never fatal. Output lines are printable ASCII
//! only: peer text is escaped ([`super::escape`]), so a user name cannot forge an output line.
//!
//! Output:
//!
//! ```text
//! 2026-10-02T17:36:38Z ban 192.168.88.17 tikban/routeros-login-bf events=6 first=2026-10-02T17:36:35Z services=ssh users=1 last-user="guest"
//! replay: 8 lines, 7 events (failure 6, denied 0, login 1, logout 0, firewall 0), 1 other, 0 too long, 0 without a time
//! replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 1 source tracked, 0 evicted, 0 untracked
//! ```

use std::fmt;
use std::io::{self, BufRead, Write};

use super::line::LineReader;
use super::parse;
use super::settings::{Settings, SettingsError, VARS};
use super::{Guard, Outcome, Scenario, Timestamp};

/// Longest line read (bytes, line end included); longer lines are skipped and counted.
pub const MAX_LINE: usize = 16 * 1024;

/// Usage text of `tikban guard replay`.
pub fn usage() -> String {
    let mut s = String::from(
        "Usage: tikban guard replay [OPTIONS] FILE\n\n\
         Runs guard's detectors over a RouterOS log file (FILE, or - for stdin), with each\n\
         line's own time, and prints the bans it would make and why, then a summary. It reads\n\
         API and console dumps, disk log files, rsyslog files (BSD or ISO 8601 times), BSD\n\
         syslog and CEF. It touches no router and no LAPI. Exit status: 0, 1 when FILE cannot\n\
         be read, 2 on a usage error.\n\n\
         Options (each setting also exists as a GUARD_* variable of the daemon):\n\
         \x20 --year YEAR\n\
         \x20     year of syslog times that have none (default: the current year)\n",
    );
    for v in VARS {
        s.push_str(&format!(
            "  {} VALUE\n      {}; {}; default: {}\n",
            v.flag(),
            v.help,
            v.kind,
            if v.default.is_empty() {
                "none"
            } else {
                v.default
            }
        ));
    }
    s.push_str("  -h, --help\n      this text\n");
    s
}

/// What `tikban guard …` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`.
    Help,
    /// A replay.
    Replay(Args),
}

/// The replay's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The file, `-` for stdin.
    pub path: String,
    /// `--year`.
    pub year: Option<i32>,
    /// Defaults plus the flags.
    pub settings: Settings,
}

/// A usage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<SettingsError> for UsageError {
    fn from(e: SettingsError) -> Self {
        UsageError(e.to_string())
    }
}

/// Parses the words after `tikban guard`: `replay [OPTIONS] FILE`. Option values may follow as
/// the next word or after `=`.
pub fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    let mut words = args.iter();
    match words.next().map(String::as_str) {
        Some("replay") => {}
        Some("-h" | "--help") => return Ok(Command::Help),
        Some(other) => {
            return Err(UsageError(format!(
                "unknown guard command {other:?} (only: replay)"
            )));
        }
        None => return Err(UsageError("missing command (only: replay)".into())),
    }
    let mut path = None;
    let mut year = None;
    let mut settings = Settings::default();
    while let Some(word) = words.next() {
        if word == "-h" || word == "--help" {
            return Ok(Command::Help);
        }
        if word == "-" || !word.starts_with('-') {
            if path.replace(word.clone()).is_some() {
                return Err(UsageError(format!("more than one FILE ({word:?})")));
            }
            continue;
        }
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (word.as_str(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => words
                .next()
                .cloned()
                .ok_or_else(|| UsageError(format!("{flag} needs a value")))?,
        };
        if flag == "--year" {
            let y = value
                .parse::<i32>()
                .ok()
                .filter(|y| (1970..=9999).contains(y))
                .ok_or_else(|| UsageError(format!("--year: {value:?} is not a year")))?;
            year = Some(y);
        } else {
            settings.set(flag, &value).map_err(|e| match e {
                SettingsError::Unknown(_) => UsageError(format!("unknown option {flag:?}")),
                other => other.into(),
            })?;
        }
    }
    if let Err(problems) = settings.check() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(UsageError(text.join("; ")));
    }
    let path = path.ok_or_else(|| UsageError("missing FILE (or - for stdin)".into()))?;
    Ok(Command::Replay(Args {
        path,
        year,
        settings,
    }))
}

/// What went wrong in a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the input failed.
    #[error("cannot read the log: {0}")]
    Read(io::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Write(io::Error),
}

/// The counts a replay prints last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines read (too-long ones included).
    pub lines: u64,
    /// Lines that were no event guard knows.
    pub other: u64,
    /// Lines longer than [`MAX_LINE`], skipped.
    pub too_long: u64,
    /// Lines without a time (they took the previous line's).
    pub untimed: u64,
    /// The detectors' counters at the end.
    pub counters: super::Counters,
}

impl Summary {
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let c = &self.counters;
        let events = c.outcome_total(Outcome::Failure)
            + c.outcome_total(Outcome::Denied)
            + c.outcome_total(Outcome::Success)
            + c.outcome_total(Outcome::Logout)
            + c.firewall;
        writeln!(
            out,
            "replay: {} lines, {events} events (failure {}, denied {}, login {}, logout {}, \
             firewall {}), {} other, {} too long, {} without a time",
            self.lines,
            c.outcome_total(Outcome::Failure),
            c.outcome_total(Outcome::Denied),
            c.outcome_total(Outcome::Success),
            c.outcome_total(Outcome::Logout),
            c.firewall,
            self.other,
            self.too_long,
            self.untimed,
        )?;
        let bans: u64 = c.detections.iter().sum();
        write!(
            out,
            "replay: {bans} ban{} (",
            if bans == 1 { "" } else { "s" }
        )?;
        for (i, s) in Scenario::ALL.into_iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(out, "{sep}{} {}", s.label(), c.detections[s.index()])?;
        }
        writeln!(
            out,
            "), {} source{} tracked, {} evicted, {} untracked",
            c.tracked_sources,
            if c.tracked_sources == 1 { "" } else { "s" },
            c.evictions,
            c.untracked
        )
    }
}

/// Replays `input`, writing ban lines and the summary to `out`. `year` is for syslog times
/// without one; `key` seeds the table's hash (see [`Guard::new`]).
pub fn run<R: BufRead, W: Write>(
    mut input: R,
    out: W,
    settings: Settings,
    year: i32,
    key: [u64; 2],
) -> Result<Summary, ReplayError> {
    let mut guard = Guard::new(settings, key).map_err(|problems| {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        ReplayError::Read(io::Error::new(io::ErrorKind::InvalidInput, text.join("; ")))
    })?;
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut reader = LineReader::new(year);
    let mut buf = Vec::with_capacity(MAX_LINE + 1);
    let mut summary = Summary::default();
    let mut now = Timestamp::EPOCH;
    loop {
        let line = match read_line(&mut input, &mut buf).map_err(ReplayError::Read)? {
            Line::End => break,
            Line::TooLong => {
                summary.lines += 1;
                summary.too_long += 1;
                continue;
            }
            Line::Text => {
                summary.lines += 1;
                // Valid UTF-8 (the usual case) is borrowed; anything else is made valid.
                match std::str::from_utf8(&buf) {
                    Ok(text) => std::borrow::Cow::Borrowed(text),
                    Err(_) => String::from_utf8_lossy(&buf),
                }
            }
        };
        let record = reader.record(&line);
        match record.time {
            Some(t) => now = t,
            None => summary.untimed += 1,
        }
        let event = parse::parse(record.topics, record.message);
        let Some(event) = event else {
            summary.other += 1;
            continue;
        };
        let event = match record.src {
            Some(src) => event.with_source(src),
            None => event,
        };
        guard.handle_event(now, &event);
        while let Some(d) = guard.poll_detection() {
            writeln!(
                out,
                "{} ban {} {} {}",
                d.last,
                d.source,
                d.scenario.name(),
                d.summary()
            )
            .map_err(ReplayError::Write)?;
        }
    }
    summary.counters = guard.counters();
    summary.write(&mut out).map_err(ReplayError::Write)?;
    out.flush().map_err(ReplayError::Write)?;
    Ok(summary)
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `buf` holds a line, without its `\n` or `\r\n`.
    Text,
    /// A line longer than [`MAX_LINE`], consumed up to its end and dropped.
    TooLong,
    /// End of input.
    End,
}

/// Reads one line into `buf`, never holding more than [`MAX_LINE`] + 1 bytes.
fn read_line<R: BufRead>(input: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = io::Read::take(&mut *input, MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Line::Text);
    }
    if buf.len() > MAX_LINE {
        buf.clear();
        input.skip_until(b'\n')?;
        return Ok(Line::TooLong);
    }
    // The last line, without a line end.
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    fn replay(input: &str, settings: Settings) -> (String, Summary) {
        let mut out = Vec::new();
        let s = run(input.as_bytes(), &mut out, settings, 2026, [1, 2]).unwrap();
        (String::from_utf8(out).unwrap(), s)
    }

    fn args(words: &[&str]) -> Result<Command, UsageError> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        parse_args(&words)
    }

    #[test]
    fn six_failures_in_three_seconds_print_one_ban_and_the_summary() {
        let mut log = String::new();
        for s in 35..41 {
            log.push_str(&format!(
                "Oct  2 17:36:{s} MikroTik login failure for user guest from 192.168.88.17 via ssh\n"
            ));
        }
        log.push_str(
            "Oct  2 17:36:41 MikroTik user admin logged in from 192.168.88.2 via winbox\n",
        );
        log.push_str("Oct  2 17:36:42 MikroTik log rule changed by admin\n");
        let (out, s) = replay(&log, Settings::default());
        assert_eq!(
            out,
            "2026-10-02T17:36:40Z ban 192.168.88.17 tikban/routeros-login-bf events=6 \
             first=2026-10-02T17:36:35Z services=ssh users=1 last-user=\"guest\"\n\
             replay: 8 lines, 7 events (failure 6, denied 0, login 1, logout 0, firewall 0), \
             1 other, 0 too long, 0 without a time\n\
             replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 1 source tracked, 0 evicted, \
             0 untracked\n"
        );
        assert_eq!(s.lines, 8);
    }

    #[test]
    fn a_user_name_cannot_forge_an_output_line() {
        let user = "x\u{1b}[2K\r2026-01-01T00:00:00Z ban 6.6.6.6 tikban/routeros-login-bf \"\\";
        let mut log = String::new();
        for _ in 0..6 {
            log.push_str(&format!(
                "system,error,critical login failure for user {user} from 10.0.0.1 via ssh\n"
            ));
        }
        let (out, _) = replay(&log, Settings::default());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("1970-01-01T00:00:00Z ban 10.0.0.1 "),
            "{out}"
        );
        assert!(
            lines[0].ends_with(r#"last-user="x\x1b[2K\x0d2026-01-01T00:00:00Z ban 6...""#),
            "{}",
            lines[0]
        );
        assert!(out.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn long_lines_are_skipped_without_being_held() {
        /// An endless run of 'a' for `left` bytes, then a newline and a normal line.
        struct Flood {
            left: u64,
            tail: &'static [u8],
        }
        impl Read for Flood {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.left > 0 {
                    let n = (out.len() as u64).min(self.left) as usize;
                    out[..n].fill(b'a');
                    self.left -= n as u64;
                    return Ok(n);
                }
                let n = out.len().min(self.tail.len());
                out[..n].copy_from_slice(&self.tail[..n]);
                self.tail = &self.tail[n..];
                Ok(n)
            }
        }
        let mut input = BufReader::new(Flood {
            left: 1 << 30,
            tail: b"\nsystem,info log rule changed by admin\nlast",
        });
        let mut buf = Vec::with_capacity(MAX_LINE + 1);
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::TooLong);
        assert!(buf.capacity() <= 2 * (MAX_LINE + 1), "{}", buf.capacity());
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::Text);
        assert_eq!(buf, b"system,info log rule changed by admin");
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::Text);
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::End);
        // Exactly MAX_LINE bytes plus the newline is still a line.
        let exact = format!("{}\n", "b".repeat(MAX_LINE));
        let mut r = exact.as_bytes();
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Text);
        assert_eq!(buf.len(), MAX_LINE);
    }

    #[test]
    fn crlf_and_invalid_utf8_lines_still_parse() {
        let mut log = Vec::new();
        for _ in 0..6 {
            log.extend_from_slice(
                b"system,error,critical login failure for user \xff\xfe from 10.0.0.1 via ssh\r\n",
            );
        }
        let mut out = Vec::new();
        run(&log[..], &mut out, Settings::default(), 2026, [0, 0]).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(r#"ban 10.0.0.1 tikban/routeros-login-bf events=6"#),
            "{out}"
        );
        assert!(out.contains(r#"last-user="\u{fffd}\u{fffd}""#), "{out}");
    }

    #[test]
    fn arguments() {
        let Ok(Command::Replay(a)) =
            args(&["replay", "--login-capacity", "3", "--year=2024", "f.log"])
        else {
            panic!()
        };
        assert_eq!(
            (a.path.as_str(), a.year, a.settings.login.capacity),
            ("f.log", Some(2024), 3)
        );
        let Ok(Command::Replay(a)) = args(&["replay", "-"]) else {
            panic!()
        };
        assert_eq!(a.path, "-");
        assert_eq!(args(&["replay", "--help"]), Ok(Command::Help));
        assert_eq!(args(&["--help"]), Ok(Command::Help));
        for bad in [
            &["replay"][..],
            &["nope"],
            &[],
            &["replay", "a", "b"],
            &["replay", "--login-capacity"],
            &["replay", "--bogus", "1", "f"],
            &["replay", "--year", "12", "f"],
            &["replay", "--userenum-capacity", "40", "f"],
            &["replay", "--ban-duration", "forever", "f"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
        let Err(e) = args(&["replay", "--bogus", "1", "f"]) else {
            panic!()
        };
        assert_eq!(e.to_string(), "unknown option \"--bogus\"");
        assert!(usage().contains("--portscan-enabled VALUE"));
    }
}
