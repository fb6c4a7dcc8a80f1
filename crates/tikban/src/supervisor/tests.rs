//! The scheduling rules, on a hand-driven clock against the model router ([`crate::model`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdsec_lapi::{Batch, BatchAdd, Deletion, GoDuration, Label, Value};

use super::*;
use crate::metrics::Metrics;
use crate::model::{Harness, Mode};

fn settings() -> Settings {
    Settings {
        update_frequency: Duration::from_secs(10),
        poll_timeout: Duration::from_secs(30),
        snapshot_timeout: Duration::from_secs(300),
        reconciliation_interval: Duration::from_secs(3600),
        metrics_interval: Some(Duration::from_secs(1800)),
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        lists: [
            Some("crowdsec-banned".into()),
            Some("crowdsec6-banned".into()),
        ],
        comment_prefix: "tikban".into(),
        safety: crate::safety::Settings::default(),
        max_entries: crate::supervisor::MaxEntries::Unlimited,
        ipv6_prefix: 128,
        guard: None,
        share: false,
    }
}

fn harness() -> Harness {
    let now = Instant::now();
    let sup = Supervisor::new(settings(), Arc::new(Metrics::new()), 7, now);
    let mut h = Harness::new(sup, now);
    h.step();
    h
}

fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}

fn batch(startup: bool, bans: &[(&str, i64, i64)]) -> Batch {
    let mut b = Batch::new(startup);
    for (value, id, secs) in bans {
        b.push_add(BatchAdd {
            value: v(value),
            id: *id,
            duration: GoDuration::from_secs(*secs),
            origin: Label::new("cscli"),
        });
    }
    b
}

fn unban(value: &str, id: i64) -> Batch {
    let mut b = Batch::new(false);
    b.push_deleted(Deletion {
        value: v(value),
        id,
    });
    b
}

fn down() -> Failure {
    Failure::new(FailureKind::Refused, "connection refused")
}

/// The router's entries of a family, as addresses.
fn listed(h: &Harness, family: Family) -> Vec<String> {
    h.router
        .entries(family)
        .values()
        .filter(|e| e.expires.is_none_or(|t| t > h.now))
        .map(|e| e.address.clone())
        .collect()
}

fn is_write(a: &Action) -> bool {
    matches!(a, Action::Send { .. } | Action::Print { .. })
}

/// A harness with a snapshot applied and the first sync done.
fn synced(bans: &[(&str, i64, i64)]) -> Harness {
    synced_with(settings(), bans)
}

/// Settings without the admin-session protection: tests of other rules need not account for
/// the `/user/active` reads it adds.
fn quiet_settings() -> Settings {
    let mut s = settings();
    s.safety.protections.admin_sessions = false;
    s
}

fn synced_with(settings: Settings, bans: &[(&str, i64, i64)]) -> Harness {
    let now = Instant::now();
    let sup = Supervisor::new(settings, Arc::new(Metrics::new()), 7, now);
    let mut h = Harness::new(sup, now);
    h.step();
    h.answer_poll(Ok(batch(true, bans)));
    assert!(matches!(
        h.sup.router_state(),
        RouterState::Connected {
            view: View::Fresh,
            ..
        }
    ));
    h
}

#[test]
fn the_first_actions_are_a_snapshot_poll_and_a_connection() {
    let h = harness();
    assert!(matches!(h.lapi[..], [Action::Poll { startup: true, .. }]));
    assert!(matches!(h.log[0], Action::Connect { .. }));
    // Connected, but LAPI has not answered: the router is only read.
    assert!(matches!(h.log[1], Action::ReadResource { .. }));
    assert_eq!(h.count(is_write), 0);
}

#[test]
fn lapi_down_at_start_never_touches_the_router() {
    let mut h = harness();
    for _ in 0..20 {
        h.answer_poll(Err(down()));
        // Wait for the next poll (backoff), however long it is.
        while !h.lapi.iter().any(|a| matches!(a, Action::Poll { .. })) {
            h.advance(Duration::from_secs(1));
        }
    }
    // Proof of progress: twenty polls failed and the router was read (housekeeping) ...
    assert!(h.count(|a| matches!(a, Action::ReadResource { .. })) >= 2);
    // ... and nothing was ever printed for a reconcile or written.
    assert_eq!(h.count(is_write), 0);
    assert_eq!(h.router.writes, 0);
    assert!(matches!(h.sup.lapi_state(), LapiState::Starting { .. }));
    assert!(!h.sup.health(h.now).lapi_up);
}

#[test]
fn a_snapshot_is_synced_with_one_write_per_value() {
    let bans: Vec<(String, i64, i64)> = (0..10_000)
        .map(|i| {
            (
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                i,
                3600,
            )
        })
        .collect();
    let refs: Vec<(&str, i64, i64)> = bans.iter().map(|(a, i, s)| (a.as_str(), *i, *s)).collect();
    let mut h = synced(&refs);
    assert_eq!(h.router.entries(Family::V4).len(), 10_000);
    assert_eq!(h.router.writes, 10_000);
    // In chunks: never more than SEND_CHUNK ops held or sent at once.
    let sends: Vec<usize> = h
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Send { ops, .. } => Some(ops.len()),
            _ => None,
        })
        .collect();
    assert!(
        sends.len() >= 3 && sends.iter().all(|n| *n <= SEND_CHUNK),
        "{sends:?}"
    );
    let health = h.sup.health(h.now);
    assert!(health.ok(), "{health:?}");
    // Nothing more to do while nothing changes: no writes over a quiet hour of polls.
    for _ in 0..360 {
        h.advance(Duration::from_secs(10));
        h.answer_poll(Ok(Batch::new(false)));
    }
    assert_eq!(h.router.writes, 10_000);
}

