//! A hostile or broken router (issue 17, items 2 to 5), end to end: the real LAPI 1.4.6,
//! `routeros-sim` with its hostile-router faults, and the `tikban` binary.
//!
//! Each test states why the daemon before the supervisor (commit 9915e36, `daemon.rs`) fails it.
//! The rules under test are the supervisor's (`crates/tikban/src/supervisor/mod.rs`, module docs):
//! one router job at a time, each with a deadline; a print's deadline grows a little per row;
//! three silent timeouts in a row drop the connection; the reconnect backoff starts over only
//! after useful work; the rows of one print are bounded.
//!
//! No test sleeps and then asserts: each waits for a positive signal with a deadline, and an
//! absence is only asserted after something proved that time passed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use routeros_sim::{Direction, Family, HostilePrint, Sim};
use support::{CONNECTS, Tikban, V4, World, retry_delays, tail, wait_for};

/// The comment of tikban's own entries (prefix `tikban`, origin `cscli`).
const OWNED: &str = "tikban cscli";
/// The bound of the first test: tikban's resident memory while it is fed a million rows.
const RSS_LIMIT_KIB: u64 = 32 * 1024;
const SETUP: Duration = Duration::from_secs(60);
/// Guard's log follower is a second API session with a backoff of its own
/// (`crates/tikban/src/daemon/guard.rs`); it is off here, so every login and every command the
/// sim counts is the supervisor's.
const NO_GUARD: (&str, &str) = ("GUARD_ENABLED", "false");

// === 1. An endless stream of owned rows (item 2) ===

