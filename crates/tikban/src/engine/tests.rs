//! Engine unit tests, and the model-based property test against a model router.

use super::*;
use crowdsec_lapi::{Batch, BatchAdd, Change, DecisionCache, Deletion, GoDuration};

fn rid(n: u32) -> RouterId {
    RouterId::new(n).unwrap()
}

#[test]
fn held_entries_stay_small() {
    assert_eq!(std::mem::size_of::<Option<RouterId>>(), 4);
    assert_eq!(
        std::mem::size_of::<Held>(),
        12,
        "16 bytes a slot with its IPv4 key"
    );
}

fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}

fn engine(now: Instant) -> Engine {
    Engine::new(
        EngineConfig {
            lists: [
                Some("crowdsec-banned".into()),
                Some("crowdsec6-banned".into()),
            ],
            prefix: "tikban".into(),
            refresh_margin: Duration::from_secs(300),
            row_slack: reconcile::ROW_SLACK,
            max_removals: reconcile::MAX_REMOVALS,
        },
        now,
    )
}

fn ban(cache: &mut DecisionCache, value: &str, id: i64, secs: i64, now: Instant) -> Vec<Change> {
    let mut b = Batch::new(false);
    b.push_add(BatchAdd {
        value: v(value),
        id,
        duration: GoDuration::from_secs(secs),
        origin: Label::new("cscli"),
    });
    cache.apply(&b, now)
}

fn unban(cache: &mut DecisionCache, value: &str, id: i64, now: Instant) -> Vec<Change> {
    let mut b = Batch::new(false);
    b.push_deleted(Deletion {
        value: v(value),
        id,
    });
    cache.apply(&b, now)
}

#[test]
fn one_add_per_new_value_then_remove_by_recorded_id() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.1", 1, 3600, t0), t0);
    assert_eq!(
        ops,
        [Op::Add {
            value: v("192.0.2.1"),
            timeout: 3600,
            origin: Label::new("cscli")
        }]
    );
    assert!(
        e.on_outcome(&ops[0], Outcome::Done(Some(rid(0x1A))), &cache, t0)
            .is_empty()
    );
    let ops = e.plan_changes(&unban(&mut cache, "192.0.2.1", 1, t0), t0);
    assert_eq!(
        ops,
        [Op::Remove {
            value: v("192.0.2.1"),
            id: rid(0x1A),
            orphan: false,
        }]
    );
    assert!(
        e.on_outcome(&ops[0], Outcome::Done(None), &cache, t0)
            .is_empty()
    );
    assert_eq!(e.owned_count(Family::V4), 0);
}

#[test]
fn re_insert_with_later_expiry_writes_nothing_until_shortly_before_router_timeout() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.1", 1, 4 * 3600, t0), t0);
    e.on_outcome(&ops[0], Outcome::Done(Some(rid(1))), &cache, t0);
    // LAPI 1.4.6 re-inserts the community list every 2 h with a new id and a later expiry.
    let t2h = t0 + Duration::from_secs(2 * 3600);
    let changes = ban(&mut cache, "192.0.2.1", 2, 4 * 3600, t2h);
    assert!(matches!(changes[..], [Change::ExpiryChanged { .. }]));
    assert!(e.plan_changes(&changes, t2h).is_empty());
    assert!(e.plan_tick(&cache, t2h).is_empty());
    // 4 minutes before the router entry ends: one refresh with the remaining 2 h.
    let t_due = t0 + Duration::from_secs(4 * 3600 - 240);
    let ops = e.plan_tick(&cache, t_due);
    assert_eq!(
        ops,
        [Op::Refresh {
            value: v("192.0.2.1"),
            id: rid(1),
            timeout: 2 * 3600 + 240
        }]
    );
    e.on_outcome(&ops[0], Outcome::Done(None), &cache, t_due);
    assert!(
        e.plan_tick(&cache, t_due).is_empty(),
        "one refresh, not one per tick"
    );
}

