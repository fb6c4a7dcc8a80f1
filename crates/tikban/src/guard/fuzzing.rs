//! Entry points for the cargo-fuzz targets in `crates/tikban/fuzz` (not a public API). Each one
//! panics when an invariant breaks, which is what the fuzzer reports.

use super::parse::{self, Event, parse_ip};
use super::replay;
use super::{Guard, Settings, Timestamp};

/// `guard_parse`: bytes are `topics`, a 0 byte, then the message (lossily UTF-8). The parser
/// must not panic, and a login event's address must be the one the router wrote: the text
/// after the message's last ` from ` (up to the next space), or its final `src=`. The message
/// also goes through a small [`Guard`] so the detectors see arbitrary events.
pub fn parse_message(data: &[u8]) {
    let (topics, message) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let topics = String::from_utf8_lossy(topics);
    let message = String::from_utf8_lossy(message);
    let Some(event) = parse::parse(&topics, &message) else {
        return;
    };
    match event {
        Event::LoginFailure(_)
        | Event::LoggedIn(_)
        | Event::LoggedOut(_)
        | Event::Denied { .. } => {
            let source = event.source();
            let after_from = message
                .rsplit_once(" from ")
                .and_then(|(_, rest)| parse_ip(rest.split(' ').next().unwrap_or("")));
            let src = message
                .rsplit_once(" src=")
                .and_then(|(_, rest)| parse_ip(rest));
            assert!(
                Some(source) == after_from || Some(source) == src,
                "{source} is neither after the last \" from \" ({after_from:?}) nor src= \
                 ({src:?}) in {message:?}"
            );
        }
        Event::Firewall(_) => assert!(message.contains("->") && message.contains(": in:")),
    }
    let settings = Settings {
        max_sources: 4,
        ..Settings::default()
    };
    let Ok(mut guard) = Guard::new(settings, [1, 2]) else {
        return;
    };
    for i in 0..8 {
        guard.handle_event(Timestamp::from_millis(i * 100), &event);
    }
    while let Some(d) = guard.poll_detection() {
        assert_eq!(d.source, event.source());
        let line = d.to_string();
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
    }
}

/// `guard_replay`: arbitrary bytes as a log file. The replay must not panic, and its output
/// must be printable ASCII lines: ban lines (a time, then ` ban `) and exactly two summary lines
/// whose ban count equals the number of ban lines.
pub fn replay_bytes(data: &[u8]) {
    let settings = Settings {
        max_sources: 8,
        portscan: super::Bucket {
            enabled: true,
            ..Settings::default().portscan
        },
        ..Settings::default()
    };
    let mut out = Vec::new();
    let Ok(summary) = replay::run(data, &mut out, settings, 2026, [3, 4]) else {
        panic!("in-memory replay failed");
    };
    assert!(
        out.iter().all(|&b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "non-printable output"
    );
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2);
    let (bans, tail) = lines.split_at(lines.len() - 2);
    assert!(tail.iter().all(|l| l.starts_with("replay: ")));
    for l in bans {
        let mut words = l.split(' ');
        let time = words.next().unwrap_or("");
        assert!(time.ends_with('Z') && time.len() >= 20, "{l}");
        assert_eq!(words.next(), Some("ban"), "{l}");
    }
    let detections: u64 = summary.counters.detections.iter().sum();
    assert_eq!(bans.len() as u64, detections);
    assert!(summary.counters.tracked_sources <= 8);
}
