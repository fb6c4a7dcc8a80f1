//! Stalled peers (issues 12 and 17): a LAPI that trickles its answer one byte at a time must not
//! stop the router side, and `/health` must say which peer is down while it stalls.

mod support;

use std::time::{Duration, Instant};

use routeros_sim::Family;
use support::fault_proxy::{FaultProxy, Mode};
use support::{Tikban, V4, World, free_port};

/// Each stage gets this long at most.
const STAGE: Duration = Duration::from_secs(30);

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn polls_ok(t: &Tikban) -> f64 {
    metric(
        &t.get("/metrics").1,
        "tikban_lapi_polls_total{result=\"ok\"}",
    )
}

/// Waits until `check` holds, or fails with `what` after `within`.
fn wait(what: &str, within: Duration, t: &mut Tikban, mut check: impl FnMut(&mut Tikban) -> bool) {
    let deadline = Instant::now() + within;
    while !check(t) {
        assert!(t.is_running(), "tikban exited:\n{}", t.output());
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}\n{}",
            t.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The acceptance test of issue 12: a ban whose router entry is about to run out is extended
/// (a lazy refresh) while every LAPI poll hangs on a body trickling one byte every 20 s, which
/// would take about 9 minutes for an empty 27-byte delta. Before the supervisor, the daemon sat
/// in that poll and the refresh never came.
#[test]
fn a_refresh_happens_while_the_lapi_answer_trickles() {
    let w = World::start();
    let lapi_addr = w
        .lapi
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(&w.rt, lapi_addr);
    let port = free_port();
    let mut env = w.env_for(&format!("http://{}/", proxy.addr), w.server.addr(), port);
    env.push(("CROWDSEC_POLL_TIMEOUT".into(), "3s".into()));
    let mut t = Tikban::spawn(&env, port);
    t.wait_healthy(STAGE);

    // A 310 s ban: its router entry gets 310 s. The refresh margin is 5 minutes, so the entry
    // needs a refresh about 10 s from now, if the ban is extended.
    w.lapi.add_decision("192.0.2.60", "310s", &[]);
    w.wait_until("the ban", STAGE, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.60"]
    });
    // The extension: a second, longer decision. tikban takes it without a write.
    let before = polls_ok(&t);
    w.lapi.add_decision("192.0.2.60", "1h", &[]);
    wait("two more polls (the extension is in)", STAGE, &mut t, |t| {
        polls_ok(t) >= before + 2.0
    });
    w.sim.clear_transcript();

    // Now LAPI trickles: no poll completes any more.
    proxy.set_mode(Mode::Slow {
        chunk: 1,
        every: Duration::from_secs(20),
    });
    let stalled_at = polls_ok(&t);
    wait("/health to report LAPI down", STAGE, &mut t, |t| {
        let (code, body) = t.get("/health");
        code == 503 && body.contains("\"lapi\":\"down\"") && body.contains("\"router\":\"up\"")
    });
    w.wait_until("the refresh", STAGE, |w| {
        w.sim.all_entries(Family::V4).first().is_some_and(|e| {
            e.timeout_remaining
                .is_some_and(|d| d > Duration::from_secs(3000))
        })
    });
    assert_eq!(
        polls_ok(&t),
        stalled_at,
        "the refresh happened while no poll completed"
    );
    assert!(
        proxy.faulted() >= 1,
        "the trickle was served: the refresh happened while a poll hung"
    );
    assert_eq!(
        w.writes(),
        ["/ip/firewall/address-list/set"],
        "one refresh, nothing else"
    );
    assert!(t.is_running());
}
