//! Scenario 3: a day of LAPI 1.4.6 churn, run in compressed time through tikban's real
//! [`Engine`] and [`DecisionCache`], against a model router and two baseline policies.
//!
//! This is a model run, not a wall-clock run: a synthetic event trace is cut into 10 s polls on a
//! simulated clock, each poll goes through `DecisionCache::apply` and `Engine::plan_changes`, and
//! every minute through `Engine::plan_tick` (the lazy refresh), every hour through
//! `Engine::reconcile` (`RECONCILIATION_INTERVAL=1h`), exactly as `daemon.rs` sequences them. The
//! ops are applied to a small model router (ids, timeouts that run out) and their outcomes fed
//! back with `Engine::on_outcome`.
//!
//! The bound tikban is held to is computed without the engine: "real changes" (a value becomes
//! banned, or is unbanned by a delete; an expiry costs nothing because the router timeout ends
//! with the decision) plus the refreshes an oracle needs that refreshes each entry exactly when its
//! router timeout runs out while the decision still lasts, at most one per router-timeout period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crowdsec_lapi::{Batch, BatchAdd, DecisionCache, Deletion, GoDuration, Label, Value};
use tikban::engine::RouterRow;
use tikban::engine::{Engine, EngineConfig, Family, MAX_TIMEOUT_SECS, Op, Outcome, RouterId};

const HOUR: u64 = 3600;

/// The shape of the simulated day.
#[derive(Debug, Clone)]
pub struct Params {
    /// Community-list size.
    pub community: usize,
    /// LAPI 1.4.x re-inserts the community list this often (`crowdsec-lapi.md` §6).
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
    /// How often the daemon's tick is modelled (`plan_tick`).
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

/// The model router: what `/ip/firewall/address-list` holds.
#[derive(Default)]
struct Router {
    next_id: u32,
    entries: HashMap<Value, (u32, u64, String)>,
}

impl Router {
    fn expire(&mut self, now: u64) {
        self.entries.retain(|_, (_, end, _)| *end > now);
    }

    fn apply(&mut self, op: &Op, engine: &Engine, now: u64) -> Outcome {
        match op {
            Op::Add {
                value,
                timeout,
                origin,
            } => {
                if self.entries.contains_key(value) {
                    return Outcome::Duplicate;
                }
                self.next_id += 1;
                let id = self.next_id;
                let comment = engine.comment(origin.as_str());
                self.entries.insert(*value, (id, now + timeout, comment));
                Outcome::Done(RouterId::new(id))
            }
            Op::Remove { value, .. } => match self.entries.remove(value) {
                Some(_) => Outcome::Done(None),
                None => Outcome::NoSuchItem,
            },
            Op::Refresh { value, timeout, .. } => match self.entries.get_mut(value) {
                Some(e) => {
                    e.1 = now + timeout;
                    Outcome::Done(None)
                }
                None => Outcome::NoSuchItem,
            },
            Op::Lookup { value } => Outcome::Rows(
                self.entries
                    .get(value)
                    .map(|e| row(value, e, now))
                    .into_iter()
                    .collect(),
            ),
        }
    }

    fn rows(&self, family: Family, now: u64) -> Vec<RouterRow> {
        self.entries
            .iter()
            .filter(|(v, _)| Family::of(v) == family)
            .map(|(v, e)| row(v, e, now))
            .collect()
    }
}

fn row(value: &Value, (id, end, comment): &(u32, u64, String), now: u64) -> RouterRow {
    RouterRow {
        id: format!("*{id:X}"),
        address: value.routeros_address(),
        timeout: Some(Duration::from_secs(end.saturating_sub(now))),
        comment: Some(comment.clone()),
    }
}

/// The engine under test with its cache and the model router.
struct Tikban {
    engine: Engine,
    cache: DecisionCache,
    router: Router,
    t0: Instant,
    poll: u64,
    report: Report,
}

impl Tikban {
    fn at(&self, t: u64) -> Instant {
        self.t0 + Duration::from_secs(t)
    }