/// A print of tikban's list answers with an endless stream of rows that carry tikban's comment,
/// each with a fresh `.id` and address, never `!done`. tikban must keep its memory bounded, give
/// up on the reconcile with a clear log line (the row limit of 2 × cache + 1,000,000 rows, or the
/// print's deadline), reconnect with a growing backoff, and keep running.
///
/// The old daemon fails it: its print had no row limit and no deadline (the client's timeout runs
/// between rows), so it never left the print; and its reconcile queued one removal per unwanted
/// owned row, so its memory grew with every row.
#[test]
fn an_endless_stream_of_owned_rows_is_cut_off_with_bounded_memory_and_backoff() {
    let w = World::start();
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        w.lapi.add_decision(ip, "4h", &[]);
    }
    let truth: Vec<String> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        .map(String::from)
        .into();
    let mut t = w.tikban_with(&[
        ("MIKROTIK_CMD_TIMEOUT", "2s"),
        ("LOG_LEVEL", "info"),
        NO_GUARD,
    ]);
    t.wait_healthy(SETUP);
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4) == truth
    });

    w.sim
        .faults()
        .hostile_print(Some(HostilePrint::endless(OWNED)));
    let fault_started = SystemTime::now();
    let window_start = Instant::now();
    // A reconnect starts a reconcile, whose print is now endless.
    w.sim.faults().kill_connections();

    let pid = t.pid();
    let mut peak_rss = 0;
    let mut samples = 0;
    let abandoned = |out: &str| {
        out.matches("abandoning the reconcile").count()
            + out
                .matches("list print got no answer by its deadline")
                .count()
    };
    // At least 20 s under the fault, a reconcile abandoned, and the session after it.
    let deadline = window_start + Duration::from_secs(180);
    loop {
        let (rss, _) = memory_kib(pid);
        peak_rss = peak_rss.max(rss);
        samples += 1;
        assert!(
            rss < RSS_LIMIT_KIB,
            "tikban uses {rss} KiB after {} rows:\n{}",
            w.sim.faults().hostile_rows_sent(),
            tail(&t.output())
        );
        assert!(t.is_running(), "tikban exited:\n{}", t.output());
        let out = t.output();
        if window_start.elapsed() >= Duration::from_secs(20)
            && abandoned(&out) >= 1
            && sessions_since(&w.sim, fault_started).len() >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no abandoned reconcile and reconnect within 180 s ({} rows sent):\n{}",
            w.sim.faults().hostile_rows_sent(),
            tail(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, hwm) = memory_kib(pid);
    let rows = w.sim.faults().hostile_rows_sent();
    let out = t.output();
    eprintln!(
        "{rows} invented rows in {:?}; peak RSS {peak_rss} KiB over {samples} samples, VmHWM {hwm} KiB",
        window_start.elapsed()
    );
    // The memory bound means something only if far more rows came than it could hold.
    assert!(
        rows >= 300_000,
        "only {rows} rows were streamed: the fault was not exercised"
    );
    assert!(hwm < RSS_LIMIT_KIB, "peak resident memory {hwm} KiB");
    let line = out
        .lines()
        .find(|l| l.contains("abandoning the reconcile") || l.contains("list print got no answer"))
        .unwrap_or_default();
    assert!(
        line.contains("WARN") || line.contains("ERROR"),
        "the cut is logged clearly: {line}"
    );

    // The reconnects back off: each delay tikban announces is longer than the one before, and
    // the one after the abandoned reconcile is past the first step (at most 1 s), so the login
    // in between did not reset the backoff; the router saw the logins no faster.
    let delays = retry_delays(&out);
    assert!(delays.len() >= 2, "reconnects announced: {delays:?}");
    for pair in delays.windows(2) {
        assert!(pair[1] > pair[0], "the backoff must grow: {delays:?}");
    }
    assert!(delays[1] >= Duration::from_millis(1400), "{delays:?}");
    let sessions = sessions_since(&w.sim, fault_started);
    for (pair, delay) in sessions.windows(2).zip(&delays[1..]) {
        let between = pair[1].0.duration_since(pair[0].0).unwrap_or_default();
        assert!(
            between >= *delay,
            "logins {between:?} apart, less than the announced {delay:?}: {sessions:?}"
        );
    }
    // The rows never completed a reconcile, so nothing was removed.
    assert_eq!(w.addresses(Family::V4, V4), truth);

    // The fault ends (the print in progress ends with its connection): a reconcile completes
    // and tikban is healthy. (While a print streams fast its deadline keeps growing, so /health
    // alone cannot tell a completed reconcile.)
    w.sim.faults().hostile_print(None);
    let faulty = w.last_connection();
    w.sim.faults().kill_connections();
    w.wait_for_reconcile_after(faulty, Duration::from_secs(90));
    t.wait("health after the fault", Duration::from_secs(30), |t| {
        let (code, health) = t.health();
        code == 200 && health["router"] == "up"
    });
    assert_eq!(w.addresses(Family::V4, V4), truth);
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 2. Rows trickling in (item 3) ===

/// A print answers one row every 4 s: within the 5 s command timeout, so the client never times
/// out between rows. The print's deadline (command timeout + 5 ms per row) passes after about
/// 5 s: `/health` must report the router down (status degraded) then, not claim it is up while
/// the reconcile hangs, and recover when the fault ends.
///
/// The old daemon fails it: it waited for the print as long as rows kept coming, and its health
/// said the router was up all along.
#[test]
fn rows_trickling_in_make_the_print_overdue_and_health_says_so() {
    let w = World::start();
    w.lapi.add_decision("192.0.2.20", "4h", &[]);
    w.lapi.add_decision("192.0.2.21", "4h", &[]);
    let truth = ["192.0.2.20", "192.0.2.21"];
    // The periodic reconcile comes soon and prints on the connection that is up.
    let mut t = w.tikban_with(&[("RECONCILIATION_INTERVAL", "3s"), NO_GUARD]);
    t.wait_healthy(SETUP);
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4) == truth
    });
    let connects = t.metric(CONNECTS);

    w.sim
        .faults()
        .hostile_print(Some(HostilePrint::trickle(OWNED, Duration::from_secs(4))));
    // The next print trickles; while it does, the router counts as up.
    wait_for(
        "a trickling print",
        Duration::from_secs(30),
        || tail(&t.output()),
        || w.sim.faults().hostile_rows_sent() >= 1,
    );
    assert_eq!(
        t.metric(CONNECTS),
        connects,
        "the print runs on the connection that was up"
    );
    t.wait(
        "/health to report the router down",
        Duration::from_secs(30),
        |t| {
            let (code, health) = t.health();
            code == 503 && health["router"] == "down" && health["status"] == "degraded"
        },
    );
    let out = t.output();
    assert!(
        out.contains("list print got no answer by its deadline"),
        "the overdue print is named in the log:\n{}",
        tail(&out)
    );

    // The fault ends: a reconnect, a reconcile that completes (the print streaming when the
    // fault ended runs on to its deadline), health back to ok.
    w.sim.faults().hostile_print(None);
    let faulty = w.last_connection();
    w.wait_for_reconcile_after(faulty, Duration::from_secs(90));
    t.wait("/health to recover", Duration::from_secs(30), |t| {
        let (code, health) = t.health();
        code == 200 && health["router"] == "up" && health["status"] == "ok"
    });
    assert!(t.metric(CONNECTS) > connects, "the connection was rebuilt");
    assert_eq!(w.addresses(Family::V4, V4), truth, "no ban was lost");
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 3. A silently desynchronised connection (item 4) ===