#[test]
fn list_prints_are_counted_as_router_commands() {
    let h = synced(&[("192.0.2.1", 1, 3600)]);
    let prints = |h: &Harness| {
        h.sup.metrics.value(
            metrics::ROUTER_COMMANDS,
            &[("kind", "print"), ("result", "ok")],
        )
    };
    // One print per list of the first reconcile (IPv4 and IPv6), beside the one add.
    assert_eq!(prints(&h), Some(2.0));
    assert_eq!(
        h.sup.metrics.value(
            metrics::ROUTER_COMMANDS,
            &[("kind", "add"), ("result", "ok")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_stalled_poll_still_refreshes_entries_before_they_end() {
    // A 400 s ban, then extended to an hour: the router entry (400 s) must be refreshed about
    // 300 s (the refresh margin) before it ends.
    let mut h = synced(&[("192.0.2.1", 1, 400)]);
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(batch(false, &[("192.0.2.1", 2, 3600)])));
    assert_eq!(h.router.writes, 1, "an extension writes nothing at once");
    // Now LAPI stalls: the next poll is sent and never answered (a body trickling forever).
    h.advance(Duration::from_secs(10));
    assert!(matches!(
        h.sup.lapi_state().poll(),
        PollState::InFlight { .. }
    ));
    let before = h.router.ops.get("set").copied().unwrap_or(0);
    h.advance(Duration::from_secs(120));
    assert!(
        matches!(h.sup.lapi_state().poll(), PollState::InFlight { .. }),
        "the poll still hangs"
    );
    assert_eq!(
        h.router.ops.get("set").copied().unwrap_or(0),
        before + 1,
        "one refresh while the poll hangs"
    );
    let entry = h
        .router
        .entries(Family::V4)
        .values()
        .next()
        .unwrap()
        .clone();
    let left = entry.expires.unwrap().saturating_duration_since(h.now);
    assert!(left > Duration::from_secs(3000), "{left:?}");
    // The poll is overdue: /health says LAPI is down while the router side keeps working.
    let health = h.sup.health(h.now);
    assert!(
        !health.lapi_up && health.router_up && !health.ok(),
        "{health:?}"
    );
}

#[test]
fn a_stalled_poll_does_not_delay_expiry_reconnects_or_reconciles() {
    let mut h = synced(&[("192.0.2.7", 1, 3600)]);
    h.advance(Duration::from_secs(10));
    assert!(matches!(
        h.sup.lapi_state().poll(),
        PollState::InFlight { .. }
    ));
    // The router drops the session; the poll keeps hanging.
    h.sup
        .handle(h.now, Event::RouterClosed("closed by the router".into()));
    h.router.reboot(h.now);
    h.advance(Duration::from_secs(5));
    assert_eq!(
        listed(&h, Family::V4),
        ["192.0.2.7"],
        "reconnected and repaired"
    );
    assert!(matches!(
        h.sup.lapi_state().poll(),
        PollState::InFlight { .. }
    ));
}

#[test]
fn reconnect_leads_to_a_reconcile() {
    let mut h = synced(&[("192.0.2.1", 1, 3600), ("2001:db8::1", 2, 3600)]);
    let prints = h.count(|a| matches!(a, Action::Print { .. }));
    assert_eq!(prints, 2, "one print per list");
    h.sup
        .handle(h.now, Event::RouterClosed("closed by the router".into()));
    h.step();
    assert!(matches!(h.log.last(), Some(Action::Disconnect { .. })));
    h.advance(Duration::from_secs(3));
    assert_eq!(h.count(|a| matches!(a, Action::Connect { .. })), 2);
    assert_eq!(h.count(|a| matches!(a, Action::Print { .. })), 4);
    assert_eq!(
        h.router.writes, 2,
        "the entries were still there: nothing written"
    );
    let m = h
        .sup
        .metrics
        .value(metrics::RECONCILIATIONS, &[("reason", "resync")]);
    assert_eq!(m, Some(1.0));
}

#[test]
fn a_reboot_is_detected_and_repaired() {
    let mut h = synced(&[("192.0.2.1", 1, 7200)]);
    h.advance(Duration::from_secs(61));
    h.router.reboot(h.now);
    assert!(listed(&h, Family::V4).is_empty());
    // The next housekeeping sees the uptime go back, reconciles and re-adds.
    h.advance(Duration::from_secs(61));
    assert_eq!(listed(&h, Family::V4), ["192.0.2.1"]);
    let m = h
        .sup
        .metrics
        .value(metrics::RECONCILIATIONS, &[("reason", "reboot")]);
    assert_eq!(m, Some(1.0));
}

#[test]
fn an_overdue_router_job_drops_the_connection_and_health_says_so() {
    let mut h = synced_with(quiet_settings(), &[]);
    h.mode = Mode::Stalled;
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(batch(false, &[("198.51.100.1", 1, 3600)])));
    assert!(matches!(h.log.last(), Some(Action::Send { .. })));
    assert!(h.sup.health(h.now).router_up);
    // Past the job's deadline (command timeout + 5 ms per op) the router counts as down ...
    h.now += Duration::from_secs(31);
    assert!(!h.sup.health(h.now).router_up);
    // ... and the connection is dropped.
    h.step();
    assert!(
        h.log
            .iter()
            .any(|a| matches!(a, Action::Disconnect { reason } if reason.contains("deadline")))
    );
    // Back up: reconnect and reconcile.
    h.mode = Mode::Up;
    h.advance(Duration::from_secs(5));
    assert_eq!(listed(&h, Family::V4), ["198.51.100.1"]);
    assert!(h.sup.health(h.now).router_up);
}

#[test]
fn commands_without_any_reply_drop_the_connection_after_three() {
    let mut h = synced_with(quiet_settings(), &[]);
    h.mode = Mode::Stalled;
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(batch(false, &[("198.51.100.2", 1, 3600)])));
    for round in 0..MAX_SILENT_TIMEOUTS {
        let Some(Action::Send { job, ops }) = h.log.last().cloned() else {
            panic!("round {round}: {:?}", h.log.last())
        };
        let results = ops.into_iter().map(|op| (op, Outcome::Timeout)).collect();
        h.sup
            .handle(h.now, Event::Router(job, RouterEvent::OpsDone(results)));
        h.step();
        if round + 1 < MAX_SILENT_TIMEOUTS {
            // Retried on the next tick.
            h.advance(TICK);
        }
    }
    assert!(matches!(
        h.log.last(),
        Some(Action::Disconnect { reason }) if reason.contains("desynchronised")
    ));
}

#[test]
fn the_reconnect_backoff_resets_only_after_useful_work() {
    // A router that kills the session on every print.
    let mut h = synced(&[("192.0.2.1", 1, 3600)]);
    h.sup.handle(h.now, Event::RouterClosed("killed".into()));
    h.step();
    h.mode = Mode::Stalled;
    let mut delays = Vec::new();
    for _ in 0..5 {
        let RouterState::Disconnected { retry_at } = *h.sup.router_state() else {
            panic!("{:?}", h.sup.router_state())
        };
        h.now = retry_at;
        h.step();
        let Some(Action::Connect { job }) = h.log.last().cloned() else {
            panic!("{:?}", h.log.last())
        };
        h.sup.handle(
            h.now,
            Event::Router(
                job,
                RouterEvent::Connected {
                    local: None,
                    peer: None,
                },
            ),
        );
        h.step(); // the reconcile's print starts ...
        let Some(Action::Print { job, .. }) = h.log.last().cloned() else {
            panic!("{:?}", h.log.last())
        };
        // ... and the router kills the session.
        h.sup.handle(
            h.now,
            Event::Router(
                job,
                RouterEvent::Failed(Failure::new(FailureKind::Lost, "EOF")),
            ),
        );
        h.step();
        let RouterState::Disconnected { retry_at } = *h.sup.router_state() else {
            panic!("{:?}", h.sup.router_state())
        };
        delays.push(retry_at - h.now);
    }
    h.mode = Mode::Up;
    // Each login that did no useful work makes the next wait longer (1 s, 2 s, 4 s ... with
    // up to 30 % jitter): no login storm.
    for pair in delays.windows(2) {
        assert!(pair[1] > pair[0], "{delays:?}");
    }
    // A reconcile that completes resets it.
    h.advance(Duration::from_secs(60));
    assert!(matches!(
        h.sup.router_state(),
        RouterState::Connected {
            view: View::Fresh,
            ..
        }
    ));
    h.sup.handle(h.now, Event::RouterClosed("closed".into()));
    h.step();
    let RouterState::Disconnected { retry_at } = *h.sup.router_state() else {
        panic!()
    };
    assert!(retry_at - h.now <= Duration::from_secs(1));
}

#[test]
fn a_failed_rule_print_keeps_the_drop_counters_and_raises_no_warning() {
    let mut h = synced_with(quiet_settings(), &[]);
    let bytes = |h: &Harness| {
        h.sup
            .metrics
            .value(metrics::DROPPED_BYTES, &[("ip_type", "ipv4")])
            .unwrap_or(0.0)
    };
    let job = |h: &mut Harness| {
        h.mode = Mode::Stalled;
        h.advance(HOUSEKEEPING);
        h.mode = Mode::Up;
        let Some(Action::ReadResource { job }) = h.log.last().cloned() else {
            panic!("{:?}", h.log.last())
        };
        h.sup.handle(
            h.now,
            Event::Router(job, RouterEvent::Resource(Resource::default())),
        );
        let Some(Action::ReadRules { job }) = h.sup.poll_action(h.now) else {
            panic!()
        };
        job
    };
    let scan = |b| RuleScan {
        found: true,
        bytes: b,
        packets: b / 100,
    };
    let j = job(&mut h);
    h.sup.handle(
        h.now,
        Event::Router(j, RouterEvent::Rules(vec![(Family::V4, Ok(scan(1000)))])),
    );
    assert_eq!(bytes(&h), 1000.0);
    let j = job(&mut h);
    let failed = Failure::new(FailureKind::Timeout, "command timed out");
    h.sup.handle(
        h.now,
        Event::Router(j, RouterEvent::Rules(vec![(Family::V4, Err(failed))])),
    );
    assert_eq!(bytes(&h), 1000.0);
    assert!(
        h.sup.health(h.now).warnings.is_empty(),
        "no false 'no drop rule' warning"
    );
    let j = job(&mut h);
    h.sup.handle(
        h.now,
        Event::Router(j, RouterEvent::Rules(vec![(Family::V4, Ok(scan(1500)))])),
    );
    assert_eq!(bytes(&h), 1500.0, "the history is not counted twice");
}

#[test]
fn a_missing_drop_rule_is_a_health_warning() {
    let mut h = synced(&[]);
    h.router.rules[1].found = false;
    h.advance(HOUSEKEEPING);
    let w = h.sup.health(h.now).warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("crowdsec6-banned") && w[0].contains("/ipv6/firewall"));
    h.router.rules[1].found = true;
    h.advance(HOUSEKEEPING);
    assert!(h.sup.health(h.now).warnings.is_empty());
}