#[test]
fn long_bans_are_clamped_then_refreshed_before_the_router_drops_them() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let year = 365 * 24 * 3600;
    let ops = e.plan_changes(&ban(&mut cache, "2001:db8::1", 1, year, t0), t0);
    assert!(matches!(
        ops[0],
        Op::Add {
            timeout: MAX_TIMEOUT_SECS,
            ..
        }
    ));
    e.on_outcome(&ops[0], Outcome::Done(Some(rid(7))), &cache, t0);
    let before_end = t0 + Duration::from_secs(MAX_TIMEOUT_SECS - 60);
    let ops = e.plan_tick(&cache, before_end);
    let Op::Refresh { timeout, .. } = ops[0] else {
        panic!("{ops:?}")
    };
    // The year-long ban has ~116 days left: the refresh carries exactly that.
    assert_eq!(timeout, year as u64 - (MAX_TIMEOUT_SECS - 60));
}

#[test]
fn a_shorter_decision_ending_does_not_unban() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.9", 1, 60, t0), t0);
    e.on_outcome(&ops[0], Outcome::Done(Some(rid(2))), &cache, t0);
    assert!(
        e.plan_changes(&ban(&mut cache, "192.0.2.9", 2, 7200, t0), t0)
            .is_empty()
    );
    let later = t0 + Duration::from_secs(61);
    assert!(e.plan_changes(&cache.expire(later), later).is_empty());
    // The router entry (60 s) has run out by now while the 2 h ban holds: refresh it.
    let ops = e.plan_tick(&cache, later);
    assert!(matches!(ops[..], [Op::Refresh { .. }]), "{ops:?}");
    e.on_outcome(&ops[0], Outcome::NoSuchItem, &cache, later);
}

#[test]
fn a_ban_that_runs_out_is_not_removed_by_hand() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.11", 1, 600, t0), t0);
    e.on_outcome(&ops[0], Outcome::Done(Some(rid(11))), &cache, t0);
    // The router entry got the same 600 s; both end together: no write.
    let end = t0 + Duration::from_secs(600);
    let changes = cache.expire(end);
    assert!(matches!(changes[..], [Change::Removed { .. }]));
    assert!(e.plan_changes(&changes, end).is_empty());
    assert_eq!(e.owned_count(Family::V4), 0);
    // A deletion long before the end still removes.
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.12", 2, 600, end), end);
    e.on_outcome(&ops[0], Outcome::Done(Some(rid(12))), &cache, end);
    let later = end + Duration::from_secs(60);
    let ops = e.plan_changes(&unban(&mut cache, "192.0.2.12", 2, later), later);
    assert_eq!(
        ops,
        [Op::Remove {
            value: v("192.0.2.12"),
            id: rid(12),
            orphan: false,
        }]
    );
}

#[test]
fn plan_missing_resumes_and_covers_every_value_once() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    for i in 0..1000u32 {
        ban(
            &mut cache,
            &format!("10.1.{}.{}", i / 250, i % 250 + 1),
            i64::from(i),
            600,
            t0,
        );
    }
    e.begin_reconcile(Family::V4, &cache);
    assert!(e.finish_reconcile(&cache).ops.is_empty());
    let mut seen = std::collections::HashSet::new();
    loop {
        let ops = e.plan_missing(&cache, t0, 64);
        if ops.is_empty() {
            break;
        }
        assert!(ops.len() <= 64);
        for op in &ops {
            assert!(seen.insert(*op.value()), "{op:?} planned twice");
            e.on_outcome(op, Outcome::Done(Some(rid(seen.len() as u32))), &cache, t0);
        }
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(e.owned_count(Family::V4), 1000);
}

#[test]
fn duplicate_is_adopted_via_lookup() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.3", 1, 600, t0), t0);
    let follow = e.on_outcome(&ops[0], Outcome::Duplicate, &cache, t0);
    assert_eq!(
        follow,
        [Op::Lookup {
            value: v("192.0.2.3")
        }]
    );
    let row = RouterRow {
        id: "*2F".into(),
        address: "192.0.2.3".into(),
        timeout: Some(Duration::from_secs(500)),
        comment: Some("tikban CAPI".into()),
    };
    assert!(
        e.on_outcome(&follow[0], Outcome::Rows(vec![row]), &cache, t0)
            .is_empty()
    );
    let ops = e.plan_changes(&unban(&mut cache, "192.0.2.3", 1, t0), t0);
    assert_eq!(
        ops,
        [Op::Remove {
            value: v("192.0.2.3"),
            id: rid(0x2F),
            orphan: false,
        }]
    );
}