/// After bytes that open a word and never finish it, the connection answers nothing: every later
/// command times out. tikban must give up on the connection after a few timeouts in a row (three
/// silent commands, or the write batch's deadline), say so, reconnect, reconcile and converge to
/// LAPI's truth, with `/health` degraded meanwhile.
///
/// The old daemon fails it: a timed-out command counted as refused ("retrying on the next tick")
/// and the connection was kept, so every later command timed out too and the router never
/// converged.
#[test]
fn a_desynchronised_connection_is_dropped_after_a_few_silent_timeouts() {
    let w = World::start();
    w.lapi.add_decision("192.0.2.30", "4h", &[]);
    let mut t = w.tikban_with(&[("MIKROTIK_CMD_TIMEOUT", "2s"), NO_GUARD]);
    t.wait_healthy(SETUP);
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.30"]
    });
    let connects = t.metric(CONNECTS);
    // Connections up to this one are open or closed when the fault hits; later ones are not
    // affected.
    let open_before = w.last_connection();
    let health = HealthLog::start(&t);

    w.sim.faults().desync();
    wait_for(
        "the desync bytes",
        Duration::from_secs(10),
        String::new,
        || w.sim.faults().desynced_connections() >= 1,
    );
    let desynced_at = w.sim.transcript().len();
    // Three new bans: three adds on the silent connection.
    w.lapi.import(
        r#"[{"duration":"4h","origin":"cscli","reason":"desync","scope":"Ip","type":"ban","value":"192.0.2.31"},
            {"duration":"4h","origin":"cscli","reason":"desync","scope":"Ip","type":"ban","value":"192.0.2.32"},
            {"duration":"4h","origin":"cscli","reason":"desync","scope":"Ip","type":"ban","value":"192.0.2.33"}]"#,
        &[],
    );
    let truth = ["192.0.2.30", "192.0.2.31", "192.0.2.32", "192.0.2.33"];
    t.wait_metric(CONNECTS, connects + 1.0, Duration::from_secs(30));
    w.wait_until(
        "convergence on the new connection",
        Duration::from_secs(30),
        |w| w.addresses(Family::V4, V4) == truth,
    );
    let seen = health.stop();

    let out = t.output();
    assert!(
        out.contains("desynchronised") || out.contains("write batch got no answer by its deadline"),
        "the silent connection is named in the log:\n{}",
        tail(&out)
    );
    // Only a few commands went unanswered before tikban gave up on the connection: the commands
    // the silent connection received after the fault (the new bans' adds among them).
    let unanswered: Vec<String> = w.sim.transcript()[desynced_at..]
        .iter()
        .filter(|e| e.conn <= open_before && e.direction == Direction::In)
        .filter_map(|e| e.words.first())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .filter(|p| p != "/cancel")
        .collect();
    assert!(
        !unanswered.is_empty() && unanswered.len() <= 6,
        "commands sent on the silent connection: {unanswered:?}"
    );
    assert!(
        seen.iter()
            .any(|(code, router)| *code == 503 && router == "down"),
        "/health was never degraded while the connection was rebuilt: {seen:?}"
    );
    t.wait("healthy again", Duration::from_secs(30), |t| {
        t.health().0 == 200
    });
    assert!(t.terminate().success(), "{}", tail(&t.output()));
}