#[test]
fn a_failed_usage_push_keeps_its_window() {
    let mut h = synced(&[]);
    h.router.rules[0].bytes = 1000;
    let push = |h: &mut Harness| loop {
        h.advance(Duration::from_secs(10));
        if let Some(i) = h
            .lapi
            .iter()
            .position(|a| matches!(a, Action::PushUsage { .. }))
        {
            let Action::PushUsage { items, .. } = h.lapi.remove(i) else {
                unreachable!()
            };
            return items
                .iter()
                .find(|i| i.name == "dropped" && i.unit == "byte" && i.labels["ip_type"] == "ipv4")
                .map(|i| i.value)
                .unwrap();
        }
        // Keep LAPI answering.
        if h.lapi.iter().any(|a| matches!(a, Action::Poll { .. })) {
            h.answer_poll(Ok(Batch::new(false)));
        }
    };
    assert_eq!(push(&mut h), 1000.0);
    h.sup.handle(
        h.now,
        Event::UsagePushed(Err(Failure::new(FailureKind::Refused, "HTTP 500"))),
    );
    h.router.rules[0].bytes = 1200;
    assert_eq!(push(&mut h), 1200.0, "the failed window is sent again");
    h.sup.handle(h.now, Event::UsagePushed(Ok(true)));
    h.router.rules[0].bytes = 1300;
    assert_eq!(push(&mut h), 100.0);
}

