//! Scenario 3: a day of LAPI 1.4.6 churn, run in compressed time through tikban's real
//! [`Supervisor`] (and so its real `Engine` and `DecisionCache`), against a model router and two
//! baseline policies.
//!
//! This is a model run, not a wall-clock run: a synthetic event trace is cut into polls on a
//! simulated clock and fed to the supervisor as the answers to its own poll actions, through
//! [`tikban::model::Harness`], which answers its router actions with a model router (ids,
//! timeouts that run out). Nothing here re-implements the daemon's sequencing: the supervisor
//! decides when to write, refresh, reconcile (`RECONCILIATION_INTERVAL=1h`) and tick.
//!
//! The bound tikban is held to is computed without the engine: "real changes" (a value becomes
//! banned, or is unbanned by a delete; an expiry costs nothing because the router timeout ends
//! with the decision) plus the refreshes an oracle needs that refreshes each entry exactly when its
//! router timeout runs out while the decision still lasts, at most one per router-timeout period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crowdsec_lapi::{Batch, BatchAdd, Deletion, GoDuration, Label, Value};
use tikban::engine::MAX_TIMEOUT_SECS;
use tikban::metrics::Metrics;
use tikban::model::Harness;
use tikban::supervisor::{Action, Settings, Supervisor};

const HOUR: u64 = 3600;

/// The shape of the simulated day.
#[derive(Debug, Clone)]
pub struct Params {
    /// Community-list size.
    pub community: usize,
    /// LAPI 1.4.x re-inserts the community list this often (`docs/reference/crowdsec-lapi.md` §6).
    pub refresh_every: u64,
    /// Values leaving (and as many joining) the community list at each refresh.
    pub turnover: usize,
    /// Shortest and longest community decision duration (each value keeps its own; every
    /// re-insert starts it again, so the expiry moves `refresh_every` later).
    pub community_duration: (u64, u64),
    /// Local bans per hour.
    pub local_per_hour: usize,
    /// Their duration.
    pub local_duration: u64,
    /// Share of local bans unbanned (`cscli decisions delete`) before they expire, in percent.
    pub unban_percent: u64,
    /// Bans longer than the router's maximum timeout.
    pub long_bans: usize,
    /// Their duration.
    pub long_duration: u64,
    /// Length of the run.
    pub day: u64,
    /// `CROWDSEC_UPDATE_FREQUENCY`.
    pub poll: u64,
    /// How often the oracle checks for due refreshes (the supervisor ticks on its own, every
    /// `TICK`).
    pub tick: u64,
    /// `RECONCILIATION_INTERVAL`.
    pub reconcile: u64,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            community: 15_000,
            refresh_every: 2 * HOUR,
            turnover: 300,
            community_duration: (3 * HOUR, 7 * 24 * HOUR),
            local_per_hour: 300,
            local_duration: 4 * HOUR,
            unban_percent: 20,
            long_bans: 5,
            long_duration: 365 * 24 * HOUR,
            day: 24 * HOUR,
            poll: 10,
            tick: 60,
            reconcile: HOUR,
            seed: 0x7469_6b62_616e,
        }
    }
}

/// Router writes per policy over the same trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Decisions in the trace (`new` elements, including re-inserts).
    pub decisions: u64,
    /// Re-inserts of an already banned value.
    pub reinserts: u64,
    /// Values that became banned, plus unbans by delete.
    pub real_changes: u64,
    /// Refreshes the lazy oracle needs.
    pub oracle_refreshes: u64,
    /// tikban: adds.
    pub adds: u64,
    /// tikban: removes.
    pub removes: u64,
    /// tikban: `set` (lazy refresh).
    pub refreshes: u64,
    /// tikban: removes of entries whose router timeout ended within the poll (the router drops
    /// them by itself).
    pub removes_of_expiring: u64,
    /// tikban: lookups (prints of one entry).
    pub lookups: u64,
    /// tikban: writes planned by the hourly reconciles (must be 0).
    pub reconcile_writes: u64,
    /// Baseline: `set` on every re-insert.
    pub refresh_every_reinsert: u64,
    /// Baseline: rebuild the whole list every hour.
    pub hourly_rebuild: u64,
}

impl Report {
    /// tikban's router writes.
    pub fn tikban_writes(&self) -> u64 {
        self.adds + self.removes + self.refreshes
    }

    /// The bound: real changes plus the oracle's refreshes.
    pub fn bound(&self) -> u64 {
        self.real_changes + self.oracle_refreshes
    }
}

/// One trace event.
#[derive(Debug, Clone, Copy)]
enum Event {
    New {
        id: i64,
        value: Value,
        duration: u64,
        community: bool,
    },
    Deleted {
        id: i64,
        value: Value,
    },
}

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn v4(base: u32, i: u32) -> Value {
    Value::from_ip(std::net::Ipv4Addr::from(base + i).into())
}