// === 4. A session killed on every print (item 5) ===

/// The router kills the session on every `print`. tikban logs in, prints, loses the session, and
/// must wait longer each time: a login is not useful work, so it must not reset the backoff. Over
/// about 30 s: five logins with growing gaps, where the old code made about four a second.
///
/// The old daemon fails it: it reset the backoff at every login and reconnected at once after a
/// loss, so each killed session was followed by a new login within a fraction of a second, each
/// one a line in the router's 1000-line log.
#[test]
fn a_session_killed_on_every_print_gets_a_growing_backoff_not_a_storm() {
    let w = World::start();
    let mut t = w.tikban_with(&[("LOG_LEVEL", "info"), NO_GUARD]);
    t.wait_healthy(SETUP);

    w.sim.faults().kill_on_print(true);
    let fault_started = SystemTime::now();
    // The reconnect prints (a reconcile), and the print kills the session.
    w.sim.faults().kill_connections();
    wait_for(
        "five logins under the fault",
        Duration::from_secs(90),
        || tail(&t.output()),
        || sessions_since(&w.sim, fault_started).len() >= 5,
    );
    assert!(t.is_running(), "tikban exited:\n{}", t.output());
    let sessions = sessions_since(&w.sim, fault_started);
    let kills = w.sim.faults().print_kills();
    assert!(kills >= 4, "each session died at a print: {kills} kills");

    // Gaps between a killed session and the next login: the reconnect delays.
    let mut gaps = Vec::new();
    for pair in sessions.windows(2) {
        let ended = pair[0].1.expect("a killed session logs its logout");
        gaps.push(pair[1].0.duration_since(ended).unwrap_or_default());
    }
    eprintln!("gaps between a killed session and the next login: {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(500), "{gaps:?}");
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0], "the backoff must grow: {gaps:?}");
    }
    // Five logins took at least 15 s (the backoff's shortest delays add up to 21 s); the old
    // daemon made about four a second.
    let span = sessions[4]
        .0
        .duration_since(sessions[0].0)
        .unwrap_or_default();
    assert!(span >= Duration::from_secs(15), "five logins in {span:?}");
    assert!(t.is_running());
    let out = t.output();
    assert!(!out.contains("panicked"), "{}", tail(&out));
    assert!(t.terminate().success(), "{}", tail(&out));
}

// === Helpers ===

/// `VmRSS` and `VmHWM` of a process, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status:\n{status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// tikban's sessions on the router since `since`, from the router's memory log: (login time,
/// logout time if it ended).
fn sessions_since(sim: &Sim, since: SystemTime) -> Vec<(SystemTime, Option<SystemTime>)> {
    let mut sessions: Vec<(SystemTime, Option<SystemTime>)> = Vec::new();
    for entry in sim.logs() {
        if entry.time < since {
            continue;
        }
        if entry.message.starts_with("user tikban logged in ") {
            sessions.push((entry.time, None));
        } else if entry.message.starts_with("user tikban logged out ")
            && let Some(open) = sessions.last_mut().filter(|s| s.1.is_none())
        {
            open.1 = Some(entry.time);
        }
    }
    sessions
}

/// Samples `/health` every 50 ms in a background thread: (status code, `router` field).
struct HealthLog {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(u16, String)>>,
}

impl HealthLog {
    fn start(t: &Tikban) -> HealthLog {
        let port = t.metrics_port;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen: Vec<(u16, String)> = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let (code, body) = support::http_get(port, "/health");
                let router = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|h| h["router"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if seen.last() != Some(&(code, router.clone())) {
                    seen.push((code, router));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        HealthLog { stop, handle }
    }

    /// The distinct consecutive states seen.
    fn stop(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("health sampler")
    }
}
