//! `tikban guard replay` end to end: the binary over one fixture file per log shape
//! (`tests/fixtures/guard/`, sources in its README), stdin, bounded lines, hostile input and the
//! exit statuses.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/guard")
        .join(name)
}

fn tikban(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tikban"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

/// Runs `tikban guard replay ARGS FILE` and returns stdout, asserting exit status 0 and an
/// empty stderr.
fn replay(file: &str, args: &[&str]) -> String {
    let path = fixture(file);
    let mut all = vec!["guard", "replay"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    let out = tikban(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn replay_stdin(input: Vec<u8>, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tikban"))
        .args(["guard", "replay"])
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

// === one file per shape ===

#[test]
fn api_and_console_dumps_without_times() {
    // No time on any line: every event is at the epoch, so six failures are a burst. The
    // hostile user name (`x from 6.6.6.6 via ssh`) makes 203.0.113.6 tracked, never 6.6.6.6.
    assert_eq!(
        replay("api.log", &[]),
        "1970-01-01T00:00:00Z ban 203.0.113.5 tikban/routeros-login-bf events=6 \
         first=1970-01-01T00:00:00Z services=ssh users=1 last-user=\"admin\"\n\
         replay: 10 lines, 9 events (failure 7, denied 0, login 1, logout 1, firewall 0), \
         1 other, 0 too long, 10 without a time\n\
         replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 2 sources tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn console_print_with_dates() {
    // Ten failures a second apart: banned at the sixth. Three failures in eight minutes from
    // another address: not banned.
    assert_eq!(
        replay("console.log", &[]),
        "2026-10-02T17:35:45Z ban 203.0.113.10 tikban/routeros-login-bf events=6 \
         first=2026-10-02T17:35:40Z services=ssh users=1 last-user=\"admin\"\n\
         replay: 14 lines, 14 events (failure 13, denied 0, login 1, logout 0, firewall 0), \
         0 other, 0 too long, 0 without a time\n\
         replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 2 sources tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn disk_log_files_and_denied_winbox_connections() {
    assert_eq!(
        replay("disk.log", &[]),
        "2026-10-02T16:49:35Z ban 203.0.113.7 tikban/routeros-login-bf events=6 \
         first=2026-10-02T16:49:30Z services=winbox/dude users=0\n\
         replay: 7 lines, 6 events (failure 0, denied 6, login 0, logout 0, firewall 0), \
         1 other, 0 too long, 0 without a time\n\
         replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 1 source tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn rsyslog_files_take_the_year_option() {
    // fail2ban's lines (an empty user, a user with spaces, IPv6) are read and not banned; a
    // new user name every 8 s is too slow for login-bf but is a user enumeration.
    assert_eq!(
        replay("rsyslog.log", &["--year", "2005"]),
        "2005-03-02T10:01:28Z ban 198.51.100.23 tikban/routeros-user-enum events=12 \
         first=2005-03-02T10:00:00Z services=api users=12 last-user=\"ftp\"\n\
         replay: 16 lines, 15 events (failure 15, denied 0, login 0, logout 0, firewall 0), \
         1 other, 0 too long, 0 without a time\n\
         replay: 1 ban (login-bf 0, user-enum 1, portscan 0), 4 sources tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn iso8601_times_with_offsets() {
    assert_eq!(
        replay("iso8601.log", &[]),
        "2023-03-19T11:34:13.100Z ban 10.10.0.35 tikban/routeros-login-bf events=6 \
         first=2023-03-19T11:34:09Z services=ssh,winbox users=1 last-user=\"admin\"\n\
         replay: 6 lines, 6 events (failure 6, denied 0, login 0, logout 0, firewall 0), \
         0 other, 0 too long, 0 without a time\n\
         replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 1 source tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn bsd_syslog_without_topics() {
    assert_eq!(
        replay("bsd-syslog.log", &["--year=2026"]),
        "2026-10-02T17:36:40Z ban 192.168.88.17 tikban/routeros-login-bf events=6 \
         first=2026-10-02T17:36:35Z services=ssh users=1 last-user=\"guest\"\n\
         replay: 7 lines, 7 events (failure 6, denied 0, login 1, logout 0, firewall 0), \
         0 other, 0 too long, 0 without a time\n\
         replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 1 source tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn cef_escapes_cannot_fake_the_source() {
    // The user name `a src\=6.6.6.6 b\\` is one escaped value: the ban is the router's src.
    assert_eq!(
        replay("cef.log", &["--year", "2026"]),
        "2026-10-02T17:36:40Z ban 192.168.88.17 tikban/routeros-login-bf events=6 \
         first=2026-10-02T17:36:35Z services=ssh users=1 last-user=\"a src=6.6.6.6 b\\\\\"\n\
         replay: 6 lines, 6 events (failure 6, denied 0, login 0, logout 0, firewall 0), \
         0 other, 0 too long, 0 without a time\n\
         replay: 1 ban (login-bf 1, user-enum 0, portscan 0), 1 source tracked, 0 evicted, \
         0 untracked\n"
    );
}

#[test]
fn firewall_logs_are_a_port_scan_only_when_enabled() {
    let summary = "replay: 20 lines, 20 events (failure 0, denied 0, login 0, logout 0, \
                   firewall 20), 0 other, 0 too long, 0 without a time\n";
    assert_eq!(
        replay("firewall.log", &[]),
        format!(
            "{summary}replay: 0 bans (login-bf 0, user-enum 0, portscan 0), 0 sources \
             tracked, 0 evicted, 0 untracked\n"
        )
    );
    assert_eq!(
        replay("firewall.log", &["--portscan-enabled", "true"]),
        format!(
            "2023-03-18T19:36:59.594Z ban 36.97.161.219 tikban/routeros-portscan events=16 \
             first=2023-03-18T19:36:59Z ports=23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38\n\
             {summary}replay: 1 ban (login-bf 0, user-enum 0, portscan 1), 4 sources tracked, \
             0 evicted, 0 untracked\n"
        )
    );
}

#[test]
fn thresholds_come_from_the_flags() {
    // With a capacity of 10 the console file's ten failures are no longer enough.
    let out = replay("console.log", &["--login-capacity", "10"]);
    assert!(out.starts_with("replay: 14 lines"), "{out}");
    // And the allowlist removes the attacker altogether.
    let out = replay("console.log", &["--allowlist", "203.0.113.0/24"]);
    assert!(out.contains("replay: 0 bans"), "{out}");
    assert!(out.contains("1 source tracked"), "{out}");
}

// === stdin, bounds, hostile input ===

#[test]
fn stdin_with_a_huge_line_and_forged_output() {
    let mut input = Vec::new();
    // 8 MiB without a line end: skipped, never held.
    input.extend(std::iter::repeat_n(b'x', 8 << 20));
    input.push(b'\n');
    // A user name that tries to print its own ban line and clear the terminal.
    let user = "u\u{1b}[2J\r1999-01-01T00:00:00Z ban 6.6.6.6 tikban/routeros-login-bf";
    for s in 0..6 {
        input.extend(
            format!(
                "2026-10-02 17:35:4{s} system,error,critical login failure for user {user} \
                 from 2001:db8::bad via ssh\n"
            )
            .bytes(),
        );
    }
    input.extend(b"\xff\xfe not utf-8 at all\n");
    let out = replay_stdin(input, &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0],
        "2026-10-02T17:35:45Z ban 2001:db8::bad tikban/routeros-login-bf events=6 \
         first=2026-10-02T17:35:40Z services=ssh users=1 \
         last-user=\"u\\x1b[2J\\x0d1999-01-01T00:00:00Z ban 6...\""
    );
    assert!(
        lines[1].ends_with("1 other, 1 too long, 1 without a time"),
        "{}",
        lines[1]
    );
    assert!(
        stdout
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
    );
}

// === usage and exit statuses ===

#[test]
fn exit_statuses() {
    let out = tikban(&["guard", "replay"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing FILE"));
    for bad in [
        &["guard"][..],
        &["guard", "rewind", "x"],
        &["guard", "replay", "--login-capacity", "many", "x"],
        &["guard", "replay", "--nope", "1", "x"],
        &["guard", "replay", "a", "b"],
    ] {
        assert_eq!(tikban(bad).status.code(), Some(2), "{bad:?}");
    }
    let out = tikban(&["guard", "replay", "/nonexistent/routeros.log"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    let dir = env!("CARGO_MANIFEST_DIR");
    assert_eq!(tikban(&["guard", "replay", dir]).status.code(), Some(1));
}

#[test]
fn help_texts() {
    let out = tikban(&["guard", "replay", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for v in tikban::guard::VARS {
        assert!(help.contains(&v.flag()), "{} missing", v.flag());
    }
    let out = tikban(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tikban guard replay [OPTIONS] FILE|-"));
    let out = tikban(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tikban {}", env!("CARGO_PKG_VERSION"))
    );
}
