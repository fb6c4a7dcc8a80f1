//! Fault injection end to end (issue 9): the real LAPI 1.4.6, `routeros-sim` and the `tikban`
//! binary, with the router or the LAPI misbehaving.
//!
//! Every test checks the same four things:
//! 1. no entry that stays in LAPI's truth is removed from the router during the fault (a
//!    [`Watch`] samples the sim every 50 ms: once present, a truth entry must never be missing);
//! 2. after the fault ends, the router equals LAPI's truth within one reconcile interval;
//! 3. the process never exits or panics;
//! 4. no duplicate entries are left behind.
//!
//! Sizes and durations are the short CI form; seeds are fixed.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crowdsec_lapi::testing::Lapi;
use routeros_sim::{CostModel, Family, NewEntry, Sim, SimConfig};
use support::fault_proxy::{FaultProxy, Mode};
use support::{
    CONNECTS, PASSWORD, POLLS_ERROR, POLLS_OK, Proxy, Tikban, USER, V4, World, retry_delays, tail,
    with_env,
};

/// `RECONCILIATION_INTERVAL` in these tests: the bound for convergence after a router fault.
const RECONCILE: Duration = Duration::from_secs(5);
/// The bound for convergence after a LAPI fault: a reconcile interval of 10 s, which covers the
/// poll backoff reached during a ~5 s outage (1 + 2 + 4 s, jittered down).
const LAPI_RECONCILE: Duration = Duration::from_secs(10);
const SETUP: Duration = Duration::from_secs(60);

// === Router faults ===

#[test]
fn router_drops_at_random_points_during_a_large_sync_seed_1() {
    drops_during_large_sync(1);
}

#[test]
fn router_drops_at_random_points_during_a_large_sync_seed_2() {
    drops_during_large_sync(0x2545_f491);
}

#[test]
fn router_drops_at_random_points_during_a_large_sync_seed_3() {
    drops_during_large_sync(0xdead_beef);
}

/// 1500 decisions are synced while the router drops the connection after a random number of
/// sentences (re-drawn every 200 ms); meanwhile 128 decisions are deleted and 300 added.
fn drops_during_large_sync(seed: u64) {
    let w = World::start();
    w.lapi.import(&decisions_json(&ips(0, 1500)), &[]);
    // 10.0.0.0/25 (the first 128) is deleted during the fault; the rest is banned throughout.
    let stable: BTreeSet<String> = ips(128, 1500).into_iter().collect();
    let watch = Watch::start(&w.sim, &stable);

    let faults = w.sim.faults();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let chaos = std::thread::spawn(move || {
        let mut rng = Rng(seed);
        while !s.load(Ordering::SeqCst) {
            // Login and two prints take 3 sentences: every connection gets some work done.
            faults.drop_after_sentences(Some(5 + rng.below(400)));
            std::thread::sleep(Duration::from_millis(200));
        }
        faults.drop_after_sentences(None);
    });
    let mut t = w.tikban_with(&router_fault_env());
    // The decisions change once the chaos has cut a few connections, and the chaos goes on
    // until tikban has polled the changes and lost a few more. Counted as the daemon's
    // connects: guard's log follower and the start-up checklist log in on sessions of their own.
    t.wait_metric(CONNECTS, 3.0, SETUP);
    w.lapi
        .delete_decision(&["--range", "10.0.0.0/25", "--contained"]);
    w.lapi.import(&decisions_json(&ips(5000, 5300)), &[]);
    let (polls, connects) = (t.metric(POLLS_OK), t.metric(CONNECTS));
    t.wait_metric(POLLS_OK, polls + 2.0, SETUP);
    t.wait_metric(CONNECTS, connects + 1.0, SETUP);
    stop.store(true, Ordering::SeqCst);
    chaos.join().unwrap();
    let fault_ended = Instant::now();

    let mut truth = stable.clone();
    truth.extend(ips(5000, 5300));
    // No reconcile completes during the chaos, so the reconnect backoff is still running when it
    // ends (it starts over only after useful work, `crates/tikban/src/supervisor/mod.rs`): the
    // reconcile interval counts from the reconnect, at most the last announced delay away. The
    // last drop may land just after the fault is switched off (a kill already in flight), and the
    // reconcile after the reconnect rewrites the whole list: 10 s more for both on a loaded CI
    // machine (a CI rehearsal under load missed the 5 s bound by 50 entries).
    let backoff = retry_delays(&t.output())
        .last()
        .copied()
        .unwrap_or_default();
    converged(
        &w,
        &truth,
        fault_ended,
        RECONCILE + backoff + Duration::from_secs(10),
        &mut t,
    );
    watch.finish_for(&stable);
    let connects = t.metric(CONNECTS);
    assert!(
        connects >= 4.0,
        "the fault was not exercised: {connects} connects"
    );
    assert_running(&mut t);
}