/// The event trace, sorted by time (seconds from the start).
fn trace(p: &Params) -> Vec<(u64, Event)> {
    let mut rng = Rng(p.seed);
    let mut events = Vec::new();
    let mut next_id = 1i64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    const COMMUNITY: u32 = 0x0A00_0000; // 10.0.0.0
    const LOCAL: u32 = 0xAC10_0000; // 172.16.0.0
    const LONG: u32 = 0xC633_6400; // 198.51.100.0

    // Community list: per value its duration and its live decision ids.
    let mut members: Vec<(u32, u64)> = Vec::new();
    let mut next_member = 0u32;
    let mut live: HashMap<u32, Vec<(i64, u64)>> = HashMap::new();
    for _ in 0..p.community {
        let d = rng.range(p.community_duration.0, p.community_duration.1);
        members.push((next_member, d));
        next_member += 1;
    }
    let mut t = 0;
    while t < p.day {
        if t > 0 {
            for _ in 0..p.turnover.min(members.len()) {
                let k = (rng.next() % members.len() as u64) as usize;
                let (m, _) = members.swap_remove(k);
                for (i, end) in live.remove(&m).unwrap_or_default() {
                    if end > t {
                        events.push((
                            t,
                            Event::Deleted {
                                id: i,
                                value: v4(COMMUNITY, m),
                            },
                        ));
                    }
                }
            }
            for _ in 0..p.turnover {
                let d = rng.range(p.community_duration.0, p.community_duration.1);
                members.push((next_member, d));
                next_member += 1;
            }
        }
        for &(m, d) in &members {
            let i = id();
            live.entry(m).or_default().push((i, t + d));
            events.push((
                t,
                Event::New {
                    id: i,
                    value: v4(COMMUNITY, m),
                    duration: d,
                    community: true,
                },
            ));
        }
        t += p.refresh_every;
    }

    let mut local = 0u32;
    for hour in 0..p.day.div_ceil(HOUR) {
        for _ in 0..p.local_per_hour {
            let at = hour * HOUR + rng.range(0, HOUR - 1);
            let i = id();
            let value = v4(LOCAL, local);
            local += 1;
            events.push((
                at,
                Event::New {
                    id: i,
                    value,
                    duration: p.local_duration,
                    community: false,
                },
            ));
            if rng.range(0, 99) < p.unban_percent {
                let after = rng.range(60, HOUR);
                events.push((at + after, Event::Deleted { id: i, value }));
            }
        }
    }
    for k in 0..p.long_bans {
        let at = rng.range(0, p.day - 1);
        events.push((
            at,
            Event::New {
                id: id(),
                value: v4(LONG, k as u32),
                duration: p.long_duration,
                community: false,
            },
        ));
    }
    events.retain(|(t, _)| *t < p.day);
    events.sort_by_key(|(t, _)| *t);
    events
}

/// The oracle's view of one banned value.
struct Wanted {
    /// Live decisions: id → end.
    ids: HashMap<i64, u64>,
    /// End of the router entry the oracle wrote.
    router_end: u64,
}

impl Wanted {
    fn end(&self) -> u64 {
        self.ids.values().copied().max().unwrap_or(0)
    }
}

fn go_duration(secs: u64) -> GoDuration {
    // A whole number of seconds always parses.
    GoDuration::parse(&format!("{secs}s")).unwrap_or_else(|_| unreachable!("{secs}s parses"))
}

/// The supervisor under test, with the model router, on the model clock.
fn tikban(p: &Params, t0: Instant) -> Harness {
    let settings = Settings {
        update_frequency: Duration::from_secs(p.poll),
        poll_timeout: Duration::from_secs(30),
        snapshot_timeout: Duration::from_secs(300),
        reconciliation_interval: Duration::from_secs(p.reconcile),
        metrics_interval: None,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        lists: [
            Some("crowdsec-banned".to_owned()),
            Some("crowdsec6-banned".to_owned()),
        ],
        comment_prefix: "tikban".to_owned(),
        safety: tikban::safety::Settings::default(),
        max_entries: tikban::supervisor::MaxEntries::Unlimited,
        ipv6_prefix: 128,
        guard: None,
        share: false,
    };
    let sup = Supervisor::new(settings, Arc::new(Metrics::new()), p.seed, t0);
    let mut h = Harness::new(sup, t0);
    h.router.expiring_window = Duration::from_secs(p.poll);
    h.step();
    h
}

