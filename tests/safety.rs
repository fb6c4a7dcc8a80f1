//! End-to-end acceptance of issue 14, "never lock the owner out": the real CrowdSec LAPI 1.4.6,
//! `routeros-sim`, and the `tikban` binary.
//!
//! - ranges wider than `MAX_RANGE_V4`/`MAX_RANGE_V6` (`0.0.0.0/0`, `::/0`) never reach the
//!   router;
//! - a ban on an `ALLOWLIST`ed address or network never reaches the router;
//! - a ban on the source address of an active admin session (`/user/active`) never reaches the
//!   router, and is enforced once the session ends and nothing else protects the address;
//! - with `MAX_ENTRIES=1000` and 3,000 decisions of mixed origins, exactly the 1,000 of highest
//!   priority are on the router, and a new local ban displaces a CAPI one without flapping.
//!
//! "Never reaches the router" is checked on the sim's transcript (no `add` was ever sent), not
//! only on its final state, and only after a positive signal that tikban judged the decision
//! (the skip counter moved, a ban sent alongside is on the router). Each test fails if the
//! feature breaks; missing CrowdSec binaries fail the test (run `scripts/install-crowdsec.sh`).
//!
//! How the mixed origins are made: `cscli decisions import` in 1.4.6 always stores origin
//! `cscli-import`, whatever the file says (`docs/reference/crowdsec-lapi.md` §9). The other
//! origins go in the way CAPI pulls and other watchers put them in: `POST /v1/alerts` as a
//! registered machine, with decisions that carry their origin (`CAPI`, `lists` with the list
//! name as scenario, `console`, `crowdsec`, `cscli`). LAPI 1.4.6 stores such decisions as given,
//! and the test checks the origins tikban saw (`tikban_decisions{origin}`) before it judges the
//! budget.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use crowdsec_lapi::{Alert, AlertDecision, BanAlert, Value, Watcher, WatcherConfig};
use routeros_sim::{Direction, Family};
use support::{Tikban, V4, V6, World};

const POLL: Duration = Duration::from_secs(20);
/// tikban reads `/user/active` every minute (`supervisor::HOUSEKEEPING`), and before writing a
/// new ban when its last read is older than 10 s.
const SESSION_REFRESH: Duration = Duration::from_secs(90);

fn skipped(reason: &str) -> String {
    format!("tikban_decisions_skipped_total{{reason=\"{reason}\"}}")
}

