//! End-to-end: the real CrowdSec LAPI 1.4.6, `routeros-sim`, and the `tikban` binary.
//!
//! Each test starts its own LAPI (one bouncer key per tikban) and its own sim, and asserts on the
//! sim's state and transcript. Nothing here is skipped: missing binaries fail the test (run
//! `scripts/install-crowdsec.sh`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use routeros_sim::{Direction, Family, NewEntry, SimConfig};
use support::{CONNECTS, PASSWORD, POLLS_ERROR, POLLS_OK, Proxy, Tikban, USER, V4, V6, World};

const POLL: Duration = Duration::from_secs(15);

#[test]
fn bans_and_unbans_ipv4_ipv6_and_ranges_within_a_poll() {
    let w = World::start();
    let mut t = w.tikban();
    t.wait_healthy(POLL);

    w.lapi.add_decision("192.0.2.10", "4h", &[]);
    w.lapi.add_decision("2001:DB8::ABCD", "4h", &[]);
    w.lapi.add_decision("198.51.100.77/24", "4h", &[]);
    w.wait_until("three bans on the router", POLL, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.10", "198.51.100.0/24"]
            && w.addresses(Family::V6, V6) == ["2001:db8::abcd/128"]
    });
    for e in w
        .sim
        .all_entries(Family::V4)
        .into_iter()
        .chain(w.sim.all_entries(Family::V6))
    {
        assert!(e.dynamic, "{e:?} must be dynamic (RAM only)");
        assert_eq!(e.comment.as_deref(), Some("tikban cscli"), "{e:?}");
        let left = e.timeout_remaining.expect("a timeout").as_secs();
        assert!((4 * 3600 - 60..=4 * 3600).contains(&left), "{e:?}");
    }

    w.lapi.delete_decision(&["--ip", "192.0.2.10"]);
    w.wait_until("the unban", POLL, |w| {
        w.addresses(Family::V4, V4) == ["198.51.100.0/24"]
    });
    assert_eq!(w.addresses(Family::V6, V6), ["2001:db8::abcd/128"]);

    // Exactly one router command per change: 3 adds, 1 remove.
    let writes = w.writes();
    assert_eq!(
        writes.iter().filter(|p| p.ends_with("/add")).count(),
        3,
        "{writes:?}"
    );
    assert_eq!(
        writes.iter().filter(|p| p.ends_with("/remove")).count(),
        1,
        "{writes:?}"
    );
    assert_eq!(w.sim.persistent_writes(), 0, "no flash writes");

    // /metrics and /health.
    let (code, body) = t.get("/health");
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["lapi"], "up");
    assert_eq!(health["router"], "up");
    assert_eq!(health["synced"], true);
    // Gauges follow within a second (they walk the cache, so at most once a second).
    let lines = [
        "tikban_connected{peer=\"router\"} 1",
        "tikban_connected{peer=\"lapi\"} 1",
        "tikban_router_entries{ip_type=\"ipv4\"} 1",
        "tikban_router_entries{ip_type=\"ipv6\"} 1",
        "tikban_decisions{origin=\"cscli\",ip_type=\"ipv4\"} 1",
        "tikban_router_commands_total{kind=\"add\",result=\"ok\"} 3",
        "tikban_router_commands_total{kind=\"remove\",result=\"ok\"} 1",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let (code, metrics) = t.get("/metrics");
        assert_eq!(code, 200);
        let missing: Vec<&str> = lines
            .iter()
            .filter(|l| !metrics.contains(*l))
            .copied()
            .collect();
        if missing.is_empty() {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing {missing:?} in\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.contains("tikban_lapi_polls_total{result=\"ok\"}"));

    assert!(t.terminate().success(), "SIGTERM exits 0:\n{}", t.output());
    // Entries stay after shutdown and expire by their timeouts.
    assert_eq!(w.addresses(Family::V4, V4), ["198.51.100.0/24"]);
    let out = t.output();
    assert!(
        !out.contains(PASSWORD) && !out.contains(&w.key),
        "secret in logs:\n{out}"
    );
}