#[test]
fn manual_entries_are_never_touched() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    ban(&mut cache, "192.0.2.5", 1, 600, t0);
    let rows = vec![
        RouterRow {
            id: "*1".into(),
            address: "192.0.2.5".into(),
            timeout: None,
            comment: Some("my own block".into()),
        },
        RouterRow {
            id: "*2".into(),
            address: "198.51.100.1".into(),
            timeout: None,
            comment: Some("tikbanner".into()),
        },
        RouterRow {
            id: "*3".into(),
            address: "198.51.100.2".into(),
            timeout: None,
            comment: None,
        },
    ];
    assert!(e.reconcile(Family::V4, rows, &cache, t0).is_empty());
    // The ban ends: the manual entry that enforced it stays.
    assert!(
        e.plan_changes(&unban(&mut cache, "192.0.2.5", 1, t0), t0)
            .is_empty()
    );
}

#[test]
fn reconcile_writes_only_the_difference() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    ban(&mut cache, "192.0.2.1", 1, 600, t0);
    ban(&mut cache, "2001:DB8::1", 2, 600, t0);
    ban(&mut cache, "192.0.2.0/24", 3, 600, t0);
    let row = |id: &str, addr: &str, comment: &str| RouterRow {
        id: id.into(),
        address: addr.into(),
        timeout: Some(Duration::from_secs(30)),
        comment: Some(comment.into()),
    };
    let v4 = vec![
        row("*1", "192.0.2.1", "tikban cscli"), // held correctly (short timeout: no rewrite)
        row("*2", "203.0.113.9", "tikban CAPI"), // ours, no longer banned
        row("*3", "not an address", "tikban"),  // ours, garbage
    ];
    let ops = e.reconcile(Family::V4, v4, &cache, t0);
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(matches!(ops[0], Op::Remove { id, .. } if id == rid(2)));
    assert!(matches!(ops[1], Op::Remove { id, .. } if id == rid(3)));
    assert!(matches!(&ops[2], Op::Add { value, .. } if *value == v("192.0.2.0/24")));
    let v6 = vec![row("*9", "2001:db8::1/128", "tikban cscli")];
    assert!(
        e.reconcile(Family::V6, v6, &cache, t0).is_empty(),
        "/128 matches the plain host"
    );
}

#[test]
fn a_warm_restart_writes_nothing() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let mut rows = Vec::new();
    for i in 0..200u32 {
        let addr = format!("10.0.{}.{}", i / 250, i % 250 + 1);
        ban(&mut cache, &addr, i64::from(i), 3600, t0);
        rows.push(RouterRow {
            id: format!("*{:X}", i + 1),
            address: addr,
            timeout: Some(Duration::from_secs(3590)),
            comment: Some("tikban cscli".into()),
        });
    }
    assert!(e.reconcile(Family::V4, rows, &cache, t0).is_empty());
    assert!(e.reconcile(Family::V6, vec![], &cache, t0).is_empty());
    assert_eq!(e.owned_count(Family::V4), 200);
}