/// The router stops answering for 6 s (command timeout 2 s) while decisions change.
#[test]
fn router_stall_longer_than_the_command_timeout() {
    let w = World::start();
    w.lapi.import(&decisions_json(&ips(0, 300)), &[]);
    let mut t = w.tikban_with(&router_fault_env());
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4).len() == 300
    });
    let stable: BTreeSet<String> = ips(128, 300).into_iter().collect();
    let watch = Watch::start(&w.sim, &stable);

    w.sim.faults().stall(true);
    w.lapi
        .delete_decision(&["--range", "10.0.0.0/25", "--contained"]);
    w.lapi.import(&decisions_json(&ips(5000, 5050)), &[]);
    // The stalled write batch is noticed and the connection dropped (and rebuilt once the stall
    // ends): by the batch's deadline, or by its commands timing out one after the other, whichever
    // comes first (the deadline is the command timeout plus 5 ms per command).
    t.wait(
        "the stalled batch to drop the connection",
        Duration::from_secs(30),
        |t| {
            let out = t.output();
            out.contains("write batch got no answer by its deadline")
                || out.contains("got no reply: the connection looks desynchronised")
        },
    );
    w.sim.faults().stall(false);
    let fault_ended = Instant::now();

    let mut truth = stable.clone();
    truth.extend(ips(5000, 5050));
    converged(&w, &truth, fault_ended, RECONCILE, &mut t);
    watch.finish_for(&stable);
    assert_running(&mut t);
}

/// 70 % of the adds of a 1500-entry sync (and of their retries) are trapped for 5 s.
#[test]
fn router_traps_a_fraction_of_adds() {
    let w = World::start();
    let mut t = w.tikban_with(&router_fault_env());
    t.wait_healthy(SETUP);
    w.lapi.import(&decisions_json(&ips(0, 200)), &[]);
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4).len() == 200
    });
    let stable: BTreeSet<String> = ips(0, 200).into_iter().collect();
    let watch = Watch::start(&w.sim, &stable);

    w.sim.faults().trap_add_fraction(0.7);
    w.lapi.import(&decisions_json(&ips(1000, 2500)), &[]);
    // The first round alone traps about 1050 of the 1500 adds.
    let traps = t.wait_metric(
        "tikban_router_commands_total{kind=\"add\",result=\"trap\"}",
        1000.0,
        Duration::from_secs(30),
    );
    // Trapped adds are retried on each tick: 1500 · 0.7^k are still missing after k rounds, so
    // the fault must still show when it ends.
    let listed = w.addresses(Family::V4, V4).len();
    w.sim.faults().trap_add_fraction(0.0);
    assert!(traps >= 1000.0, "at least 1050 traps expected, got {traps}");
    assert!(listed < 1700, "the traps left no gap: {listed} listed");
    let fault_ended = Instant::now();

    let mut truth = stable.clone();
    truth.extend(ips(1000, 2500));
    converged(&w, &truth, fault_ended, RECONCILE, &mut t);
    watch.finish_for(&stable);
    assert_running(&mut t);
}