#[test]
fn restart_with_unchanged_state_writes_nothing() {
    let w = World::start();
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    w.lapi.add_decision("192.0.2.20", "4h", &[]);
    w.lapi.add_decision("2001:db8::20", "4h", &[]);
    w.wait_until("bans", POLL, |w| {
        w.sim.all_entries(Family::V4).len() == 1 && w.sim.all_entries(Family::V6).len() == 1
    });
    assert!(t.terminate().success());

    w.sim.clear_transcript();
    let mut t = w.tikban();
    // Healthy means the first reconcile, writes included, is over.
    t.wait_healthy(POLL);
    // Proof of progress before the absence check: three more polls applied after it, each of
    // which could have planned a write.
    let polls = t.metric(POLLS_OK);
    t.wait_metric(POLLS_OK, polls + 3.0, POLL);
    assert!(w.writes().is_empty(), "restart wrote: {:?}", w.writes());
    // One reconcile, one print per list. The start-up checklist reads both lists too, on a
    // session of its own: no session may print a list twice, and the daemon reconciled once.
    let mut prints: BTreeMap<(u64, Vec<u8>), usize> = BTreeMap::new();
    for e in w.sim.transcript() {
        let Some(path) = e.words.first() else {
            continue;
        };
        if e.direction == Direction::In && path.ends_with(b"address-list/print") {
            *prints.entry((e.conn, path.clone())).or_default() += 1;
        }
    }
    assert!(
        prints.len() >= 2 && prints.values().all(|n| *n == 1),
        "one print per list and session: {prints:?}"
    );
    let reconciles: f64 = t
        .get("/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with("tikban_reconciliations_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        reconciles,
        1.0,
        "one reconcile:\n{}",
        support::tail(&t.output())
    );
    assert!(t.is_running());
}

#[test]
fn manual_entries_in_the_same_list_survive_everything() {
    let w = World::start();
    for (addr, comment) in [
        ("203.0.113.5", Some("my office")),
        ("192.0.2.30", None),
        ("203.0.113.6", Some("tikban-other instance")),
    ] {
        let mut e = NewEntry::new(V4, addr);
        if let Some(c) = comment {
            e = e.with_comment(c);
        }
        w.sim.insert_entry(Family::V4, e).unwrap();
    }
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    // A ban on an address a manual entry already holds: the manual entry enforces it.
    w.lapi.add_decision("192.0.2.30", "4h", &[]);
    w.lapi.add_decision("192.0.2.31", "4h", &[]);
    w.wait_until("the new ban", POLL, |w| {
        w.addresses(Family::V4, V4)
            .contains(&"192.0.2.31".to_owned())
    });
    w.lapi.delete_decision(&["--ip", "192.0.2.30"]);
    w.lapi.delete_decision(&["--ip", "192.0.2.31"]);
    w.wait_until("the unban", POLL, |w| {
        !w.addresses(Family::V4, V4)
            .contains(&"192.0.2.31".to_owned())
    });
    // A reconnect and reconcile (router reboot keeps static entries) must not touch them either.
    let before = w.last_connection();
    w.sim.faults().kill_connections();
    w.wait_for_reconcile_after(before, POLL);
    assert_eq!(
        w.addresses(Family::V4, V4),
        ["192.0.2.30", "203.0.113.5", "203.0.113.6"]
    );
    assert!(t.is_running());
}

