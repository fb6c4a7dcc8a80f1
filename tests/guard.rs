//! Guard (issue 13), end to end: the real CrowdSec LAPI 1.4.6, `routeros-sim` with its `/log`,
//! and the `tikban` binary. Failed logins are played as the router logs them (lines injected
//! into the sim's memory log, and real failed API logins, which the sim logs itself); guard must
//! put the attacker on the router's drop list within 2 s, share the ban through LAPI, and never
//! ban itself, an allowlisted address, an admin's address or an address a user name names.
//!
//! No test sleeps and then asserts: each waits for a positive signal with a deadline, and an
//! absence is only asserted after something proved the pipeline ran (another attacker banned in
//! the same run, or guard's log line that it refused a detection). "Never on the list" is read
//! from the sim's transcript (every `add` it received), not from the list at one moment.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use routeros_proto::{Decoder, Limits, Reply, ReplyKind, login};
use routeros_sim::{Direction, Family};
use support::{Tikban, USER, V4, World, tail, wait_for, with_env};
use tikban::supervisor::SESSIONS_FRESH;

/// Start-up, first sync, and any wait whose bound is not what is tested.
const SETUP: Duration = Duration::from_secs(60);
/// The bound under test: the last failed login to the address on the drop list.
const BAN_WITHIN: Duration = Duration::from_secs(2);
/// The topics RouterOS gives a failed login.
const TOPICS: &str = "system,error,critical";
/// The scenario of login brute force.
const LOGIN_BF: &str = "tikban/routeros-login-bf";

/// `login failure for user <user> from <address> via <service>`, as RouterOS writes it.
fn failure(user: &str, address: &str, via: &str) -> String {
    format!("login failure for user {user} from {address} via {via}")
}

/// Plays `n` failed logins of `user` from `address` over `within`, evenly spaced, as the router
/// logs them; returns when the last line was logged.
fn attack(w: &World, n: u32, within: Duration, user: &str, address: &str, via: &str) -> Instant {
    let gap = within / n;
    let mut last = Instant::now();
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(gap);
        }
        w.sim.log(TOPICS, &failure(user, address, via));
        last = Instant::now();
    }
    last
}

/// Waits until guard's log follower streams new entries: the sim received its `follow-only`
/// print, and a probe line logged after it was counted by guard. (A line logged between the
/// recent-buffer print and the follow print would be missed, as on a router; the probe is
/// logged again until one is counted.)
fn wait_for_follower(w: &World, t: &mut Tikban) {
    wait_for(
        "guard's follow-only print of the router log",
        SETUP,
        || tail(&t.output()),
        || {
            w.sim.transcript().iter().any(|e| {
                e.direction == Direction::In
                    && e.words.first().is_some_and(|p| p == b"/log/print")
                    && e.words.iter().any(|w| w.starts_with(b"=follow-only"))
            })
        },
    );
    let deadline = Instant::now() + SETUP;
    loop {
        let before = t.metric("tikban_guard_log_lines_total");
        w.sim.log("system,info", "guard test probe");
        let counted = Instant::now() + Duration::from_secs(3);
        while Instant::now() < counted {
            if t.metric("tikban_guard_log_lines_total") > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(t.is_running(), "tikban exited:\n{}", t.output());
        assert!(
            Instant::now() < deadline,
            "guard never counted a live log line:\n{}",
            tail(&t.output())
        );
    }
}

/// Starts tikban on `w` with `extra` env, waits until it is healthy (first sync done) and its
/// log follower is live.
fn start(w: &World, extra: &[(&str, &str)]) -> Tikban {
    let mut t = w.tikban_with(extra);
    t.wait_healthy(SETUP);
    wait_for_follower(w, &mut t);
    t
}

/// Every `add` the sim received for `address` (its transcript): "never banned" means none.
fn adds(w: &World, address: &str) -> usize {
    w.adds_per_address().get(address).copied().unwrap_or(0)
}

/// True when the v4 drop list holds `address`.
fn listed(w: &World, address: &str) -> bool {
    w.addresses(Family::V4, V4).iter().any(|a| a == address)
}

/// The line of tikban's log that says guard refused a detection of `source` for `reason`.
fn refused_line(log: &str, source: &str, reason: &str) -> Option<String> {
    log.lines()
        .find(|l| {
            l.contains("guard detection not banned")
                && l.contains(&format!("source={source} "))
                && (l.contains(&format!("reason=\"{reason}\""))
                    || l.contains(&format!("reason={reason}")))
        })
        .map(str::to_owned)
}

/// Waits for guard's log line that it refused a detection of `source` for `reason`: proof the
/// failures were read, attributed to `source` and counted to a detection.
fn wait_refused(t: &mut Tikban, source: &str, reason: &str) {
    wait_for(
        &format!("guard refusing to ban {source} ({reason})"),
        SETUP,
        || guard_lines(&t.output()),
        || refused_line(&t.output(), source, reason).is_some(),
    );
}

/// The lines of tikban's log about guard and safety (the rest is mostly LAPI polls), for
/// failure messages.
fn guard_lines(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("LAPI stream polled"))
        .collect();
    tail(&lines.join("\n"))
}