#[test]
fn an_unbanned_value_is_removed_and_a_ban_running_out_is_not() {
    let mut h = synced(&[("192.0.2.1", 1, 3600), ("192.0.2.2", 2, 30)]);
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(unban("192.0.2.1", 1)));
    assert_eq!(listed(&h, Family::V4), ["192.0.2.2"]);
    let removes = h.router.ops.get("remove").copied();
    h.advance(Duration::from_secs(30));
    assert!(
        listed(&h, Family::V4).is_empty(),
        "the router dropped it by itself"
    );
    assert_eq!(
        h.router.ops.get("remove").copied(),
        removes,
        "no remove for an expiry"
    );
}

#[test]
fn changes_during_a_reconcile_are_planned_at_its_end() {
    let mut h = synced(&[("192.0.2.1", 1, 3600)]);
    h.mode = Mode::Stalled;
    h.sup.handle(h.now, Event::RouterClosed("closed".into()));
    h.advance(Duration::from_secs(3));
    let Some(Action::Connect { job }) = h.log.last().cloned() else {
        panic!("{:?}", h.log.last())
    };
    h.sup.handle(
        h.now,
        Event::Router(
            job,
            RouterEvent::Connected {
                local: None,
                peer: None,
            },
        ),
    );
    h.step();
    let Some(Action::Print {
        job,
        family: Family::V4,
    }) = h.log.last().cloned()
    else {
        panic!("{:?}", h.log.last())
    };
    // While the print runs, LAPI unbans the value and bans another.
    h.advance(Duration::from_secs(5));
    h.lapi.retain(|a| !matches!(a, Action::Poll { .. }));
    h.sup.handle(
        h.now,
        Event::Polled(Ok({
            let mut b = unban("192.0.2.1", 1);
            b.push_add(BatchAdd {
                value: v("192.0.2.9"),
                id: 3,
                duration: GoDuration::from_secs(3600),
                origin: Label::new("cscli"),
            });
            b
        })),
    );
    // The print returns the entry as it was when printed.
    let rows = h.router.rows(Family::V4, "crowdsec-banned", h.now);
    h.sup
        .handle(h.now, Event::Router(job, RouterEvent::Rows(rows)));
    h.sup
        .handle(h.now, Event::Router(job, RouterEvent::PrintDone));
    h.mode = Mode::Up;
    h.step();
    assert_eq!(listed(&h, Family::V4), ["192.0.2.9"]);
}

#[test]
fn a_hostile_print_is_cut_off_by_its_row_limit() {
    let now = Instant::now();
    let mut sup = Supervisor::new(settings(), Arc::new(Metrics::new()), 7, now);
    sup.engine.set_row_slack(10);
    let mut h = Harness::new(sup, now);
    h.step();
    h.mode = Mode::Stalled;
    h.answer_poll(Ok(batch(true, &[("192.0.2.1", 1, 3600)])));
    // The reconcile's print starts; the router streams endless owned rows.
    let Some(Action::Print { job, .. }) = h.log.last().cloned() else {
        panic!("{:?}", h.log.last())
    };
    for i in 0..20u32 {
        let row = RouterRow {
            id: format!("*{:X}", i + 1),
            address: format!("203.0.113.{i}"),
            timeout: Some(Duration::from_secs(60)),
            comment: Some("tikban".into()),
        };
        h.sup
            .handle(h.now, Event::Router(job, RouterEvent::Rows(vec![row])));
    }
    h.step();
    assert!(matches!(
        h.log.last(),
        Some(Action::Disconnect { reason }) if reason.contains("rows")
    ));
    assert!(h.sup.engine().missing_count() == 0 && h.router.writes == 0);
}

#[test]
fn a_large_update_is_reconciled_not_planned_change_by_change() {
    let mut h = synced(&[]);
    // The real limit is 65 536 (MAX_PLANNED_CHANGES); a smaller one keeps the test quick.
    h.sup.max_planned = 1000;
    h.advance(Duration::from_secs(10));
    let bans: Vec<(String, i64, i64)> = (0..(h.sup.max_planned as i64 + 10))
        .map(|i| {
            (
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                i,
                3600,
            )
        })
        .collect();
    let refs: Vec<(&str, i64, i64)> = bans.iter().map(|(a, i, s)| (a.as_str(), *i, *s)).collect();
    let prints = h.count(|a| matches!(a, Action::Print { .. }));
    h.answer_poll(Ok(batch(false, &refs)));
    assert_eq!(h.count(|a| matches!(a, Action::Print { .. })), prints + 2);
    assert_eq!(h.router.entries(Family::V4).len(), bans.len());
    // Never more than one chunk of ops at once.
    assert!(
        h.log
            .iter()
            .all(|a| !matches!(a, Action::Send { ops, .. } if ops.len() > SEND_CHUNK))
    );
}