#[test]
fn a_one_year_ban_is_clamped_then_refreshed_before_it_expires() {
    let w = World::start_with(
        SimConfig::default()
            .with_user(USER, PASSWORD)
            .with_transcript()
            .with_manual_clock(),
    );
    let mut t = w.tikban_with(&[("RECONCILIATION_INTERVAL", "2s")]);
    t.wait_healthy(POLL);
    w.lapi.add_decision("192.0.2.40", "8760h", &[]);
    w.wait_until("the ban", POLL, |w| {
        w.sim.all_entries(Family::V4).len() == 1
    });
    let e = &w.sim.all_entries(Family::V4)[0];
    assert_eq!(
        e.timeout_remaining,
        Some(Duration::from_secs(21_474_836)),
        "clamped to 35w3d13:13:56"
    );
    // Jump the router's clock to 2 minutes before the entry would vanish. The next periodic
    // reconcile reads the real remaining time, and the refresh follows at once.
    w.sim.clear_transcript();
    w.sim.clock().advance(Duration::from_secs(21_474_836 - 120));
    w.wait_until("the refresh", POLL, |w| {
        w.sim.all_entries(Family::V4).first().is_some_and(|e| {
            e.timeout_remaining
                .is_some_and(|d| d > Duration::from_secs(21_000_000))
        })
    });
    let writes = w.writes();
    assert_eq!(
        writes,
        ["/ip/firewall/address-list/set"],
        "one refresh, no re-add"
    );
    assert!(t.is_running());
}

#[test]
fn lapi_outage_keeps_entries_and_converges_after() {
    let w = World::start();
    let lapi_addr = w
        .lapi
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = Proxy::start(&w.rt, lapi_addr);
    let env = w.env_for(&format!("http://{}/", proxy.addr), w.server.addr(), 0);
    let mut t = Tikban::start(&env);
    t.wait_healthy(POLL);
    w.lapi.add_decision("192.0.2.50", "4h", &[]);
    w.lapi.add_decision("192.0.2.51", "4h", &[]);
    w.wait_until("bans", POLL, |w| w.addresses(Family::V4, V4).len() == 2);

    proxy.cut();
    t.wait("health to report LAPI down", POLL, |t| {
        let (code, health) = t.health();
        code == 503 && health["lapi"] == "down"
    });
    w.lapi.delete_decision(&["--ip", "192.0.2.50"]);
    w.lapi.add_decision("192.0.2.52", "4h", &[]);
    // Proof that time passed with LAPI unreachable: two more failed polls after the changes.
    let errors = t.metric(POLLS_ERROR);
    t.wait_metric(POLLS_ERROR, errors + 2.0, POLL);
    assert_eq!(
        w.addresses(Family::V4, V4),
        ["192.0.2.50", "192.0.2.51"],
        "nothing changes while LAPI is unreachable"
    );

    proxy.restore();
    w.wait_until(
        "convergence after the outage",
        Duration::from_secs(90),
        |w| w.addresses(Family::V4, V4) == ["192.0.2.51", "192.0.2.52"],
    );
    assert!(t.is_running());
}

