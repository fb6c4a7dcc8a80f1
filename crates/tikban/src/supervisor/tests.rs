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
    let mut h = harness();
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
    let mut h = synced(&[]);
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
    let mut h = synced(&[]);
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
        h.sup
            .handle(h.now, Event::Router(job, RouterEvent::Connected));
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
    let mut h = synced(&[]);
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
    h.sup
        .handle(h.now, Event::Router(job, RouterEvent::Connected));
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
    h.advance(Duration::from_secs(10));
    let bans: Vec<(String, i64, i64)> = (0..(MAX_PLANNED_CHANGES as i64 + 10))
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