// === safety and budget (issue 14) ===

fn harness_with(settings: Settings) -> Harness {
    let now = Instant::now();
    let sup = Supervisor::new(settings, Arc::new(Metrics::new()), 7, now);
    let mut h = Harness::new(sup, now);
    h.step();
    h
}

fn origin_batch(startup: bool, bans: &[(&str, i64, i64, &str)]) -> Batch {
    let mut b = Batch::new(startup);
    for (value, id, secs, origin) in bans {
        b.push_add(BatchAdd {
            value: v(value),
            id: *id,
            duration: GoDuration::from_secs(*secs),
            origin: Label::new(origin),
        });
    }
    b
}

fn skipped(h: &Harness, reason: &str) -> f64 {
    h.sup
        .metrics
        .value(metrics::DECISIONS_SKIPPED, &[("reason", reason)])
        .unwrap_or(0.0)
}

#[test]
fn allowlisted_and_too_wide_bans_never_reach_the_router() {
    let mut s = settings();
    s.safety.allowlist = crate::safety::AddrSet::parse("192.0.2.0/28, 2001:db8:1::/48").unwrap();
    let mut h = harness_with(s);
    h.answer_poll(Ok(batch(
        true,
        &[
            ("192.0.2.5", 1, 3600),     // inside the allowlisted /28
            ("192.0.2.0/24", 2, 3600),  // covers the allowlisted /28: skipped whole
            ("0.0.0.0/0", 3, 3600),     // wider than /8
            ("2001:db8:1::9", 4, 3600), // allowlisted IPv6
            ("::/0", 5, 3600),          // wider than /32
            ("198.51.100.7", 6, 3600),  // enforced
        ],
    )));
    assert_eq!(listed(&h, Family::V4), ["198.51.100.7"]);
    assert!(listed(&h, Family::V6).is_empty());
    assert_eq!(skipped(&h, "allowlist"), 3.0);
    assert_eq!(skipped(&h, "range-v4"), 1.0);
    assert_eq!(skipped(&h, "range-v6"), 1.0);
    let report = h.sup.health(h.now).skipped;
    assert!(
        report.recent.iter().any(|r| r == "0.0.0.0/0: range-v4"),
        "{report:?}"
    );
    // A new allowlisted ban on a fresh view: skipped as well.
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(batch(false, &[("192.0.2.6", 7, 3600)])));
    assert_eq!(listed(&h, Family::V4), ["198.51.100.7"]);
    assert_eq!(skipped(&h, "allowlist"), 4.0);
}

#[test]
fn an_admin_session_address_is_banned_only_after_the_session_ends() {
    let mut h = harness();
    h.router.sessions = vec!["203.0.113.50".parse().unwrap()];
    h.answer_poll(Ok(batch(true, &[("198.51.100.1", 1, 3600)])));
    // The owner is logged in from 203.0.113.50: a list update banning it is not enforced.
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(batch(false, &[("203.0.113.50", 2, 3600)])));
    assert_eq!(listed(&h, Family::V4), ["198.51.100.1"]);
    assert_eq!(skipped(&h, "admin-session"), 1.0);
    // The session ends; the next /user/active read lifts the protection and the ban lands.
    h.router.sessions.clear();
    h.advance(HOUSEKEEPING + Duration::from_secs(1));
    assert_eq!(listed(&h, Family::V4), ["198.51.100.1", "203.0.113.50"]);
    // A new session from a banned address: its entry is removed at the next read.
    h.router.sessions = vec!["198.51.100.1".parse().unwrap()];
    h.advance(HOUSEKEEPING + Duration::from_secs(1));
    assert_eq!(listed(&h, Family::V4), ["203.0.113.50"]);
}

#[test]
fn new_bans_wait_for_a_fresh_read_of_the_admin_sessions() {
    let mut h = synced(&[]);
    // A session starts between two housekeeping reads ...
    h.router.sessions = vec!["203.0.113.9".parse().unwrap()];
    h.advance(Duration::from_secs(20));
    let reads = h.count(|a| matches!(a, Action::ReadSessions { .. }));
    // ... and a ban of its address arrives: the sessions are read before the write.
    h.answer_poll(Ok(batch(false, &[("203.0.113.9", 1, 3600)])));
    assert_eq!(
        h.count(|a| matches!(a, Action::ReadSessions { .. })),
        reads + 1
    );
    assert!(listed(&h, Family::V4).is_empty());
    // Not even briefly: the add planned before the read is dropped, never sent and removed.
    let sent = h.log.iter().any(|a| {
        matches!(a, Action::Send { ops, .. } if ops.iter().any(|op| {
            matches!(op, Op::Add { .. }) && op.value().to_string() == "203.0.113.9"
        }))
    });
    assert!(!sent, "the owner's address was written to the router");
}