/// The poison pill of issue 17 (item 1), end to end: LAPI 1.4.6 takes a 17 KiB `--reason`, which
/// it sends as the decision's `scenario`, past the 16 KiB element limit. The element is skipped
/// with one warning naming it; the rest of the snapshot applies, a new ban reaches the router
/// within a poll or two, and the snapshot that follows a LAPI outage (it holds the element again)
/// is skipped the same way without a second warning. Before, every poll failed for good.
#[test]
fn a_17_kib_decision_is_skipped_with_one_warning_and_new_bans_still_apply() {
    const WARNING: &str = "larger than the per-element limit";
    let w = World::start();
    let url = w.lapi.url();
    let lapi_addr = url.trim_start_matches("http://").trim_end_matches('/');
    let proxy = Proxy::start(&w.rt, lapi_addr.parse().unwrap());
    w.lapi.add_decision("192.0.2.40", "4h", &[]);
    w.lapi
        .add_decision("192.0.2.41", "4h", &["--reason", &"r".repeat(17 * 1024)]);
    let env = w.env_for(&format!("http://{}/", proxy.addr), w.server.addr(), 0);
    let mut t = Tikban::start(&env);
    t.wait_healthy(POLL);
    w.wait_until("the snapshot", POLL, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.40"]
    });
    let polls = t.metric(POLLS_OK);
    w.lapi.add_decision("192.0.2.42", "4h", &[]);
    w.wait_until("the new ban", POLL, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.40", "192.0.2.42"]
    });
    // The poll in flight, the one that carries the ban, and one for the 100 ms sampling.
    assert!(t.metric(POLLS_OK) <= polls + 3.0, "{}", t.output());
    assert_eq!(t.metric(POLLS_ERROR), 0.0, "{}", t.output());

    // A failed poll asks for a new snapshot, which holds the element again.
    proxy.cut();
    t.wait_metric(POLLS_ERROR, 1.0, POLL);
    w.lapi.add_decision("192.0.2.43", "4h", &[]);
    proxy.restore();
    w.wait_until(
        "the snapshot after the outage",
        Duration::from_secs(60),
        |w| w.addresses(Family::V4, V4) == ["192.0.2.40", "192.0.2.42", "192.0.2.43"],
    );
    let skipped = "tikban_lapi_skipped_decisions_total";
    assert!(t.metric(skipped) >= 2.0, "skipped in both snapshots");
    let out = t.output();
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("value=192.0.2.41"),
        "{}",
        warnings[0]
    );
    assert!(t.terminate().success(), "{}", support::tail(&t.output()));
}

#[test]
fn router_reboot_is_repaired() {
    let w = World::start();
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    w.lapi.add_decision("192.0.2.60", "4h", &[]);
    w.lapi.add_decision("2001:db8::60", "4h", &[]);
    w.wait_until("bans", POLL, |w| {
        w.sim.all_entries(Family::V4).len() == 1 && w.sim.all_entries(Family::V6).len() == 1
    });
    w.sim.faults().reboot();
    assert!(
        w.sim.all_entries(Family::V4).is_empty(),
        "dynamic entries vanish"
    );
    w.wait_until("restore after reboot", Duration::from_secs(60), |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.60"]
            && w.addresses(Family::V6, V6) == ["2001:db8::60/128"]
    });
    assert!(t.is_running());
}

#[test]
fn connection_drops_mid_sync_converge_without_duplicates() {
    let w = World::start();
    let decisions: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                r#"{{"duration":"4h","origin":"cscli","reason":"test","scope":"Ip","type":"ban","value":"10.{}.{}.{}"}}"#,
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    w.lapi.import(&format!("[{}]", decisions.join(",")), &[]);
    // The connection breaks after every 400 sentences received: the 400th is applied but never
    // answered, the ones pipelined behind it are never read.
    w.sim.faults().drop_after_sentences(Some(400));
    let mut t = w.tikban();
    // The fault stays on until it has cut two of the daemon's connections in the middle of the
    // sync (its connects, not the sim's logins: guard's log follower and the start-up checklist
    // log in too).
    t.wait_metric(CONNECTS, 3.0, Duration::from_secs(60));
    w.sim.faults().drop_after_sentences(None);
    w.wait_until("1500 entries", Duration::from_secs(90), |w| {
        w.sim.all_entries(Family::V4).len() == 1500
    });
    t.wait_healthy(POLL);
    // The sim refuses a second entry for the same address, so the list itself cannot show a
    // duplicate. What can go wrong is tikban sending an add again for a value whose reply was
    // lost (or that it had already added): count the adds the router received per value over the
    // whole test. Every one of them was executed (the drop fault stops reading at the sentence it
    // applies), so each value must have been added exactly once.
    let adds = w.adds_per_address();
    let twice: Vec<(&String, &usize)> = adds.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(twice.is_empty(), "values added more than once: {twice:?}");
    assert_eq!(adds.len(), 1500, "one add per value");
    assert_eq!(w.addresses(Family::V4, V4).len(), 1500);
    assert!(t.metric(CONNECTS) >= 3.0, "the fault was exercised");
    assert!(t.is_running());
}