/// Runs the day; see the module docs.
pub fn run(p: &Params) -> Report {
    let events = trace(p);
    let t0 = Instant::now();
    let mut tk = tikban(p, t0);
    let mut report = Report::default();
    let community = Label::new("CAPI");
    let local = Label::new("crowdsec");
    let max = MAX_TIMEOUT_SECS;

    // Oracle state and the hourly-rebuild baseline.
    let mut wanted: HashMap<Value, Wanted> = HashMap::new();
    let mut rebuild_list = 0u64;

    let mut next = 0usize;
    let mut t = 0u64;
    let mut batch = Batch::new(true);
    loop {
        // Events up to this poll: (t - poll, t], or everything at t = 0 (the startup snapshot).
        while let Some((at, ev)) = events.get(next) {
            if *at > t {
                break;
            }
            next += 1;
            match *ev {
                Event::New {
                    id,
                    value,
                    duration,
                    community: c,
                } => {
                    report.decisions += 1;
                    let end = at + duration;
                    match wanted.get_mut(&value) {
                        Some(w) if w.end() > t => {
                            report.reinserts += 1;
                            w.ids.insert(id, end);
                        }
                        _ => {
                            report.real_changes += 1;
                            let router_end = t + (end - t).min(max);
                            let mut ids = HashMap::new();
                            ids.insert(id, end);
                            wanted.insert(value, Wanted { ids, router_end });
                        }
                    }
                    batch.push_add(BatchAdd {
                        value,
                        id,
                        duration: go_duration(end - t),
                        origin: if c { community.clone() } else { local.clone() },
                    });
                }
                Event::Deleted { id, value } => {
                    if let Some(w) = wanted.get_mut(&value) {
                        w.ids.remove(&id);
                        if w.end() <= t {
                            report.real_changes += 1;
                            wanted.remove(&value);
                        }
                    }
                    batch.push_deleted(Deletion { id, value });
                }
            }
        }

        // tikban: the supervisor asked for this poll; answer it (it then writes, refreshes and
        // reconciles as it sees fit). Without a poll in flight the events wait for the next one.
        tk.advance(t0 + Duration::from_secs(t) - tk.now);
        if tk.lapi.iter().any(|a| matches!(a, Action::Poll { .. })) {
            let answer = std::mem::replace(&mut batch, Batch::new(false));
            tk.answer_poll(Ok(answer));
        }

        // The oracle: expiries are free, a router entry that ends before its decision is
        // refreshed when it ends (checked once per tick, like tikban's lazy refresh).
        if t % p.tick == 0 {
            for d in wanted.values_mut() {
                d.ids.retain(|_, end| *end > t);
            }
            wanted.retain(|_, w| !w.ids.is_empty());
            for w in wanted.values_mut() {
                let end = w.end();
                if w.router_end <= t + p.tick && end > w.router_end {
                    report.oracle_refreshes += 1;
                    w.router_end = t + (end - t).min(max);
                }
            }
        }

        // Baseline: rebuild the whole list every hour (remove all, add all).
        if t == 0 {
            rebuild_list = wanted.len() as u64;
            report.hourly_rebuild += rebuild_list;
        } else if t % HOUR == 0 {
            report.hourly_rebuild += rebuild_list + wanted.len() as u64;
            rebuild_list = wanted.len() as u64;
        }

        t += p.poll;
        if t > p.day {
            break;
        }
    }
    let ops = |k| tk.router.ops.get(k).copied().unwrap_or(0);
    report.adds = ops("add");
    report.removes = ops("remove");
    report.refreshes = ops("set");
    report.lookups = ops("print");
    report.removes_of_expiring = tk.router.removes_of_expiring;
    report.reconcile_writes = tk.reconcile_writes;
    // Baseline: tikban's real changes plus a `set` for every re-sent decision.
    report.refresh_every_reinsert = report.real_changes + report.reinserts;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Params {
        Params {
            community: 200,
            turnover: 10,
            local_per_hour: 20,
            day: 6 * HOUR,
            ..Params::default()
        }
    }

    #[test]
    fn the_model_day_runs_and_the_baselines_write_more() {
        let r = run(&small());
        assert_eq!(r.reconcile_writes, 0, "{r:?}");
        assert_eq!(r.lookups, 0, "{r:?}");
        assert!(r.adds <= r.real_changes, "{r:?}");
        assert!(r.removes_of_expiring <= r.removes, "{r:?}");
        assert!(r.refresh_every_reinsert > r.tikban_writes(), "{r:?}");
        assert!(r.hourly_rebuild > r.refresh_every_reinsert, "{r:?}");
    }

    #[test]
    fn the_trace_is_deterministic_and_sorted() {
        let a = trace(&small());
        let b = trace(&small());
        assert_eq!(a.len(), b.len());
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