/// Issue 17 item 2: what router rows feed is bounded. One reconcile queues at most
/// `max_removals` removals of unwanted owned rows (the rest are deferred to the next reconcile),
/// and a print longer than `row_limit` (2 × cache + slack) is abandoned with the old view kept.
#[test]
fn router_rows_bound_the_removals_queued_and_the_rows_of_a_print() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    ban(&mut cache, "192.0.2.1", 1, 3600, t0);
    let mut e = engine(t0);
    e.config.max_removals = 10;
    let row = |i: u32, addr: &str| RouterRow {
        id: format!("*{:X}", i + 1),
        address: addr.into(),
        timeout: Some(Duration::from_secs(3590)),
        comment: Some("tikban cscli".into()),
    };
    e.begin_reconcile(Family::V4, &cache);
    for i in 0..25u32 {
        let unwanted = row(i, &format!("203.0.113.{i}"));
        e.reconcile_row(unwanted, &cache, t0).unwrap();
    }
    let done = e.finish_reconcile(&cache);
    assert_eq!((done.ops.len(), done.deferred), (10, 15), "{done:?}");
    assert!(done.ops.iter().all(|op| matches!(op, Op::Remove { .. })));

    e.set_row_slack(5);
    let limit = reconcile::row_limit(cache.len(), 5);
    assert_eq!(limit, 7);
    e.begin_reconcile(Family::V4, &cache);
    e.reconcile_row(row(100, "192.0.2.1"), &cache, t0).unwrap();
    for i in 1..limit as u32 {
        e.reconcile_row(row(100 + i, "198.51.100.1"), &cache, t0)
            .unwrap();
    }
    let err = e
        .reconcile_row(row(200, "198.51.100.1"), &cache, t0)
        .unwrap_err();
    assert_eq!(
        err,
        ReconcileError::TooManyRows {
            family: Family::V4,
            limit: 7
        }
    );
    assert!(
        err.to_string().contains("abandoning the reconcile"),
        "{err}"
    );
    e.abandon_reconcile();
    // The view of the first reconcile stays: it did not hold 192.0.2.1.
    assert_eq!(e.owned_count(Family::V4), 0);
}

#[test]
fn removal_during_an_inflight_add_is_applied_after_the_add() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let add = e.plan_changes(&ban(&mut cache, "192.0.2.4", 1, 600, t0), t0);
    assert!(
        e.plan_changes(&unban(&mut cache, "192.0.2.4", 1, t0), t0)
            .is_empty()
    );
    let follow = e.on_outcome(&add[0], Outcome::Done(Some(rid(4))), &cache, t0);
    assert_eq!(
        follow,
        [Op::Remove {
            value: v("192.0.2.4"),
            id: rid(4),
            orphan: false,
        }]
    );
}

#[test]
fn traps_are_retried_on_the_next_tick_and_losses_clear_pending() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let add = e.plan_changes(&ban(&mut cache, "192.0.2.8", 1, 600, t0), t0);
    assert!(
        e.on_outcome(
            &add[0],
            Outcome::Trap("failure: simulated fault".into()),
            &cache,
            t0
        )
        .is_empty()
    );
    let again = e.plan_tick(&cache, t0);
    assert!(matches!(again[..], [Op::Add { .. }]), "{again:?}");
    assert!(
        e.on_outcome(&again[0], Outcome::Lost, &cache, t0)
            .is_empty()
    );
    // A timeout is retried like a trap.
    let ops = e.plan_changes(&ban(&mut cache, "192.0.2.9", 2, 600, t0), t0);
    assert!(
        e.on_outcome(&ops[0], Outcome::Timeout, &cache, t0)
            .is_empty()
    );
    assert!(
        e.plan_tick(&cache, t0)
            .iter()
            .any(|op| matches!(op, Op::Add { value, .. } if *value == v("192.0.2.9")))
    );
}

#[test]
fn disabled_family_is_ignored_and_ownership_needs_prefix_and_space() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = Engine::new(
        EngineConfig {
            lists: [Some("l4".into()), None],
            prefix: "tikban".into(),
            refresh_margin: Duration::from_secs(60),
            row_slack: reconcile::ROW_SLACK,
            max_removals: reconcile::MAX_REMOVALS,
        },
        t0,
    );
    assert!(
        e.plan_changes(&ban(&mut cache, "2001:db8::5", 1, 60, t0), t0)
            .is_empty()
    );
    assert!(e.is_owned(Some("tikban")));
    assert!(e.is_owned(Some("tikban CAPI")));
    assert!(!e.is_owned(Some("tikban-other CAPI")));
    assert!(!e.is_owned(None));
    assert_eq!(e.comment("lists:fire hol/x"), "tikban lists:fire_hol_x");
}