/// The router reboots while the initial 1500-entry sync is under way (1 ms per write), which
/// wipes every dynamic entry; a manual static entry survives and must stay untouched.
#[test]
fn router_reboot_mid_sync() {
    let w = World::start_with(
        SimConfig::default()
            .with_user(USER, PASSWORD)
            .with_transcript()
            .with_cost(CostModel {
                per_write: Duration::from_millis(1),
                ..CostModel::default()
            }),
    );
    w.sim
        .insert_entry(
            Family::V4,
            NewEntry::new(V4, "203.0.113.9").with_comment("my office"),
        )
        .unwrap();
    w.lapi.import(&decisions_json(&ips(0, 1500)), &[]);
    let truth: BTreeSet<String> = ips(0, 1500).into_iter().collect();
    let before = Watch::start(&w.sim, &truth);
    let mut t = w.tikban_with(&router_fault_env());
    w.wait_until("a partial sync", SETUP, |w| {
        w.addresses(Family::V4, V4).len() > 400
    });
    // The sync goes on while the watch takes its last sample.
    before.finish(&truth, false);
    let partial = w.addresses(Family::V4, V4).len();
    w.sim.faults().reboot();
    let fault_ended = Instant::now();
    assert!(partial < 1500, "the sync had finished before the reboot");
    // A command already read when the sim rebooted may still land; a real reboot wipes them all.
    let left = w.addresses(Family::V4, V4).len();
    assert!(
        left < 10,
        "dynamic entries vanish: {left} left of {partial}"
    );
    let after = Watch::start(&w.sim, &truth);

    let mut expected = truth.clone();
    expected.insert("203.0.113.9".into());
    converged(&w, &expected, fault_ended, RECONCILE, &mut t);
    after.finish_for(&truth);
    let removes = w.writes().iter().filter(|p| p.ends_with("/remove")).count();
    assert_eq!(
        removes, 0,
        "nothing was unbanned, so nothing may be removed"
    );
    assert_running(&mut t);
}

// === LAPI faults ===

/// LAPI is killed with SIGKILL, restarted on the same database, and decisions change before
/// tikban can reach it again. The restart is real (same config, same sqlite file, same port);
/// the window in which tikban cannot see the restarted LAPI is a cut TCP proxy, because `cscli`
/// itself needs the running LAPI to change decisions.
#[test]
fn lapi_killed_and_restarted_with_new_decisions_meanwhile() {
    let w = World::start();
    let proxy = Proxy::start(&w.rt, lapi_addr(&w.lapi));
    w.lapi.import(&decisions_json(&ips(0, 300)), &[]);
    let env = with_env(
        w.env_for(&format!("http://{}/", proxy.addr), w.server.addr(), 0),
        &lapi_fault_env(),
    );
    let mut t = Tikban::start(&env);
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4).len() == 300
    });
    let stable: BTreeSet<String> = ips(128, 300).into_iter().collect();
    let watch = Watch::start(&w.sim, &stable);

    kill_lapi(&w.lapi);
    t.wait("/health to report the LAPI down", SETUP, |t| {
        let (code, health) = t.health();
        code == 503 && health["lapi"] == "down"
    });
    // Proof that time passed with the LAPI gone before the absence check.
    let errors = t.metric(POLLS_ERROR);
    t.wait_metric(POLLS_ERROR, errors + 2.0, SETUP);
    assert_eq!(w.addresses(Family::V4, V4).len(), 300, "nothing removed");
    proxy.cut();
    let _restarted = restart_lapi(&w.lapi);
    w.lapi
        .delete_decision(&["--range", "10.0.0.0/25", "--contained"]);
    w.lapi.import(&decisions_json(&ips(5000, 5040)), &[]);
    proxy.restore();
    let fault_ended = Instant::now();

    let mut truth = stable.clone();
    truth.extend(ips(5000, 5040));
    converged(&w, &truth, fault_ended, LAPI_RECONCILE, &mut t);
    watch.finish_for(&stable);
    assert_running(&mut t);
}

#[test]
fn lapi_answers_500() {
    lapi_fault(Mode::Status500);
}

#[test]
fn lapi_answers_truncated_json() {
    let proxy_log = lapi_fault(Mode::Truncated);
    // The delta lost in the cut body is gone from LAPI's cursor: only a snapshot can repair it.
    let after: Vec<&String> = proxy_log
        .iter()
        .skip_while(|(m, _)| *m != Mode::Truncated)
        .skip_while(|(m, _)| *m == Mode::Truncated)
        .map(|(_, line)| line)
        .filter(|line| line.contains("/v1/decisions/stream"))
        .collect();
    assert!(
        after.first().is_some_and(|l| l.contains("startup=true")),
        "the first poll after a broken body must ask for a snapshot: {after:?}"
    );
}

#[test]
fn lapi_answers_garbage() {
    lapi_fault(Mode::Garbage);
}

#[test]
fn lapi_connection_cut() {
    lapi_fault(Mode::Cut);
}

/// A body trickled at about 1 KiB/s: polls take seconds, but they complete and are applied,
/// and the router converges while the fault is still on.
#[test]
fn lapi_answers_with_a_very_slow_body() {
    lapi_fault(Mode::Slow {
        chunk: 64,
        every: Duration::from_millis(50),
    });
}