#[test]
fn the_budget_keeps_the_highest_priority_and_a_local_ban_displaces_capi() {
    let mut s = settings();
    s.max_entries = MaxEntries::Fixed(1000);
    let mut h = harness_with(s);
    let mut bans = Vec::new();
    let origins = ["CAPI", "lists:firehol", "cscli"];
    let addrs: Vec<String> = (0..3000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        bans.push((a.as_str(), i as i64 + 1, 3600 + i as i64, origins[i % 3]));
    }
    h.answer_poll(Ok(origin_batch(true, &bans)));
    let on: std::collections::BTreeSet<String> = listed(&h, Family::V4).into_iter().collect();
    let local: std::collections::BTreeSet<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 2)
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(on, local, "exactly the 1000 local bans");
    assert_eq!(h.router.writes, 1000);
    assert_eq!(h.sup.health(h.now).skipped.budget, Some((1000, 2000)));
    // Room for one more after a local ban ends: the best blocklist ban (the longest) comes in.
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(unban(&addrs[2], 3)));
    assert!(
        listed(&h, Family::V4).contains(&addrs[2998]),
        "the longest blocklist ban is promoted"
    );
    // A new local ban when full: it displaces the weakest entry (the promoted blocklist one).
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(origin_batch(
        false,
        &[("198.51.100.77", 9000, 600, "crowdsec")],
    )));
    let now_on = listed(&h, Family::V4);
    assert_eq!(now_on.len(), 1000);
    assert!(now_on.contains(&"198.51.100.77".to_owned()));
    assert!(!now_on.contains(&addrs[2998]));
}

#[test]
fn the_derived_budget_waits_for_the_router_memory() {
    let mut s = settings();
    s.max_entries = MaxEntries::Auto;
    let now = Instant::now();
    let mut h = Harness::new(Supervisor::new(s, Arc::new(Metrics::new()), 7, now), now);
    h.router.memory = (256 << 20, 200 << 20);
    h.step();
    // A new connection reads /system/resource before the first reconcile writes anything.
    h.answer_poll(Ok(batch(true, &[("198.51.100.1", 1, 3600)])));
    let first_resource = h
        .log
        .iter()
        .position(|a| matches!(a, Action::ReadResource { .. }))
        .unwrap();
    let first_send = h
        .log
        .iter()
        .position(|a| matches!(a, Action::Send { .. }))
        .unwrap();
    assert!(first_resource < first_send);
    assert_eq!(
        h.sup.policy.budget().limit(),
        Some(budget_for(256 << 20, 200 << 20))
    );
    assert_eq!(budget_for(256 << 20, 200 << 20), 67_000);
    assert_eq!(budget_for(1 << 30, 800 << 20), 268_000);
    assert_eq!(budget_for(16 << 20, 1 << 20), 1000, "never below 1000");
}

#[test]
fn low_router_memory_is_a_health_warning() {
    let mut h = synced(&[]);
    h.router.memory = (256 << 20, 10 << 20);
    h.advance(HOUSEKEEPING + Duration::from_secs(1));
    let w = h.sup.health(h.now).warnings;
    assert!(w.iter().any(|w| w.contains("memory is low")), "{w:?}");
    assert_eq!(
        h.sup
            .metrics
            .value(metrics::ROUTER_MEMORY, &[("kind", "free")]),
        Some((10u64 << 20) as f64)
    );
}

#[test]
fn ipv6_bans_are_enforced_per_prefix_and_counted_by_reference() {
    let mut s = settings();
    s.ipv6_prefix = 64;
    let mut h = harness_with(s);
    h.answer_poll(Ok(batch(
        true,
        &[("2001:db8:5::1", 1, 3600), ("2001:db8:5::2", 2, 3600)],
    )));
    assert_eq!(listed(&h, Family::V6), ["2001:db8:5::/64"]);
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(unban("2001:db8:5::1", 1)));
    assert_eq!(
        listed(&h, Family::V6),
        ["2001:db8:5::/64"],
        "one ban still inside"
    );
    h.advance(Duration::from_secs(10));
    h.answer_poll(Ok(unban("2001:db8:5::2", 2)));
    assert!(listed(&h, Family::V6).is_empty(), "the last one ended");
}