#[test]
fn timeouts_round_up_and_clamp() {
    assert_eq!(clamp_secs(Duration::from_millis(400)), 1);
    assert_eq!(clamp_secs(Duration::from_millis(1001)), 2);
    assert_eq!(clamp_secs(Duration::ZERO), 1);
    assert_eq!(
        clamp_secs(Duration::from_secs(u64::MAX / 2)),
        MAX_TIMEOUT_SECS
    );
    assert_eq!(RouterId::parse("*1A"), Some(rid(0x1A)));
    assert_eq!(rid(0x1A).to_string(), "*1A");
    assert_eq!(RouterId::parse("1A"), None);
    assert_eq!(RouterId::parse("*0"), None);
}

#[test]
fn tally_formats_the_batch_line() {
    let t = Tally {
        added: [120, 2],
        removed: [3, 0],
        refreshed: [0, 0],
    };
    assert_eq!(t.to_string(), "+120 -3 v4, +2 v6");
    assert_eq!(Tally::default().to_string(), "no changes");
}

#[test]
fn orphan_removes_leave_the_value_they_resemble_alone() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    ban(&mut cache, "192.0.2.7", 1, 3600, t0);
    let row = |id: &str, addr: &str| RouterRow {
        id: id.into(),
        address: addr.into(),
        timeout: Some(Duration::from_secs(3000)),
        comment: Some("tikban cscli".into()),
    };
    // Two copies of one owned entry, and an owned row whose address does not parse.
    let ops = e.reconcile(
        Family::V4,
        vec![
            row("*1", "192.0.2.7"),
            row("*2", "192.0.2.7"),
            row("*3", "not an ip"),
        ],
        &cache,
        t0,
    );
    assert_eq!(ops.len(), 2, "{ops:?}");
    for op in &ops {
        assert!(matches!(op, Op::Remove { orphan: true, .. }), "{op:?}");
        // Whatever the outcome, the real entry *1 stays known.
        for outcome in [Outcome::Done(None), Outcome::NoSuchItem] {
            assert!(e.on_outcome(op, outcome, &cache, t0).is_empty());
        }
    }
    assert_eq!(e.owned_count(Family::V4), 1);
    // The unban removes the real entry, by its id.
    let ops = e.plan_changes(&unban(&mut cache, "192.0.2.7", 1, t0), t0);
    assert_eq!(
        ops,
        [Op::Remove {
            value: v("192.0.2.7"),
            id: rid(1),
            orphan: false
        }]
    );
}

#[test]
fn a_remove_that_cannot_be_built_keeps_the_entry_and_is_retried() {
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let mut e = engine(t0);
    let add = e.plan_changes(&ban(&mut cache, "192.0.2.8", 1, 3600, t0), t0);
    e.on_outcome(&add[0], Outcome::Done(Some(rid(8))), &cache, t0);
    let remove = e.plan_changes(&unban(&mut cache, "192.0.2.8", 1, t0), t0);
    let refused = wire::build_failed(&routeros_client::CommandError::ValueTooLong(usize::MAX));
    assert!(e.on_outcome(&remove[0], refused, &cache, t0).is_empty());
    assert_eq!(
        e.owned_count(Family::V4),
        1,
        "still on the router, still known"
    );
    assert_eq!(e.plan_tick(&cache, t0), remove, "the remove is tried again");
}

mod model_based {
    //! The supervisor and engine against the model router with random faults (issue 12): they
    //! converge to the desired set, never touch an entry they do not own, and write at most once
    //! per change of the desired set.

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crowdsec_lapi::{Batch, BatchAdd, Deletion, GoDuration, Label, Value};
    use proptest::prelude::*;

    use crate::engine::Family;
    use crate::engine::wire::routeros_address;
    use crate::metrics::Metrics;
    use crate::model::{Entry, Faults, Harness};
    use crate::supervisor::{Action, Settings, Supervisor};