/// Syncs 230 decisions through a [`FaultProxy`], switches it to `mode` for about 5 s while 30
/// decisions are deleted and 40 added, then back to pass-through. Returns the proxy's log.
fn lapi_fault(mode: Mode) -> Vec<(Mode, String)> {
    let w = World::start();
    let proxy = FaultProxy::start(&w.rt, lapi_addr(&w.lapi));
    w.lapi.import(&decisions_json(&ips(98, 328)), &[]);
    let env = with_env(
        w.env_for(&proxy.url(), w.server.addr(), 0),
        &lapi_fault_env(),
    );
    let mut t = Tikban::start(&env);
    w.wait_until("the first sync", SETUP, |w| {
        w.addresses(Family::V4, V4).len() == 230
    });
    let stable: BTreeSet<String> = ips(128, 328).into_iter().collect();
    let watch = Watch::start(&w.sim, &stable);

    let errors = t.metric(POLLS_ERROR);
    proxy.set_mode(mode);
    let started = Instant::now();
    w.lapi
        .delete_decision(&["--range", "10.0.0.0/25", "--contained"]);
    w.lapi.import(&decisions_json(&ips(5000, 5040)), &[]);
    let mut truth = stable.clone();
    truth.extend(ips(5000, 5040));
    if let Mode::Slow { .. } = mode {
        // Slow is not an error: the polls complete and converge under the fault.
        converged(&w, &truth, started, Duration::from_secs(20), &mut t);
        assert!(proxy.faulted() >= 1, "{:?}", proxy.served());
    } else {
        // Three faulty answers, each one a failed poll for tikban, and /health says so; only
        // then is the router checked for changes (none may have happened).
        t.wait("three faulty answers", Duration::from_secs(20), |_| {
            proxy.faulted() >= 3
        });
        t.wait_metric(POLLS_ERROR, errors + 3.0, Duration::from_secs(20));
        t.wait(
            "/health to report the LAPI fault",
            Duration::from_secs(10),
            |t| {
                let (code, health) = t.health();
                code == 503 && health["lapi"] == "down"
            },
        );
        assert_eq!(
            w.addresses(Family::V4, V4).len(),
            230,
            "entries are kept as they are during a LAPI fault"
        );
    }
    proxy.set_mode(Mode::Pass);
    let fault_ended = Instant::now();
    converged(&w, &truth, fault_ended, LAPI_RECONCILE, &mut t);
    watch.finish_for(&stable);
    assert_running(&mut t);
    proxy.served()
}

// === Helpers ===

fn router_fault_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RECONCILIATION_INTERVAL", "5s"),
        ("MIKROTIK_CMD_TIMEOUT", "2s"),
        ("MIKROTIK_CONN_TIMEOUT", "2s"),
        ("LOG_LEVEL", "info"),
    ]
}

fn lapi_fault_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RECONCILIATION_INTERVAL", "10s"),
        ("MIKROTIK_CMD_TIMEOUT", "2s"),
        ("LOG_LEVEL", "info"),
    ]
}

/// `10.0.0.0` + i for i in `from..to`, as the sim prints a /32.
fn ips(from: u32, to: u32) -> Vec<String> {
    (from..to)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
        .collect()
}