mod budget_model {
    //! With a budget, the router holds exactly the top N of the desired set after every update.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn the_router_holds_the_top_n(
            steps in proptest::collection::vec((0u32..60, 0usize..4, 600i64..100_000, any::<bool>()), 1..40),
            limit in 1usize..30,
        ) {
            let origins = ["CAPI", "lists:x", "console", "cscli"];
            let mut s = settings();
            s.max_entries = MaxEntries::Fixed(limit);
            let mut h = harness_with(s);
            h.answer_poll(Ok(Batch::new(true)));
            // value -> (class, end, id)
            let mut desired: std::collections::BTreeMap<u32, (u8, Instant, i64)> = Default::default();
            let mut next_id = 1i64;
            for (host, o, secs, ban) in steps {
                let value = std::net::Ipv4Addr::from(0x0a00_0000 + host).to_string();
                h.advance(Duration::from_secs(10));
                let b = if ban {
                    // Distinct ends: the order within a class never falls to the tie-break.
                    let secs = secs * 64 + i64::from(host);
                    let end = h.now + Duration::from_secs(secs as u64);
                    let class = class(origins[o]);
                    // The cache keeps the origin of the decision that ends last.
                    match desired.get_mut(&host) {
                        Some(e) if end <= e.1 => {}
                        Some(e) => *e = (class, end, next_id),
                        None => {
                            desired.insert(host, (class, end, next_id));
                        }
                    }
                    next_id += 1;
                    origin_batch(false, &[(&value, next_id - 1, secs, origins[o])])
                } else {
                    let Some((_, _, id)) = desired.remove(&host) else { continue };
                    // Every decision of the value goes.
                    let mut b = Batch::new(false);
                    for i in 1..next_id {
                        b.push_deleted(Deletion { value: v(&value), id: i });
                    }
                    let _ = id;
                    b
                };
                h.answer_poll(Ok(b));
                h.advance(Duration::from_secs(1));
                let mut ranked: Vec<(u8, Instant, u32)> =
                    desired.iter().map(|(h, (c, e, _))| (*c, *e, *h)).collect();
                ranked.sort();
                ranked.reverse();
                let mut want: Vec<String> = ranked
                    .into_iter()
                    .take(limit)
                    .map(|(_, _, h)| std::net::Ipv4Addr::from(0x0a00_0000 + h).to_string())
                    .collect();
                want.sort_by_key(|a| a.parse::<std::net::Ipv4Addr>().unwrap());
                let mut got = listed(&h, Family::V4);
                got.sort_by_key(|a| a.parse::<std::net::Ipv4Addr>().unwrap());
                prop_assert_eq!(got, want);
            }
        }

        /// No value flaps at the boundary: in every update, the router gets an `add` only for a
        /// value that entered the top N and a `remove` only for one that left it, and the router
        /// holds the top N after it.
        #[test]
        fn only_values_crossing_the_boundary_are_written(
            steps in proptest::collection::vec((0u32..40, 0usize..4, 600i64..100_000, 0u8..4), 1..50),
            limit in 1usize..20,
        ) {
            let origins = ["CAPI", "lists:x", "console", "cscli"];
            let mut s = settings();
            s.max_entries = MaxEntries::Fixed(limit);
            let mut h = harness_with(s);
            h.answer_poll(Ok(Batch::new(true)));
            let addr = |host: u32| std::net::Ipv4Addr::from(0x0a00_0000 + host).to_string();
            // value -> (class, end); every decision id ever sent per value.
            let mut desired: std::collections::BTreeMap<u32, (u8, Instant)> = Default::default();
            let mut ids: std::collections::BTreeMap<u32, Vec<i64>> = Default::default();
            let mut next_id = 1i64;
            let mut top: std::collections::BTreeSet<String> = Default::default();
            for (host, o, secs, what) in steps {
                h.advance(Duration::from_secs(10));
                let value = addr(host);
                // Three bans (new, or a longer or shorter one on the same value) for one unban.
                let b = if what < 3 {
                    let secs = secs * 64 + i64::from(host);
                    let end = h.now + Duration::from_secs(secs as u64);
                    let class = class(origins[o]);
                    match desired.get_mut(&host) {
                        Some(e) if end <= e.1 => {}
                        Some(e) => *e = (class, end),
                        None => {
                            desired.insert(host, (class, end));
                        }
                    }
                    ids.entry(host).or_default().push(next_id);
                    next_id += 1;
                    origin_batch(false, &[(&value, next_id - 1, secs, origins[o])])
                } else {
                    if desired.remove(&host).is_none() {
                        continue;
                    }
                    let mut b = Batch::new(false);
                    for id in ids.remove(&host).unwrap_or_default() {
                        b.push_deleted(Deletion { value: v(&value), id });
                    }
                    b
                };
                let from = h.log.len();
                h.answer_poll(Ok(b));
                h.advance(Duration::from_secs(1));
                let mut ranked: Vec<(u8, Instant, u32)> =
                    desired.iter().map(|(h, (c, e))| (*c, *e, *h)).collect();
                ranked.sort();
                ranked.reverse();
                let new_top: std::collections::BTreeSet<String> =
                    ranked.into_iter().take(limit).map(|(_, _, h)| addr(h)).collect();
                let (mut added, mut removed) = (Vec::new(), Vec::new());
                for a in &h.log[from..] {
                    if let Action::Send { ops, .. } = a {
                        for op in ops {
                            match op {
                                Op::Add { value, .. } => added.push(value.to_string()),
                                Op::Remove { value, .. } => removed.push(value.to_string()),
                                _ => {}
                            }
                        }
                    }
                }
                let entered: Vec<String> = new_top.difference(&top).cloned().collect();
                let left: Vec<String> = top.difference(&new_top).cloned().collect();
                added.sort();
                removed.sort();
                prop_assert_eq!(added, entered, "adds are exactly the values that entered");
                prop_assert_eq!(removed, left, "removes are exactly the values that left");
                let got: std::collections::BTreeSet<String> =
                    listed(&h, Family::V4).into_iter().collect();
                prop_assert_eq!(&got, &new_top);
                top = new_top;
            }
        }
    }
}

// === guard (issue 13) ===

fn failures(from: &str, n: u32) -> Vec<guard::LogRow> {
    (0..n)
        .map(|i| guard::LogRow {
            id: None,
            time: String::new(),
            topics: "system,error,critical".into(),
            message: format!("login failure for user admin{i} from {from} via ssh"),
        })
        .collect()
}

fn guard_settings(share: bool) -> Settings {
    let mut s = quiet_settings();
    s.guard = Some(crate::guard::Settings::default());
    s.share = share;
    s
}

const T0_MS: u64 = 1_790_000_000_000;

/// Ten failed logins within two seconds, as the follower delivers them.
fn attack(h: &mut Harness, from: &str) {
    for (i, row) in failures(from, 10).into_iter().enumerate() {
        let event = Event::Log {
            rows: vec![row],
            backfill: false,
            now_ms: T0_MS + i as u64 * 200,
        };
        h.sup.handle(h.now, event);
        h.step();
    }
}

#[test]
fn ten_failed_logins_in_two_seconds_are_banned_at_once() {
    let mut h = synced_with(guard_settings(false), &[]);
    let writes = h.count(|a| matches!(a, Action::Send { .. }));
    attack(&mut h, "203.0.113.66");
    assert_eq!(listed(&h, Family::V4), ["203.0.113.66"]);
    assert_eq!(
        h.count(|a| matches!(a, Action::Send { .. })),
        writes + 1,
        "one write"
    );
    let e = h
        .router
        .entries(Family::V4)
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(e.comment.as_deref(), Some("tikban guard:login-bf"));
    let left = e.expires.unwrap() - h.now;
    assert!(
        left > Duration::from_secs(4 * 3600 - 5),
        "GUARD_BAN_DURATION: {left:?}"
    );
    // Three failures in ten minutes: no ban.
    for i in 0..3u64 {
        let event = Event::Log {
            rows: failures("198.51.100.3", 1),
            backfill: false,
            now_ms: T0_MS + 10_000 + i * 200_000,
        };
        h.sup.handle(h.now, event);
        h.step();
    }
    assert_eq!(listed(&h, Family::V4), ["203.0.113.66"]);
}