    #[derive(Debug, Clone)]
    enum Step {
        Ban(usize),
        Unban(usize),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..20).prop_map(Step::Ban),
            2 => (0usize..20).prop_map(Step::Unban),
            1 => (1u64..40).prop_map(Step::Wait),
        ]
    }

    fn value(i: usize) -> Value {
        if i < 16 {
            Value::parse(&format!("192.0.2.{}", i + 1)).unwrap()
        } else {
            Value::parse(&format!("2001:db8::{}", i)).unwrap()
        }
    }

    fn settings() -> Settings {
        Settings {
            update_frequency: Duration::from_secs(10),
            poll_timeout: Duration::from_secs(30),
            snapshot_timeout: Duration::from_secs(300),
            reconciliation_interval: Duration::from_secs(3600),
            metrics_interval: None,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            lists: [Some("v4".into()), Some("v6".into())],
            comment_prefix: "tikban".into(),
            safety: crate::safety::Settings::default(),
            max_entries: crate::supervisor::MaxEntries::Unlimited,
            ipv6_prefix: 128,
            guard: None,
            share: false,
        }
    }

    /// Waits for the next poll and answers it with `batch`.
    fn deliver(h: &mut Harness, batch: Batch) {
        for _ in 0..600 {
            if h.lapi.iter().any(|a| matches!(a, Action::Poll { .. })) {
                h.answer_poll(Ok(batch));
                return;
            }
            h.advance(Duration::from_secs(1));
        }
        panic!("no poll within 10 minutes");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn converges_touches_nothing_foreign_and_writes_once_per_change(
            steps in proptest::collection::vec(step(), 1..50),
            seed in any::<u64>(),
            percent in 0u64..35,
        ) {
            let t0 = Instant::now();
            let sup = Supervisor::new(settings(), Arc::new(Metrics::new()), seed, t0);
            let mut h = Harness::new(sup, t0);
            // Someone else's entries: a static block of value 0, and an unrelated one.
            let manual = [
                (Family::V4, Entry { list: "v4".into(), address: routeros_address(&value(0)), expires: None, comment: Some("my block".into()) }),
                (Family::V4, Entry { list: "v4".into(), address: "198.51.100.1".into(), expires: None, comment: None }),
            ];
            for (f, e) in &manual {
                h.router.insert(*f, e.clone());
            }
            h.faults = Some(Faults::new(seed, percent));
            h.step();
            deliver(&mut h, Batch::new(true));
            let mut desired: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
            let mut next_id = 1i64;
            let mut changes = 0u64;
            for s in steps {
                let before: BTreeSet<usize> = desired.keys().copied().collect();
                let mut batch = Batch::new(false);
                match s {
                    Step::Ban(i) => {
                        desired.entry(i).or_default().push(next_id);
                        batch.push_add(BatchAdd {
                            value: value(i),
                            id: next_id,
                            duration: GoDuration::from_secs(4 * 3600),
                            origin: Label::new("cscli"),
                        });
                        next_id += 1;
                    }
                    Step::Unban(i) => {
                        for id in desired.remove(&i).unwrap_or_default() {
                            batch.push_deleted(Deletion { value: value(i), id });
                        }
                    }
                    Step::Wait(secs) => {
                        h.advance(Duration::from_secs(secs));
                        continue;
                    }
                }
                deliver(&mut h, batch);
                let after: BTreeSet<usize> = desired.keys().copied().collect();
                changes += before.symmetric_difference(&after).count() as u64;
            }
            // Faults stop; give the supervisor time to retry, reconnect and reconcile.
            h.faults = None;
            for _ in 0..12 {
                deliver(&mut h, Batch::new(false));
            }
            let owned: BTreeSet<String> = Family::ALL
                .into_iter()
                .flat_map(|f| h.router.entries(f).values().cloned().collect::<Vec<_>>())
                .filter(|e| e.comment.as_deref().is_some_and(|c| c.starts_with("tikban")))
                .map(|e| e.address)
                .collect();
            // Value 0 is enforced by the manual entry: tikban adds no copy of it.
            let expected: BTreeSet<String> = desired
                .keys()
                .filter(|i| **i != 0)
                .map(|i| routeros_address(&value(*i)))
                .collect();
            prop_assert_eq!(&owned, &expected);
            prop_assert_eq!(h.router.foreign_touched, 0);
            for (f, e) in &manual {
                prop_assert!(h.router.entries(*f).values().any(|x| x == e), "{:?} was changed", e);
            }
            prop_assert!(
                h.router.writes <= changes,
                "{} writes for {} changes", h.router.writes, changes
            );
        }
    }
}