/// The `/health` skip count for `reason` (0 when absent).
fn health_skips(t: &Tikban, reason: &str) -> u64 {
    t.health().1["skipped"]["counts"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Every address the sim was asked to `add` since the transcript was last cleared, in
/// canonical form (`203.0.113.7`, `2001:db8::/32`). Unlike [`World::adds_per_address`] this keeps
/// the prefix of an IPv6 `/32` network.
fn ever_added(w: &World) -> BTreeSet<String> {
    w.sim
        .transcript()
        .iter()
        .filter(|e| {
            e.direction == Direction::In && e.words.first().is_some_and(|p| p.ends_with(b"/add"))
        })
        .filter_map(|e| e.words.iter().find_map(|w| w.strip_prefix(b"=address=")))
        .map(|a| {
            let a = String::from_utf8_lossy(a);
            Value::parse(&a).map_or_else(|_| a.into_owned(), |v| v.to_string())
        })
        .collect()
}

/// `/user/active/print` commands the sim received: tikban's reads of the admin sessions.
fn session_reads(w: &World) -> usize {
    w.sim
        .transcript()
        .iter()
        .filter(|e| {
            e.direction == Direction::In
                && e.words
                    .first()
                    .is_some_and(|p| p.as_slice() == b"/user/active/print")
        })
        .count()
}

/// A full reconcile on a new connection (the sim drops every connection): the reconcile path
/// obeys the same rules as the change path.
fn force_reconcile(w: &World) {
    let before = w.last_connection();
    w.sim.faults().kill_connections();
    w.wait_for_reconcile_after(before, POLL);
}

#[test]
fn ranges_wider_than_the_limits_never_reach_the_router() {
    let w = World::start();
    let mut t = w.tikban();
    t.wait_healthy(POLL);

    w.lapi.add_decision("0.0.0.0/0", "4h", &[]);
    w.lapi.add_decision("::/0", "4h", &[]);
    w.lapi.add_decision("10.0.0.0/7", "4h", &[]);
    // At the limits (/8 and /32 by default): enforced. These are the positive signal too.
    w.lapi.add_decision("10.0.0.0/8", "4h", &[]);
    w.lapi.add_decision("2001:db8::/32", "4h", &[]);

    t.wait("both range limits counted", POLL, |t| {
        t.metric(&skipped("range-v4")) == 2.0 && t.metric(&skipped("range-v6")) == 1.0
    });
    w.wait_until("the bans at the limits on the router", POLL, |w| {
        w.addresses(Family::V4, V4) == ["10.0.0.0/8"]
            && w.addresses(Family::V6, V6) == ["2001:db8::/32"]
    });
    let added = ever_added(&w);
    assert_eq!(
        added,
        BTreeSet::from(["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()]),
        "only the bans within the limits were ever written"
    );
    let (_, health) = t.health();
    assert_eq!(health["skipped"]["counts"]["range-v4"], 2, "{health}");
    assert_eq!(health["skipped"]["counts"]["range-v6"], 1, "{health}");

    // A full reconcile (new connection) writes the same, and nothing wider.
    w.sim.clear_transcript();
    force_reconcile(&w);
    assert!(w.writes().is_empty(), "reconcile wrote {:?}", w.writes());
    assert_eq!(w.addresses(Family::V4, V4), ["10.0.0.0/8"]);
    assert_eq!(w.addresses(Family::V6, V6), ["2001:db8::/32"]);
    let out = t.output();
    assert!(
        out.contains("ban not enforced") && out.contains("0.0.0.0/0") && out.contains("range-v4"),
        "the skip is logged:\n{}",
        support::tail(&out)
    );
    assert!(t.is_running());
}

#[test]
fn allowlisted_addresses_and_networks_never_reach_the_router() {
    let w = World::start();
    let mut t = w.tikban_with(&[(
        "ALLOWLIST",
        "203.0.113.0/28, 2001:db8:a11::/48 198.51.100.7",
    )]);
    t.wait_healthy(POLL);

    // Inside an allowlisted network, v4 and v6; a range covering an allowlisted network; a range
    // covering an allowlisted host.
    let protected = [
        "203.0.113.5",
        "2001:db8:a11::5",
        "203.0.113.0/24",
        "198.51.100.0/24",
    ];
    for v in protected {
        w.lapi.add_decision(v, "4h", &[]);
    }
    // Next to them, outside: enforced.
    w.lapi.add_decision("203.0.113.77", "4h", &[]);
    w.lapi.add_decision("2001:db8:b::1", "4h", &[]);

    t.wait("four allowlist skips", POLL, |t| {
        t.metric(&skipped("allowlist")) == 4.0
    });
    w.wait_until("the bans outside the allowlist", POLL, |w| {
        w.addresses(Family::V4, V4) == ["203.0.113.77"]
            && w.addresses(Family::V6, V6) == ["2001:db8:b::1/128"]
    });
    assert_eq!(
        ever_added(&w),
        BTreeSet::from(["203.0.113.77".to_owned(), "2001:db8:b::1".to_owned()]),
        "no allowlisted ban was ever written"
    );

    // /health shows the count and the values.
    let (code, health) = t.health();
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["skipped"]["counts"]["allowlist"], 4, "{health}");
    let recent: Vec<&str> = health["skipped"]["recent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    for v in [
        "203.0.113.5",
        "2001:db8:a11::5",
        "203.0.113.0/24",
        "198.51.100.0/24",
    ] {
        assert!(
            recent.contains(&format!("{v}: allowlist").as_str()),
            "{v} in /health recent skips: {health}"
        );
    }

    // The reconcile path obeys the allowlist too.
    w.sim.clear_transcript();
    force_reconcile(&w);
    assert!(w.writes().is_empty(), "reconcile wrote {:?}", w.writes());
    assert_eq!(w.addresses(Family::V4, V4), ["203.0.113.77"]);
    // Logged once per decision, not again on the reconcile.
    let out = t.output();
    let logged = out
        .lines()
        .filter(|l| l.contains("ban not enforced") && l.contains("203.0.113.5"))
        .count();
    assert_eq!(logged, 1, "logged once:\n{}", support::tail(&out));
    assert_eq!(t.metric(&skipped("allowlist")), 4.0, "counted once each");
}

#[test]
fn admin_session_addresses_are_banned_only_once_the_session_ends() {
    let w = World::start();
    // The owner is logged in over winbox from 203.0.113.50; a colleague over ssh from
    // 198.51.100.23; a third session comes from 203.0.113.60, which is also allowlisted.
    let owner = w
        .sim
        .add_active_session("admin", "203.0.113.50", "winbox")
        .unwrap();
    let colleague = w
        .sim
        .add_active_session("ops", "198.51.100.23", "ssh")
        .unwrap();
    let listed = w
        .sim
        .add_active_session("noc", "203.0.113.60", "web")
        .unwrap();
    let mut t = w.tikban_with(&[("ALLOWLIST", "203.0.113.60")]);
    t.wait_healthy(POLL);

    // A list update bans the owner's address, a range covering the colleague's, and the
    // allowlisted one; and one unrelated address (the positive signal).
    w.lapi.add_decision("203.0.113.50", "4h", &[]);
    w.lapi.add_decision("198.51.100.0/24", "4h", &[]);
    w.lapi.add_decision("203.0.113.60", "4h", &[]);
    w.lapi.add_decision("203.0.113.99", "4h", &[]);
    t.wait("the session and allowlist skips", POLL, |t| {
        t.metric(&skipped("admin-session")) == 2.0 && t.metric(&skipped("allowlist")) == 1.0
    });
    w.wait_until("the unrelated ban", POLL, |w| {
        w.addresses(Family::V4, V4) == ["203.0.113.99"]
    });
    assert_eq!(
        ever_added(&w),
        BTreeSet::from(["203.0.113.99".to_owned()]),
        "nothing an admin session or the allowlist protects was written"
    );
    assert_eq!(health_skips(&t, "admin-session"), 2);

    // Everyone logs out. The next read of /user/active lets the bans through, except the
    // allowlisted one.
    let reads = session_reads(&w);
    for id in [&owner, &colleague, &listed] {
        assert!(w.sim.remove_active_session(id), "session {id}");
    }
    w.wait_until("the bans once their sessions ended", SESSION_REFRESH, |w| {
        w.addresses(Family::V4, V4) == ["198.51.100.0/24", "203.0.113.50", "203.0.113.99"]
    });
    assert!(
        session_reads(&w) > reads,
        "a read of /user/active let them in"
    );
    let adds = w.adds_per_address();
    assert!(
        !adds.contains_key("203.0.113.60"),
        "the allowlisted address stays protected after its session ended: {adds:?}"
    );
    assert!(adds.values().all(|n| *n == 1), "each added once: {adds:?}");
    assert!(t.is_running());
}

#[test]
fn a_session_that_begins_between_reads_is_protected_before_the_ban_is_written() {
    let w = World::start();
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    // tikban reads /user/active again before writing a new ban when its last read is older
    // than 10 s. Wait for that: 11 s after the last read seen.
    let mut reads = session_reads(&w);
    assert!(reads > 0, "tikban read /user/active before its first sync");
    let mut last_read = Instant::now();
    while last_read.elapsed() < Duration::from_secs(11) {
        std::thread::sleep(Duration::from_millis(50));
        let now = session_reads(&w);
        if now != reads {
            reads = now;
            last_read = Instant::now();
        }
    }
    // The owner logs in after tikban's last read; a list update bans the owner's address.
    w.sim
        .add_active_session("admin", "203.0.113.70", "winbox")
        .unwrap();
    w.lapi.add_decision("203.0.113.70", "4h", &[]);
    w.lapi.add_decision("203.0.113.71", "4h", &[]);
    t.wait("the session skip", POLL, |t| {
        t.metric(&skipped("admin-session")) == 1.0
    });
    w.wait_until("the other ban", POLL, |w| {
        w.addresses(Family::V4, V4) == ["203.0.113.71"]
    });
    let adds = w.adds_per_address();
    assert!(
        !adds.contains_key("203.0.113.70"),
        "the owner's address was written to the router, even briefly: {adds:?}\n{}",
        support::tail(&t.output())
    );
}

// === The entry budget ===

/// The `i`-th address of `group`, in 198.18.0.0/15 (benchmarking, never on a test host).
fn addr(group: u32, i: u32) -> String {
    Ipv4Addr::from(0xC612_0000 + group * 0x1000 + i + 1).to_string()
}

const IMPORT: u32 = 0;
const CROWDSEC: u32 = 1;
const CSCLI: u32 = 2;
const CONSOLE: u32 = 3;
const LISTS: u32 = 4;
const CAPI: u32 = 5;
/// Decisions per group; CAPI has the rest of 3,000.
const LOCAL_EACH: u32 = 100;
const CONSOLE_N: u32 = 300;
const LISTS_N: u32 = 300;
const CAPI_N: u32 = 2100;
const BUDGET: usize = 1000;

/// One alert carrying `decisions` (value, duration in seconds) of `origin` and `scenario`, as a
/// CAPI pull or another watcher stores them.
fn alert_of(origin: &str, scenario: &str, decisions: &[(String, u64)]) -> Alert {
    let now = SystemTime::now();
    let mut a = Alert::ban(&BanAlert {
        scenario,
        scenario_version: "0.1",
        source: Value::parse(&decisions[0].0).expect("value"),
        duration: Duration::from_secs(decisions[0].1),
        first_seen: now,
        last_seen: now,
        events_count: 1,
        capacity: 0,
        leakspeed: Duration::from_secs(1),
        message: Some("tikban budget test"),
    });
    a.decisions = decisions
        .iter()
        .map(|(value, secs)| AlertDecision {
            duration: format!("{secs}s"),
            origin: origin.into(),
            scenario: scenario.into(),
            scope: "Ip".into(),
            kind: "ban".into(),
            value: value.clone(),
        })
        .collect();
    a
}

fn push_alerts(w: &World, alerts: &[Alert]) {
    let (id, password) = w.lapi.add_machine("feeder");
    let mut watcher = Watcher::new(WatcherConfig::new(w.lapi.url(), id, password)).unwrap();
    w.rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let ids = watcher.push_alerts(alerts, deadline).await.expect("push");
        assert_eq!(ids.len(), alerts.len(), "{ids:?}");
    });
}

#[test]
fn the_budget_keeps_the_highest_priority_and_a_new_local_ban_displaces_a_capi_one() {
    let w = World::start();
    let group = |g: u32, n: u32, secs: &dyn Fn(u32) -> u64| -> Vec<(String, u64)> {
        (0..n).map(|i| (addr(g, i), secs(i))).collect()
    };
    // Local bans are the shortest and CAPI's the longest: the class wins over the end. Within
    // CAPI, ends 10 s apart: the 100 that end last fit.
    let json: Vec<String> = (0..LOCAL_EACH)
        .map(|i| {
            format!(
                r#"{{"duration":"30m","origin":"CAPI","reason":"budget test","scope":"Ip","type":"ban","value":"{}"}}"#,
                addr(IMPORT, i)
            )
        })
        .collect();
    w.lapi.import(&format!("[{}]", json.join(",")), &[]);
    push_alerts(
        &w,
        &[
            alert_of(
                "crowdsec",
                "crowdsecurity/ssh-bf",
                &group(CROWDSEC, LOCAL_EACH, &|_| 2400),
            ),
            alert_of(
                "cscli",
                "manual 'ban' from 'owner'",
                &group(CSCLI, LOCAL_EACH, &|_| 3000),
            ),
            alert_of(
                "console",
                "manual 'ban' from 'console'",
                &group(CONSOLE, CONSOLE_N, &|_| 3600),
            ),
            alert_of("lists", "firehol_level1", &group(LISTS, LISTS_N, &|_| 7200)),
            alert_of(
                "CAPI",
                "crowdsecurity/http-probing",
                &group(CAPI, CAPI_N, &|i| 86_400 + 10 * u64::from(i)),
            ),
        ],
    );

    let mut t = w.tikban_with(&[("MAX_ENTRIES", "1000")]);
    t.wait_healthy(POLL);
    // All 3,000 known, with the origins intended (import stores `cscli-import` whatever the
    // file says).
    let origins = [
        ("cscli-import", LOCAL_EACH),
        ("crowdsec", LOCAL_EACH),
        ("cscli", LOCAL_EACH),
        ("console", CONSOLE_N),
        ("lists:firehol_level1", LISTS_N),
        ("CAPI", CAPI_N),
    ];
    t.wait("the decisions by origin", POLL, |t| {
        let m = t.get("/metrics").1;
        origins.iter().all(|(o, n)| {
            support::metric(
                &m,
                &format!("tikban_decisions{{origin=\"{o}\",ip_type=\"ipv4\"}}"),
            ) == f64::from(*n)
        })
    });
    t.wait("2,000 values over budget", POLL, |t| {
        t.metric("tikban_decisions_over_budget") == 2000.0
    });
    // The top 1,000: every local, console and list ban, and the 100 CAPI bans that end last.
    let mut top: BTreeSet<String> = BTreeSet::new();
    for (g, n) in [
        (IMPORT, LOCAL_EACH),
        (CROWDSEC, LOCAL_EACH),
        (CSCLI, LOCAL_EACH),
        (CONSOLE, CONSOLE_N),
        (LISTS, LISTS_N),
    ] {
        top.extend((0..n).map(|i| addr(g, i)));
    }
    top.extend((CAPI_N - 100..CAPI_N).map(|i| addr(CAPI, i)));
    assert_eq!(top.len(), BUDGET);
    w.wait_until("the top 1,000 on the router", POLL, |w| {
        w.addresses(Family::V4, V4).len() == BUDGET
    });
    let on_router: BTreeSet<String> = w.addresses(Family::V4, V4).into_iter().collect();
    assert_eq!(
        on_router.symmetric_difference(&top).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the router holds exactly the top 1,000"
    );
    assert_eq!(t.metric("tikban_entry_budget"), 1000.0);
    assert!(t.metric(&skipped("budget")) >= 2000.0);
    let (_, health) = t.health();
    assert_eq!(health["skipped"]["budget"]["limit"], 1000, "{health}");
    assert_eq!(health["skipped"]["budget"]["over_budget"], 2000, "{health}");
    assert!(
        health["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("entry budget")))),
        "/health warns while values are left out: {health}"
    );

    // A new local ban, the shortest of all: it displaces the CAPI ban that ends first among
    // those on the router, and only that one.
    let removes_before = w.writes().iter().filter(|p| p.ends_with("/remove")).count();
    w.lapi.add_decision("198.19.0.1", "5m", &[]);
    let displaced = addr(CAPI, CAPI_N - 100);
    w.wait_until("the local ban in, a CAPI ban out", POLL, |w| {
        let a = w.addresses(Family::V4, V4);
        a.contains(&"198.19.0.1".to_owned()) && !a.contains(&displaced)
    });
    let mut want = top.clone();
    want.remove(&displaced);
    want.insert("198.19.0.1".to_owned());
    let on_router: BTreeSet<String> = w.addresses(Family::V4, V4).into_iter().collect();
    assert_eq!(on_router.len(), BUDGET, "still 1,000 on the router");
    assert_eq!(on_router, want);
    t.wait("2,001 values over budget", POLL, |t| {
        t.metric("tikban_decisions_over_budget") == 2001.0
    });

    // No flapping: every value written at most once, nothing outside the top ever written, one
    // removal in all.
    let adds: BTreeMap<String, usize> = w.adds_per_address();
    let flapped: Vec<(&String, &usize)> = adds.iter().filter(|(_, n)| **n > 1).collect();
    assert!(flapped.is_empty(), "written more than once: {flapped:?}");
    let mut written: BTreeSet<String> = adds.into_keys().collect();
    written.remove("198.19.0.1");
    assert_eq!(
        written, top,
        "only the top 1,000 and the new ban were ever written"
    );
    let removes = w.writes().iter().filter(|p| p.ends_with("/remove")).count();
    assert_eq!(removes_before, 0, "nothing removed during the cold sync");
    assert_eq!(removes, 1, "exactly one removal: the displaced CAPI ban");
    assert!(t.is_running());
}