/// The LAPI's alerts (`cscli alerts list -o json`), as `(scenario, source value)`.
fn lapi_alerts(w: &World) -> Vec<(String, String)> {
    let out = w.lapi.cscli(&["alerts", "list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!("cscli alerts list -o json is not JSON ({e}): {out}");
    });
    json.as_array()
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| {
                    let source = &a["source"];
                    let value = source["value"]
                        .as_str()
                        .or_else(|| source["ip"].as_str())
                        .unwrap_or_default();
                    (
                        a["scenario"].as_str().unwrap_or_default().to_owned(),
                        value.to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /v1/decisions/stream?startup=true` with another bouncer's key, over plain HTTP/1.0 (no
/// chunking, the connection closes at the end): the decisions every other bouncer would get.
fn stream_snapshot(w: &World, key: &str) -> serde_json::Value {
    let url = w.lapi.url();
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix('/'))
        .expect("a plain-HTTP LAPI url");
    let addr: SocketAddr = host.parse().expect("LAPI address");
    let mut s = TcpStream::connect(addr).expect("connect to LAPI");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v1/decisions/stream?startup=true HTTP/1.0\r\nHost: {host}\r\nX-Api-Key: {key}\r\n\
         User-Agent: tikban-guard-test\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{resp}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("stream body is not JSON ({e}): {body}"))
}

/// The `new` decisions of a stream response for `value`.
fn stream_decisions<'a>(stream: &'a serde_json::Value, value: &str) -> Vec<&'a serde_json::Value> {
    stream["new"]
        .as_array()
        .map(|d| d.iter().filter(|d| d["value"] == value).collect())
        .unwrap_or_default()
}

/// One real API login with a wrong password, from this host (127.0.0.1); returns once the
/// router refused it (the sim logs `login failure for user <user> from 127.0.0.1 via api`
/// before it answers).
fn failed_api_login(router: SocketAddr, user: &str) {
    let mut s = TcpStream::connect(router).expect("connect to the sim");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut wire = Vec::new();
    login::login_command(user, b"not-the-password")
        .unwrap()
        .encode(&mut wire);
    s.write_all(&wire).unwrap();
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = [0u8; 4096];
    loop {
        if let Some(sentence) = decoder.poll_sentence().unwrap() {
            let reply = Reply::parse(&sentence).unwrap();
            assert_ne!(reply.kind, ReplyKind::Done, "the login must be refused");
            return;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the sim closed the connection without an answer");
        decoder.feed(&buf[..n]);
    }
}

/// Failed logins the sim logged from `address`.
fn logged_failures_from(w: &World, address: &str) -> usize {
    let needle = format!(" from {address} via api");
    w.sim
        .logs()
        .iter()
        .filter(|l| {
            l.message.starts_with("login failure for user ") && l.message.ends_with(&needle)
        })
        .count()
}

// === 1. Ten failures in two seconds: on the drop list within two seconds ===

/// Ten ssh failures from one address in 2 s: the address is on the drop list within 2 s of the
/// last line (it crosses the threshold at the sixth), as a dynamic guard entry lasting
/// `GUARD_BAN_DURATION` (4 h). Three failures from another address in the same run are not a
/// ban.
///
/// Fails if the follower does not stream the log, if the detectors do not count failures or if
/// a detection does not become a ban on the router at once.
#[test]
fn ten_failed_logins_in_two_seconds_are_on_the_drop_list_within_two_seconds() {
    let w = World::start();
    let mut t = start(&w, &[]);

    for _ in 0..3 {
        w.sim.log(TOPICS, &failure("admin", "192.0.2.44", "winbox"));
    }
    // Ten lines 200 ms apart; the list is watched in between, so the ban is timed from the
    // line that decides it (the sixth, with the default capacity 5) as well as from the last.
    let mut logged = Vec::new();
    let mut seen = None;
    for i in 0..10 {
        w.sim.log(TOPICS, &failure("admin", "203.0.113.7", "ssh"));
        logged.push(Instant::now());
        let next = Instant::now() + Duration::from_millis(if i < 9 { 200 } else { 0 });
        while Instant::now() < next {
            if seen.is_none() && listed(&w, "203.0.113.7") {
                seen = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let last = logged[9];
    let deadline = last + SETUP;
    while seen.is_none() {
        if listed(&w, "203.0.113.7") {
            seen = Some(Instant::now());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "203.0.113.7 not banned within {SETUP:?}: {:?}\n{}",
            w.addresses(Family::V4, V4),
            tail(&t.output())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = seen.unwrap();
    let after_last = seen.saturating_duration_since(last);
    let after_sixth = seen.saturating_duration_since(logged[5]);
    eprintln!("banned {after_sixth:?} after the sixth failed login, {after_last:?} after the last");
    assert!(
        after_last < BAN_WITHIN,
        "203.0.113.7 reached the drop list {after_last:?} after the last failed login"
    );
    assert!(
        after_sixth < BAN_WITHIN,
        "203.0.113.7 reached the drop list {after_sixth:?} after the sixth failed login"
    );

    let entry = w
        .sim
        .address_list(Family::V4, V4)
        .into_iter()
        .find(|e| e.address == "203.0.113.7")
        .expect("the entry");
    assert!(entry.dynamic, "{entry:?} must be dynamic (RAM only)");
    assert_eq!(entry.comment.as_deref(), Some("tikban guard:login-bf"));
    let left = entry.timeout_remaining.expect("a timeout").as_secs();
    assert!((4 * 3600 - 60..=4 * 3600).contains(&left), "{entry:?}");

    // The metrics say what happened: one login-bf detection and ban.
    t.wait("guard's counters", SETUP, |t| {
        t.metric(&format!(
            "tikban_guard_bans_total{{scenario=\"{LOGIN_BF}\"}}"
        )) == 1.0
    });
    assert_eq!(adds(&w, "203.0.113.7"), 1, "one write for one ban");
    // After the ban (progress), the three slow failures are still no ban.
    assert_eq!(adds(&w, "192.0.2.44"), 0, "{:?}", w.adds_per_address());
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 2. Shared through LAPI ===

/// With machine credentials, guard's ban becomes a LAPI alert (`cscli alerts list`) whose
/// decision reaches another bouncer's stream; the decision coming back on tikban's own stream
/// does not write the router a second time.
///
/// Fails if the watcher does not log in or push, if the alert carries no decision, or if the
/// decision is not a 4 h ban of the attacker.
#[test]
fn a_guard_ban_is_an_alert_in_lapi_and_reaches_another_bouncer() {
    let w = World::start();
    let (id, password) = w.lapi.add_machine("tikban-router1");
    let other = w.lapi.add_bouncer("edge-firewall");
    let mut t = start(
        &w,
        &[
            ("CROWDSEC_MACHINE_ID", &id),
            ("CROWDSEC_MACHINE_PASSWORD", &password),
        ],
    );

    attack(
        &w,
        10,
        Duration::from_secs(2),
        "admin",
        "203.0.113.20",
        "ssh",
    );
    w.wait_until("the ban on the router", SETUP, |w| {
        listed(w, "203.0.113.20")
    });

    wait_for(
        "guard's alert in cscli alerts list",
        SETUP,
        || tail(&t.output()),
        || {
            lapi_alerts(&w)
                .iter()
                .any(|(s, v)| s == LOGIN_BF && v == "203.0.113.20")
        },
    );
    let mut decisions = Vec::new();
    wait_for(
        "the decision on another bouncer's stream",
        SETUP,
        || tail(&t.output()),
        || {
            let stream = stream_snapshot(&w, &other);
            decisions = stream_decisions(&stream, "203.0.113.20")
                .into_iter()
                .cloned()
                .collect();
            !decisions.is_empty()
        },
    );
    let d = &decisions[0];
    assert_eq!(d["type"], "ban", "{d}");
    assert_eq!(
        d["scope"].as_str().map(str::to_lowercase),
        Some("ip".into()),
        "{d}"
    );
    assert_eq!(d["scenario"], LOGIN_BF, "{d}");
    let duration = d["duration"].as_str().unwrap_or_default();
    assert!(
        duration.starts_with("3h59m") || duration.starts_with("4h"),
        "a 4 h ban: {d}"
    );
    t.wait_metric("tikban_guard_alerts_total{result=\"sent\"}", 1.0, SETUP);

    // tikban polls the same decision back (two more successful polls after it is on LAPI):
    // still one router entry, written once.
    let polls = t.metric(support::POLLS_OK);
    t.wait_metric(support::POLLS_OK, polls + 2.0, SETUP);
    assert_eq!(
        w.addresses(Family::V4, V4),
        ["203.0.113.20"],
        "{}",
        tail(&t.output())
    );
    assert_eq!(adds(&w, "203.0.113.20"), 1, "{:?}", w.adds_per_address());
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 3. Never itself ===

/// tikban's own failed logins never ban its own address. First tikban runs with a wrong router
/// password, so the router logs its failed logins (three sessions retrying: the sync, guard's
/// follower, the checklist); then it restarts with the right one and guard reads those failures
/// in the recent log. While it runs, more real failed API logins come from the same address.
/// Every protection but `PROTECT_SELF` is off, so only the own-address rule stands between
/// 127.0.0.1 and a ban. Proof of progress: guard logs that it refused a detection of 127.0.0.1
/// as `self`, and an attacker in the same run is banned; only then is the absence checked, on
/// the router (no `add` ever) and in LAPI (no alert).
///
/// Fails if guard's detections skip the safety rules, or if the container's address is not
/// protected before the recent log is read.
#[test]
fn tikbans_own_failed_logins_never_ban_its_own_address() {
    let w = World::start();
    let (id, password) = w.lapi.add_machine("tikban-self");
    let only_self = [
        ("PROTECT_LOOPBACK", "false"),
        ("PROTECT_ROUTER", "false"),
        ("PROTECT_LAPI", "false"),
        ("PROTECT_ADMIN_SESSIONS", "false"),
        ("CROWDSEC_MACHINE_ID", id.as_str()),
        ("CROWDSEC_MACHINE_PASSWORD", password.as_str()),
    ];
    // A wrong password: the router logs tikban's failed logins from its own address.
    let wrong = with_env(
        with_env(w.env(), &only_self),
        &[("MIKROTIK_PASS", "a-wrong-password"), ("METRICS_PORT", "0")],
    );
    let mut first = Tikban::start(&wrong);
    wait_for(
        "tikban's failed logins in the router log",
        SETUP,
        || tail(&first.output()),
        || logged_failures_from(&w, "127.0.0.1") >= 6,
    );
    assert!(first.terminate().success(), "{}", tail(&first.output()));
    eprintln!(
        "{} failed logins of tikban logged",
        logged_failures_from(&w, "127.0.0.1")
    );

    let mut t = start(&w, &only_self);
    // More failures from the same address, live: real failed API logins.
    for _ in 0..10 {
        failed_api_login(w.server.addr(), USER);
    }
    wait_refused(&mut t, "127.0.0.1", "self");

    // Progress: an attacker in the same run is banned and shared.
    attack(
        &w,
        10,
        Duration::from_secs(2),
        "root",
        "203.0.113.30",
        "ssh",
    );
    w.wait_until("the attacker's ban", SETUP, |w| listed(w, "203.0.113.30"));
    wait_for(
        "the attacker's alert in LAPI",
        SETUP,
        || tail(&t.output()),
        || {
            lapi_alerts(&w)
                .iter()
                .any(|(s, v)| s == LOGIN_BF && v == "203.0.113.30")
        },
    );

    assert_eq!(adds(&w, "127.0.0.1"), 0, "{:?}", w.adds_per_address());
    let alerts = lapi_alerts(&w);
    assert!(
        !alerts.iter().any(|(_, v)| v == "127.0.0.1"),
        "tikban's own address was shared with LAPI: {alerts:?}\n{}",
        tail(&t.output())
    );
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 4. Hostile user names ===

/// A user name is the attacker's text: `admin from 198.51.100.1 via ssh` makes the line
/// `login failure for user admin from 198.51.100.1 via ssh from 203.0.113.40 via ssh`. The
/// address is the router's, after the last ` from `: 203.0.113.40 is banned, 198.51.100.1
/// never. The same over real API logins: the sim logs the hostile name followed by the real
/// peer (127.0.0.1, protected), and the named 198.51.100.2 is never banned.
///
/// Fails if the parser takes the first ` from ` (as the CrowdSec hub's grok pattern does).
#[test]
fn a_hostile_user_name_never_bans_the_address_it_names() {
    let w = World::start();
    let mut t = start(&w, &[]);

    // Real API logins with a hostile name: the router writes the peer after the name.
    for _ in 0..10 {
        failed_api_login(w.server.addr(), "x from 198.51.100.2 via api");
    }
    wait_refused(&mut t, "127.0.0.1", "loopback");

    let hostile = [
        "admin from 198.51.100.1 via ssh",
        " from 198.51.100.1 via ssh",
        "x from 198.51.100.1 via winbox from 198.51.100.1 via ssh",
    ];
    for i in 0..10 {
        let user = hostile[i % hostile.len()];
        w.sim.log(TOPICS, &failure(user, "203.0.113.40", "ssh"));
        std::thread::sleep(Duration::from_millis(100));
    }
    w.wait_until("the real address banned", SETUP, |w| {
        listed(w, "203.0.113.40")
    });
    // The three names are three users to user enumeration too: still the same real address.
    let log = t.output();
    assert!(
        log.lines()
            .filter(|l| l.contains("guard ban:"))
            .all(|l| l.contains("source=203.0.113.40")),
        "{}",
        tail(&log)
    );
    for named in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(adds(&w, named), 0, "{named}: {:?}", w.adds_per_address());
        assert!(
            !log.contains(&format!("source={named} ")),
            "guard attributed a failure to {named}:\n{}",
            tail(&log)
        );
    }
    assert_eq!(w.addresses(Family::V4, V4), ["203.0.113.40"]);
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 5. Allowlist and admin sessions ===

/// Guard never bans an address on `ALLOWLIST`, nor the address of an admin logged in to the
/// router (`/user/active`): their failures are detected, refused (logged with the reason) and
/// never written or shared. Two admins: one logged in before tikban started (known at once),
/// one who logs in later, more than the freshness window (`SESSIONS_FRESH`, 10 s,
/// `docs/safety.md`) before the failures, so the write's fresh read of `/user/active` finds it
/// after the detection. An attacker in the same run is banned and shared (progress).
///
/// Fails if guard's detections bypass the allowlist or the admin-session protection, or if guard
/// shares with LAPI a ban the router refused (every other bouncer would lock the admin out).
#[test]
fn guard_never_bans_an_allowlisted_address_or_an_admins_address() {
    let w = World::start();
    let (id, password) = w.lapi.add_machine("tikban-allow");
    // An admin is logged in on winbox from 198.51.100.60.
    w.sim
        .add_active_session("admin", "198.51.100.60", "winbox")
        .unwrap();
    let mut t = start(
        &w,
        &[
            ("ALLOWLIST", "192.0.2.0/24 2001:db8:7::/48"),
            ("CROWDSEC_MACHINE_ID", &id),
            ("CROWDSEC_MACHINE_PASSWORD", &password),
        ],
    );

    attack(&w, 10, Duration::from_secs(1), "admin", "192.0.2.50", "ssh");
    wait_refused(&mut t, "192.0.2.50", "allowlist");

    // A colleague behind the admin's address mistypes on ssh.
    attack(
        &w,
        10,
        Duration::from_secs(1),
        "admin",
        "198.51.100.60",
        "ssh",
    );
    wait_refused(&mut t, "198.51.100.60", "admin-session");

    // A second admin logs in; the failures from that address come after the last read of
    // `/user/active` is older than the freshness window, so the write reads it again first.
    w.sim
        .add_active_session("admin2", "198.51.100.61", "winbox")
        .unwrap();
    std::thread::sleep(SESSIONS_FRESH + Duration::from_secs(1));
    attack(
        &w,
        10,
        Duration::from_secs(1),
        "admin2",
        "198.51.100.61",
        "ssh",
    );
    t.wait("the write path refusing 198.51.100.61", SETUP, |t| {
        t.output().lines().any(|l| {
            l.contains("ban not enforced")
                && l.contains("value=198.51.100.61 ")
                && l.contains("admin-session")
        })
    });
    // And guard, having waited for that read, does not share it.
    t.wait("guard not sharing 198.51.100.61", SETUP, |t| {
        t.output().lines().any(|l| {
            l.contains("guard alert not shared")
                && l.contains("source=198.51.100.61 ")
                && l.contains("admin-session")
        })
    });

    attack(
        &w,
        10,
        Duration::from_secs(1),
        "admin",
        "203.0.113.50",
        "ssh",
    );
    w.wait_until("the attacker's ban", SETUP, |w| listed(w, "203.0.113.50"));
    wait_for(
        "the attacker's alert in LAPI",
        SETUP,
        || tail(&t.output()),
        || {
            lapi_alerts(&w)
                .iter()
                .any(|(s, v)| s == LOGIN_BF && v == "203.0.113.50")
        },
    );

    for protected in ["192.0.2.50", "198.51.100.60", "198.51.100.61"] {
        assert_eq!(
            adds(&w, protected),
            0,
            "{protected}: {:?}",
            w.adds_per_address()
        );
    }
    let alerts = lapi_alerts(&w);
    assert!(
        !alerts
            .iter()
            .any(|(_, v)| ["192.0.2.50", "198.51.100.60", "198.51.100.61"].contains(&v.as_str())),
        "a protected address was shared with LAPI: {alerts:?}"
    );
    assert_eq!(w.addresses(Family::V4, V4), ["203.0.113.50"]);
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}