#[test]
fn bad_environment_exits_2_listing_every_problem() {
    let out = std::process::Command::new(support::tikban_bin())
        .env_clear()
        .env("CROWDSEC_URL", "ftp://nope")
        .env("CROWDSEC_BOUNCER_API_KEY", "k3y-n0t-printed")
        .env("MIKROTIK_PASS", "p4ss-n0t-printed")
        .env("MIKROTIK_PIPELINE_WINDOW", "zero")
        .env("LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for var in ["CROWDSEC_URL", "MIKROTIK_PIPELINE_WINDOW", "LOG_FORMAT"] {
        assert!(err.contains(var), "{var} missing from:\n{err}");
    }
    assert!(!err.contains("n0t-printed"), "{err}");
}

#[test]
fn help_and_version_list_every_variable() {
    let out = std::process::Command::new(support::tikban_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for v in tikban::config::VARS {
        assert!(help.contains(v.name), "{} missing from --help", v.name);
    }
    let out = std::process::Command::new(support::tikban_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tikban {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn never_opens_a_file_for_writing() {
    let w = World::start();
    let trace = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=openat,open,creat", "-o"])
        .arg(trace.path())
        .arg(support::tikban_bin());
    let mut t = Tikban::start_with(cmd, &w.env());
    t.wait_healthy(Duration::from_secs(30));
    w.lapi.add_decision("192.0.2.70", "1h", &[]);
    w.wait_until("a ban", POLL, |w| w.sim.all_entries(Family::V4).len() == 1);
    // strace exits with the tracee's status.
    assert!(t.terminate_traced().success(), "{}", t.output());
    let log = std::fs::read_to_string(trace.path()).unwrap();
    let opens: Vec<&str> = log.lines().filter(|l| l.contains("open")).collect();
    assert!(
        !opens.is_empty(),
        "strace saw no open at all (is strace working?):\n{log}"
    );
    let writes: Vec<&&str> = opens
        .iter()
        .filter(|l| {
            l.contains("O_WRONLY")
                || l.contains("O_RDWR")
                || l.contains("O_CREAT")
                || l.contains("creat(")
        })
        .collect();
    assert!(
        writes.is_empty(),
        "tikban opened files for writing: {writes:#?}"
    );
}

#[test]
fn missing_drop_rules_are_reported_and_rule_counters_exported() {
    use routeros_sim::Table;
    let w = World::start();
    let id = w
        .sim
        .add_rule(
            Family::V4,
            Table::Raw,
            &[
                ("chain", "prerouting"),
                ("action", "drop"),
                ("src-address-list", V4),
                ("comment", "tikban: drop CrowdSec bans"),
            ],
        )
        .unwrap();
    assert!(w.sim.set_rule_counters(&id, 4200, 42));
    // A disabled rule for the IPv6 list does not count.
    w.sim
        .add_rule(
            Family::V6,
            Table::Raw,
            &[
                ("chain", "prerouting"),
                ("action", "drop"),
                ("src-address-list", V6),
                ("disabled", "true"),
            ],
        )
        .unwrap();
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    // The rule scan follows the first sync: wait for its result rather than read it once.
    t.wait("the rule scan's warning", POLL, |t| {
        t.health().1["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    });
    let (_, body) = t.get("/health");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings = health["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.contains(V6) && warning.contains("/ipv6/firewall"),
        "{warning}"
    );
    t.wait_metric("tikban_dropped_packets_total{ip_type=\"ipv4\"}", 42.0, POLL);
    let (_, metrics) = t.get("/metrics");
    assert!(
        metrics.contains("tikban_dropped_packets_total{ip_type=\"ipv4\"} 42"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tikban_dropped_bytes_total{ip_type=\"ipv4\"} 4200"),
        "{metrics}"
    );
    assert!(
        t.output().contains("no enabled drop or reject rule"),
        "{}",
        t.output()
    );
}