#[test]
fn guard_never_bans_a_protected_address() {
    let mut s = guard_settings(false);
    s.safety.allowlist = crate::safety::AddrSet::parse("192.0.2.0/24").unwrap();
    let mut h = synced_with(s, &[]);
    // tikban's own address, as a wrong MIKROTIK_PASS makes the router log it.
    h.sup.protect(
        h.now,
        crate::safety::Kind::Own,
        ["172.17.0.2".parse::<std::net::IpAddr>().unwrap()],
    );
    attack(&mut h, "172.17.0.2");
    attack(&mut h, "192.0.2.9");
    attack(&mut h, "127.0.0.1");
    assert!(listed(&h, Family::V4).is_empty());
    assert_eq!(
        h.sup.metrics.value(
            metrics::GUARD_BANS,
            &[("scenario", "tikban/routeros-login-bf")]
        ),
        None
    );
}

#[test]
fn a_guard_ban_lands_while_lapi_is_down_and_survives_its_return() {
    let now = Instant::now();
    let sup = Supervisor::new(guard_settings(false), Arc::new(Metrics::new()), 7, now);
    let mut h = Harness::new(sup, now);
    // An entry of tikban's the unknown desired state might or might not want: it must stay.
    h.router.insert(
        Family::V4,
        crate::model::Entry {
            list: "crowdsec-banned".into(),
            address: "198.51.100.200".into(),
            expires: Some(now + Duration::from_secs(3600)),
            comment: Some("tikban cscli".into()),
        },
    );
    h.step();
    h.answer_poll(Err(down()));
    attack(&mut h, "203.0.113.70");
    assert_eq!(
        listed(&h, Family::V4),
        ["198.51.100.200", "203.0.113.70"],
        "additive: nothing removed"
    );
    // LAPI comes back with the alert's decision for the same address: still one entry, and
    // the leftover it does not want goes now that the desired state is known.
    while !h.lapi.iter().any(|a| matches!(a, Action::Poll { .. })) {
        h.advance(Duration::from_secs(1));
    }
    let writes = h.router.ops.get("add").copied();
    h.answer_poll(Ok(origin_batch(
        true,
        &[("203.0.113.70", 1, 4 * 3600, "crowdsec")],
    )));
    assert_eq!(listed(&h, Family::V4), ["203.0.113.70"]);
    assert_eq!(h.router.ops.get("add").copied(), writes, "no second write");
}

#[test]
fn a_backfill_after_a_reconnect_does_not_count_rows_twice() {
    let mut h = synced_with(guard_settings(false), &[]);
    let rows = |ids: std::ops::Range<u32>| -> Vec<guard::LogRow> {
        ids.map(|i| guard::LogRow {
            id: Some(i),
            time: format!("12:00:{:02}", i),
            topics: "system,error,critical".into(),
            message: "login failure for user root from 203.0.113.80 via ssh".into(),
        })
        .collect()
    };
    // Four failures live, then the follower reconnects and re-reads them with two new ones: six
    // failures in all, one short of a ban (capacity 5: the sixth overflows... the seventh with
    // leaks); the re-read rows must not be counted again.
    for r in rows(1..5) {
        h.sup.handle(
            h.now,
            Event::Log {
                rows: vec![r],
                backfill: false,
                now_ms: T0_MS,
            },
        );
    }
    h.sup.handle(
        h.now,
        Event::Log {
            rows: rows(1..6),
            backfill: true,
            now_ms: T0_MS + 1000,
        },
    );
    h.step();
    assert!(listed(&h, Family::V4).is_empty(), "5 failures: not yet");
    h.sup.handle(
        h.now,
        Event::Log {
            rows: rows(6..7),
            backfill: false,
            now_ms: T0_MS + 1500,
        },
    );
    h.step();
    assert_eq!(
        listed(&h, Family::V4),
        ["203.0.113.80"],
        "the 6th failure overflows"
    );
}

#[test]
fn guard_bans_are_shared_as_alerts_and_retried() {
    let mut h = synced_with(guard_settings(true), &[]);
    attack(&mut h, "203.0.113.90");
    let alerts = |h: &Harness| {
        h.lapi
            .iter()
            .filter(|a| matches!(a, Action::PushAlerts(_)))
            .count()
    };
    assert_eq!(alerts(&h), 1);
    let Some(Action::PushAlerts(batch)) = h
        .lapi
        .iter()
        .find(|a| matches!(a, Action::PushAlerts(_)))
        .cloned()
    else {
        unreachable!()
    };
    assert_eq!(batch[0].source.value, "203.0.113.90");
    assert_eq!(batch[0].scenario, "tikban/routeros-login-bf");
    // LAPI is down: the push fails and comes again later, with the same alert.
    h.lapi.retain(|a| !matches!(a, Action::PushAlerts(_)));
    h.sup.handle(
        h.now,
        Event::AlertsPushed(Err(Failure::new(FailureKind::Timeout, "down"))),
    );
    h.step();
    assert_eq!(alerts(&h), 0, "not at once");
    h.advance(Duration::from_secs(30));
    assert_eq!(alerts(&h), 1, "retried");
}