fn decisions_json(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| {
            format!(
                r#"{{"duration":"4h","origin":"cscli","reason":"fault test","scope":"Ip","type":"ban","value":"{v}"}}"#
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Waits until the tikban list equals `truth` (and has no duplicates), at most `within` after
/// `since`; the process must stay up throughout.
fn converged(
    w: &World,
    truth: &BTreeSet<String>,
    since: Instant,
    within: Duration,
    t: &mut Tikban,
) {
    let deadline = since + within;
    loop {
        let entries = w.sim.address_list(Family::V4, V4);
        let set: BTreeSet<String> = entries.iter().map(|e| e.address.clone()).collect();
        if &set == truth {
            assert_eq!(entries.len(), set.len(), "duplicate entries left behind");
            eprintln!("converged {:?} after the fault ended", since.elapsed());
            return;
        }
        assert!(t.is_running(), "tikban exited:\n{}", t.output());
        if Instant::now() > deadline {
            let missing: Vec<&String> = truth.difference(&set).take(5).collect();
            let extra: Vec<&String> = set.difference(truth).take(5).collect();
            panic!(
                "not converged within {within:?} of the fault's end: {} entries, {} expected; \
                 missing {missing:?}…, extra {extra:?}…\n{}",
                set.len(),
                truth.len(),
                tail(&t.output())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_running(t: &mut Tikban) {
    assert!(t.is_running(), "tikban exited:\n{}", t.output());
    let out = t.output();
    assert!(!out.contains("panicked"), "tikban panicked:\n{out}");
    assert!(t.terminate().success(), "SIGTERM exits 0:\n{}", tail(&out));
}

fn lapi_addr(lapi: &Lapi) -> SocketAddr {
    lapi.url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("LAPI address")
}

/// splitmix64: fixed seeds, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Samples the tikban IPv4 list every 50 ms in a background thread. An address of the watched
/// set that was seen once must be seen in every later sample; duplicates are never allowed.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, HashSet<String>, Vec<String>)>,
}

impl Watch {
    fn start(sim: &Sim, watched: &BTreeSet<String>) -> Watch {
        let sim = sim.clone();
        let watched = watched.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen: HashSet<String> = HashSet::new();
            let mut violations = Vec::new();
            let mut samples = 0;
            let started = Instant::now();
            loop {
                // One last sample after the stop request, so the final state is always seen.
                let stopping = s.load(Ordering::SeqCst);
                let entries = sim.address_list(Family::V4, V4);
                let mut count: HashMap<&str, usize> = HashMap::new();
                for e in &entries {
                    *count.entry(e.address.as_str()).or_default() += 1;
                }
                for (a, n) in &count {
                    if *n > 1 && violations.len() < 20 {
                        violations.push(format!("{a} listed {n} times at {:?}", started.elapsed()));
                    }
                }
                for a in &seen {
                    if !count.contains_key(a.as_str()) && violations.len() < 20 {
                        violations.push(format!("{a} removed at {:?}", started.elapsed()));
                    }
                }
                for a in count.keys() {
                    if watched.contains(*a) {
                        seen.insert((*a).to_owned());
                    }
                }
                samples += 1;
                if stopping {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (samples, seen, violations)
        });
        Watch { stop, handle }
    }

    /// Stops sampling; asserts that no entry of `truth` went missing once seen and that every
    /// one of them was seen.
    fn finish_for(self, truth: &BTreeSet<String>) {
        self.finish(truth, true);
    }

    fn finish(self, truth: &BTreeSet<String>, all_seen: bool) {
        self.stop.store(true, Ordering::SeqCst);
        let (samples, seen, violations) = self.handle.join().expect("watch thread");
        assert!(samples >= 5, "only {samples} samples");
        let violations: Vec<&String> = violations
            .iter()
            .filter(|v| truth.iter().any(|a| v.starts_with(&format!("{a} "))))
            .collect();
        assert!(
            violations.is_empty(),
            "truth entries removed or doubled: {violations:?}"
        );
        let unseen = truth.iter().filter(|a| !seen.contains(*a)).count();
        assert!(
            !all_seen || unseen == 0,
            "{unseen} truth entries never appeared"
        );
    }
}

// === LAPI restart ===

/// The restarted `crowdsec`; killed on drop.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_path(lapi: &Lapi) -> String {
    lapi.dir()
        .join("config.yaml")
        .to_string_lossy()
        .into_owned()
}

/// SIGKILLs the `crowdsec` process this test started for `lapi` (found by its unique config
/// path), and waits until its port refuses connections.
fn kill_lapi(lapi: &Lapi) {
    let config = config_path(lapi);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("/crowdsec")) && args.contains(&config) {
            pids.push(pid);
        }
    }
    assert_eq!(pids.len(), 1, "the LAPI process of {config}: {pids:?}");
    let status = Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(lapi_addr(lapi)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "LAPI still listening after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `crowdsec` again on the same config directory (database, port, bouncer keys) and
/// waits until `/health` answers.
fn restart_lapi(lapi: &Lapi) -> Restarted {
    let bin = crowdsec_lapi::testing::crowdsec_bin_dir();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(lapi.dir().join("lapi.log"))
        .unwrap();
    let child = Command::new(bin.join("crowdsec"))
        .args(["-c", &config_path(lapi), "-no-cs"])
        .current_dir(lapi.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let restarted = Restarted(child);
    let port = lapi_addr(lapi).port();
    let deadline = Instant::now() + Duration::from_secs(20);
    while support::http_get(port, "/health").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "LAPI did not come back: {}",
            lapi.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    restarted
}