    fn execute(&mut self, mut ops: Vec<Op>, t: u64) {
        let now = self.at(t);
        while !ops.is_empty() {
            let mut follow = Vec::new();
            for op in &ops {
                match op {
                    Op::Add { .. } => self.report.adds += 1,
                    Op::Remove { value, .. } => {
                        self.report.removes += 1;
                        if self
                            .router
                            .entries
                            .get(value)
                            .is_none_or(|e| e.1 <= t + self.poll)
                        {
                            self.report.removes_of_expiring += 1;
                        }
                    }
                    Op::Refresh { .. } => self.report.refreshes += 1,
                    Op::Lookup { .. } => self.report.lookups += 1,
                }
                let out = self.router.apply(op, &self.engine, t);
                follow.extend(self.engine.on_outcome(op, out, &self.cache, now));
            }
            ops = follow;
        }
    }

    fn reconcile(&mut self, t: u64) -> Vec<Op> {
        let now = self.at(t);
        let mut ops = Vec::new();
        for family in Family::ALL {
            let rows = self.router.rows(family, t);
            ops.extend(self.engine.reconcile(family, rows, &self.cache, now));
        }
        self.engine.mark_fresh();
        ops
    }
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

/// Runs the day; see the module docs.
pub fn run(p: &Params) -> Report {
    let events = trace(p);
    let t0 = Instant::now();
    let margin = Duration::from_secs((p.poll * 6).max(300));
    let engine = Engine::new(
        EngineConfig {
            lists: [
                Some("crowdsec-banned".to_owned()),
                Some("crowdsec6-banned".to_owned()),
            ],
            prefix: "tikban".to_owned(),
            refresh_margin: margin,
        },
        t0,
    );
    let mut tk = Tikban {
        engine,
        cache: DecisionCache::new(t0),
        router: Router::default(),
        t0,
        poll: p.poll,
        report: Report::default(),
    };
    let community = Label::new("CAPI");
    let local = Label::new("crowdsec");
    let max = MAX_TIMEOUT_SECS;

    // Oracle state and the hourly-rebuild baseline.
    let mut wanted: HashMap<Value, Wanted> = HashMap::new();
    let mut rebuild_list = 0u64;

    let mut next = 0usize;
    let mut t = 0u64;
    loop {
        // Events of this poll: (t - poll, t], or everything at t = 0 (the startup snapshot).
        let mut batch = Batch::new(t == 0);
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
                    tk.report.decisions += 1;
                    let end = at + duration;
                    match wanted.get_mut(&value) {
                        Some(w) if w.end() > t => {
                            tk.report.reinserts += 1;
                            w.ids.insert(id, end);
                        }
                        _ => {
                            tk.report.real_changes += 1;
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
                            tk.report.real_changes += 1;
                            wanted.remove(&value);
                        }
                    }
                    batch.push_deleted(Deletion { id, value });
                }
            }
        }
        let now = tk.at(t);

        // tikban, sequenced as `Daemon::step`.
        if t == 0 {
            tk.cache.apply_quiet(&batch, now);
            let ops = tk.reconcile(t);
            tk.execute(ops, t);
        } else {
            let changes = tk.cache.apply(&batch, now);
            let ops = tk.engine.plan_changes(&changes, now);
            tk.execute(ops, t);
        }
        drop(batch);
        if tk.cache.next_expiry().is_some_and(|e| e <= now) {
            let changes = tk.cache.expire(now);
            let ops = tk.engine.plan_changes(&changes, now);
            tk.execute(ops, t);
        }
        if t % p.tick == 0 {
            tk.router.expire(t);
        }
        if t > 0 && t % p.reconcile == 0 {
            let ops = tk.reconcile(t);
            tk.report.reconcile_writes += ops.iter().filter(|o| o.kind() != "print").count() as u64;
            tk.execute(ops, t);
        }
        if t % p.tick == 0 {
            let ops = tk.engine.plan_tick(&tk.cache, now);
            tk.execute(ops, t);
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
                    tk.report.oracle_refreshes += 1;
                    w.router_end = t + (end - t).min(max);
                }
            }
        }

        // Baseline: rebuild the whole list every hour (remove all, add all).
        if t == 0 {
            rebuild_list = wanted.len() as u64;
            tk.report.hourly_rebuild += rebuild_list;
        } else if t % HOUR == 0 {
            tk.report.hourly_rebuild += rebuild_list + wanted.len() as u64;
            rebuild_list = wanted.len() as u64;
        }

        t += p.poll;
        if t > p.day {
            break;
        }
    }
    // Baseline: tikban's real changes plus a `set` for every re-sent decision.
    tk.report.refresh_every_reinsert = tk.report.real_changes + tk.report.reinserts;
    tk.report
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
