//! An in-memory model of the router and a harness that drives the [`Supervisor`] against it on a
//! hand-driven clock, with no sockets and no real time (quinn's `Pair`, `docs/reference/style.md`
//! §11). The supervisor's unit tests, the engine's model-based property test and the churn
//! benchmark (`cargo xtask bench`) all run the real supervisor and engine through it.
//!
//! The model keeps the address-list rules the engine relies on (`docs/reference/routeros-api.md` §9): ids
//! `*N` that never repeat, one entry per list and normalised address (a second add traps
//! `already have such entry`), `no such item` for a missing id, timeouts that run out. It is not
//! a protocol emulator; `routeros-sim` is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crowdsec_lapi::Batch;

use crate::engine::wire::routeros_address;
use crate::engine::{Family, Op, Outcome, RouterId, RouterRow, comment};
use crate::supervisor::{Action, Event, Failure, Resource, RouterEvent, RuleScan, Supervisor};

/// One address-list entry of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The list.
    pub list: String,
    /// The address as RouterOS prints it.
    pub address: String,
    /// When it runs out; `None` for a static entry.
    pub expires: Option<Instant>,
    /// The comment.
    pub comment: Option<String>,
}

/// A model router: address lists per family, a write counter, a boot time.
#[derive(Debug, Clone)]
pub struct ModelRouter {
    entries: [BTreeMap<u32, Entry>; 2],
    /// (list, address) → id, per family: the duplicate check without a scan.
    index: [std::collections::HashMap<(String, String), u32>; 2],
    next_id: u32,
    /// Adds, removes and sets that changed something.
    pub writes: u64,
    /// Every op applied, by kind (`add`, `remove`, `set`, `print` for lookups, `list-print`).
    pub ops: BTreeMap<&'static str, u64>,
    /// Boot time, for the uptime `/system/resource` reports.
    pub booted: Instant,
    /// The drop-rule scan reported per family.
    pub rules: [RuleScan; 2],
    /// Removes and sets that hit an entry whose comment does not carry `owned_prefix`: tikban
    /// must never touch one (the model-based property test asserts 0).
    pub foreign_touched: u64,
    /// The comment prefix that marks tikban's entries, for `foreign_touched`.
    pub owned_prefix: String,
    /// Removes of entries that would have run out within `expiring_window` anyway (wasted
    /// writes, counted by the churn benchmark).
    pub removes_of_expiring: u64,
    /// See `removes_of_expiring`.
    pub expiring_window: Duration,
    /// `/system/resource` (total-memory, free-memory), bytes.
    pub memory: (u64, u64),
    /// Addresses of the active admin sessions (`/user/active`).
    pub sessions: Vec<std::net::IpAddr>,
}

impl ModelRouter {
    /// An empty router booted at `now`, with drop rules for both lists.
    pub fn new(now: Instant) -> Self {
        let rule = RuleScan {
            found: true,
            bytes: 0,
            packets: 0,
        };
        ModelRouter {
            entries: [BTreeMap::new(), BTreeMap::new()],
            index: Default::default(),
            next_id: 1,
            writes: 0,
            ops: BTreeMap::new(),
            booted: now,
            rules: [rule, rule],
            foreign_touched: 0,
            owned_prefix: "tikban".into(),
            removes_of_expiring: 0,
            expiring_window: Duration::ZERO,
            memory: (1 << 30, 1 << 29),
            sessions: Vec::new(),
        }
    }

    /// Adds an entry as someone else would (a manual entry, or a leftover); returns its id.
    pub fn insert(&mut self, family: Family, entry: Entry) -> RouterId {
        let id = self.next_id;
        self.next_id += 1;
        self.index[family.index()].insert((entry.list.clone(), entry.address.clone()), id);
        self.entries[family.index()].insert(id, entry);
        RouterId::new(id).unwrap_or_else(|| unreachable!("ids start at 1"))
    }

    /// Drops every entry whose timeout ran out by `now`.
    pub fn expire(&mut self, now: Instant) {
        self.retain(|e| e.expires.is_none_or(|t| t > now));
    }

    /// A reboot: dynamic entries (every entry with a timeout) are gone, uptime starts over.
    pub fn reboot(&mut self, now: Instant) {
        self.retain(|e| e.expires.is_none());
        self.booted = now;
    }

    fn retain(&mut self, keep: impl Fn(&Entry) -> bool) {
        for (list, index) in self.entries.iter_mut().zip(&mut self.index) {
            list.retain(|_, e| {
                let k = keep(e);
                if !k {
                    index.remove(&(e.list.clone(), e.address.clone()));
                }
                k
            });
        }
    }

    /// Removes one entry by id; true if it existed.
    pub fn remove(&mut self, family: Family, id: u32) -> bool {
        let f = family.index();
        match self.entries[f].remove(&id) {
            Some(e) => {
                self.index[f].remove(&(e.list, e.address));
                true
            }
            None => false,
        }
    }

    /// Entries of a family, by id.
    pub fn entries(&self, family: Family) -> &BTreeMap<u32, Entry> {
        &self.entries[family.index()]
    }

    /// The rows a print of `list` returns at `now`.
    pub fn rows(&self, family: Family, list: &str, now: Instant) -> Vec<RouterRow> {
        self.entries[family.index()]
            .iter()
            .filter(|(_, e)| e.list == list && e.expires.is_none_or(|t| t > now))
            .map(|(id, e)| RouterRow {
                id: format!("*{id:X}"),
                address: e.address.clone(),
                timeout: e.expires.map(|t| t.saturating_duration_since(now)),
                comment: e.comment.clone(),
            })
            .collect()
    }

    /// Applies one op as RouterOS would and returns its outcome.
    pub fn apply(&mut self, op: &Op, lists: &[String; 2], prefix: &str, now: Instant) -> Outcome {
        self.expire(now);
        *self.ops.entry(op.kind()).or_default() += 1;
        let family = Family::of(op.value());
        let list = &lists[family.index()];
        match op {
            Op::Add {
                value,
                timeout,
                origin,
            } => {
                let address = routeros_address(value);
                if self.index[family.index()].contains_key(&(list.clone(), address.clone())) {
                    return Outcome::Duplicate;
                }
                let id = self.insert(
                    family,
                    Entry {
                        list: list.clone(),
                        address,
                        expires: Some(now + Duration::from_secs(*timeout)),
                        comment: Some(comment(prefix, origin.as_str())),
                    },
                );
                self.writes += 1;
                Outcome::Done(Some(id))
            }
            Op::Remove { id, .. } => {
                let n = id_number(*id);
                if let Some(e) = self.entries[family.index()].get(&n) {
                    if !owned(e, &self.owned_prefix) {
                        self.foreign_touched += 1;
                    }
                    if e.expires.is_some_and(|t| t <= now + self.expiring_window) {
                        self.removes_of_expiring += 1;
                    }
                }
                if self.remove(family, n) {
                    self.writes += 1;
                    Outcome::Done(None)
                } else {
                    Outcome::NoSuchItem
                }
            }
            Op::Refresh { id, timeout, .. } => {
                match self.entries[family.index()].get_mut(&id_number(*id)) {
                    Some(e) => {
                        if !owned(e, &self.owned_prefix) {
                            self.foreign_touched += 1;
                        }
                        e.expires = Some(now + Duration::from_secs(*timeout));
                        self.writes += 1;
                        Outcome::Done(None)
                    }
                    None => Outcome::NoSuchItem,
                }
            }
            Op::Lookup { value } => {
                let address = routeros_address(value);
                Outcome::Rows(
                    self.rows(family, list, now)
                        .into_iter()
                        .filter(|r| r.address == address)
                        .collect(),
                )
            }
        }
    }
}

fn owned(e: &Entry, prefix: &str) -> bool {
    e.comment
        .as_deref()
        .is_some_and(|c| c == prefix || c.strip_prefix(prefix).is_some_and(|r| r.starts_with(' ')))
}

fn id_number(id: RouterId) -> u32 {
    u32::from_str_radix(id.to_string().trim_start_matches('*'), 16).unwrap_or(0)
}

/// How the harness's router behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Answers every job at once.
    #[default]
    Up,
    /// Refuses connections.
    Down,
    /// Accepts jobs and never answers them.
    Stalled,
}

/// Random faults injected into write jobs (a tiny xorshift PRNG, so runs repeat).
#[derive(Debug, Clone)]
pub struct Faults {
    state: u64,
    /// Chance of a fault per op, in percent.
    pub percent: u64,
}

impl Faults {
    /// Faults on `percent` % of ops, from `seed`.
    pub fn new(seed: u64, percent: u64) -> Self {
        Faults {
            state: seed | 1,
            percent,
        }
    }

    fn roll(&mut self, n: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % n
    }
}

/// The supervisor, the model router and a clock, stepped by hand.
pub struct Harness {
    /// The supervisor under test.
    pub sup: Supervisor,
    /// The router it talks to.
    pub router: ModelRouter,
    /// The clock.
    pub now: Instant,
    /// How the router behaves.
    pub mode: Mode,
    /// LAPI actions the harness does not answer itself, oldest first.
    pub lapi: Vec<Action>,
    /// Every router action performed, oldest first.
    pub log: Vec<Action>,
    /// Faults injected into write jobs, if any.
    pub faults: Option<Faults>,
    /// Adds, removes and sets sent by periodic reconciles (the churn benchmark's must write
    /// nothing).
    pub reconcile_writes: u64,
    lists: [String; 2],
    prefix: String,
}

impl Harness {
    /// A harness at `now` around `sup`.
    pub fn new(sup: Supervisor, now: Instant) -> Self {
        let s = sup.settings();
        let lists = s.lists.clone().map(Option::unwrap_or_default);
        let prefix = s.comment_prefix.clone();
        Harness {
            sup,
            router: ModelRouter::new(now),
            now,
            mode: Mode::Up,
            lapi: Vec::new(),
            log: Vec::new(),
            faults: None,
            reconcile_writes: 0,
            lists,
            prefix,
        }
    }

    /// Runs every due action; router actions are answered by the model (unless stalled), LAPI
    /// actions are queued in [`Harness::lapi`].
    pub fn step(&mut self) {
        for _ in 0..100_000 {
            let Some(action) = self.sup.poll_action(self.now) else {
                return;
            };
            self.perform(action);
        }
        panic!("the supervisor keeps producing actions");
    }

    fn perform(&mut self, action: Action) {
        let now = self.now;
        let reply = |job, event| Event::Router(job, event);
        if let Action::Poll { .. } | Action::PushUsage { .. } | Action::PushAlerts(_) = action {
            self.lapi.push(action);
            return;
        }
        self.log.push(action.clone());
        let event = match (&action, self.mode) {
            (Action::Poll { .. } | Action::PushUsage { .. } | Action::PushAlerts(_), _) => None,
            (Action::Disconnect { .. }, _) => None,
            (Action::Connect { job }, Mode::Down) => Some(reply(
                *job,
                RouterEvent::ConnectFailed(Failure::new(
                    crate::supervisor::FailureKind::Refused,
                    "connection refused",
                )),
            )),
            (_, Mode::Stalled) | (_, Mode::Down) => None,
            (Action::Connect { job }, Mode::Up) => Some(reply(
                *job,
                RouterEvent::Connected {
                    local: None,
                    peer: None,
                },
            )),
            (Action::Send { job, ops }, Mode::Up) => {
                if let crate::supervisor::RouterState::Connected {
                    view: crate::supervisor::View::Reconciling(r),
                    ..
                } = self.sup.router_state()
                    && r.reason == "periodic"
                {
                    self.reconcile_writes +=
                        ops.iter().filter(|o| o.kind() != "print").count() as u64;
                }
                let mut results = Vec::with_capacity(ops.len());
                let mut lost = false;
                for op in ops {
                    let out = if lost {
                        Outcome::Lost
                    } else {
                        self.faulty_apply(op, now, &mut lost)
                    };
                    results.push((op.clone(), out));
                }
                Some(reply(*job, RouterEvent::OpsDone(results)))
            }
            (Action::Print { job, family }, Mode::Up) => {
                self.router.expire(now);
                *self.router.ops.entry("list-print").or_default() += 1;
                let rows = self.router.rows(*family, &self.lists[family.index()], now);
                self.sup.handle(now, reply(*job, RouterEvent::Rows(rows)));
                Some(reply(*job, RouterEvent::PrintDone))
            }
            (Action::ReadResource { job }, Mode::Up) => Some(reply(
                *job,
                RouterEvent::Resource(Resource {
                    uptime: Some(now.saturating_duration_since(self.router.booted)),
                    total_memory: Some(self.router.memory.0),
                    free_memory: Some(self.router.memory.1),
                }),
            )),
            (Action::ReadSessions { job }, Mode::Up) => Some(reply(
                *job,
                RouterEvent::Sessions(self.router.sessions.clone()),
            )),
            (Action::ReadRules { job }, Mode::Up) => {
                let scans = Family::ALL
                    .into_iter()
                    .filter(|f| !self.lists[f.index()].is_empty())
                    .map(|f| (f, Ok(self.router.rules[f.index()])))
                    .collect();
                Some(reply(*job, RouterEvent::Rules(scans)))
            }
        };
        if let Some(event) = event {
            self.sup.handle(now, event);
        }
    }

    /// Applies one op, or a fault: a trap (not applied), a lost connection (applied or not), an
    /// entry that someone else already added or removed.
    fn faulty_apply(&mut self, op: &Op, now: Instant, lost: &mut bool) -> Outcome {
        let Some(f) = self.faults.as_mut() else {
            return self.router.apply(op, &self.lists, &self.prefix, now);
        };
        if f.roll(100) >= f.percent {
            return self.router.apply(op, &self.lists, &self.prefix, now);
        }
        match (f.roll(4), op) {
            (0, _) => Outcome::Trap("failure: simulated fault".into()),
            (1, _) => {
                *lost = true;
                if f.roll(2) == 0 {
                    let _ = self.router.apply(op, &self.lists, &self.prefix, now);
                }
                Outcome::Lost
            }
            (
                _,
                Op::Add {
                    value,
                    origin,
                    timeout,
                },
            ) => {
                // An earlier add that landed although its reply was lost (unless the router
                // already holds the address: it never keeps two).
                let family = Family::of(value);
                let address = routeros_address(value);
                let list = self.lists[family.index()].clone();
                if self.router.index[family.index()].contains_key(&(list, address)) {
                    return self.router.apply(op, &self.lists, &self.prefix, now);
                }
                self.router.insert(
                    family,
                    Entry {
                        list: self.lists[family.index()].clone(),
                        address: routeros_address(value),
                        expires: Some(now + Duration::from_secs(*timeout)),
                        comment: Some(comment(&self.prefix, origin.as_str())),
                    },
                );
                self.router.apply(op, &self.lists, &self.prefix, now)
            }
            (_, Op::Remove { id, .. } | Op::Refresh { id, .. }) => {
                // Gone meanwhile (removed by hand, or run out).
                self.router.remove(Family::of(op.value()), id_number(*id));
                self.router.apply(op, &self.lists, &self.prefix, now)
            }
            (_, Op::Lookup { .. }) => self.router.apply(op, &self.lists, &self.prefix, now),
        }
    }

    /// Answers the oldest LAPI poll with `result` (a batch, or a failure).
    pub fn answer_poll(&mut self, result: Result<Batch, Failure>) {
        let i = self
            .lapi
            .iter()
            .position(|a| matches!(a, Action::Poll { .. }))
            .unwrap_or_else(|| panic!("no poll in flight: {:?}", self.lapi));
        let poll = self.lapi.remove(i);
        let event = match (poll, result) {
            // The real LAPI task streams a fresh snapshot into a new cache: do the same.
            (Action::Poll { fresh: true, .. }, Ok(batch)) => {
                let mut cache = crowdsec_lapi::DecisionCache::new(self.now);
                cache.apply_quiet(&batch, self.now);
                Event::Snapshot(Ok((Box::new(cache), batch.stats())))
            }
            (_, result) => Event::Polled(result),
        };
        self.sup.handle(self.now, event);
        self.step();
    }

    /// Moves the clock by `d` in steps of at most one second, running what falls due, so timers
    /// fire in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let next = self
                .sup
                .next_timeout(self.now)
                .min(self.now + Duration::from_secs(1))
                .min(end)
                .max(self.now + Duration::from_millis(1));
            self.now = next;
            self.step();
        }
    }

    /// Router actions of a kind performed so far.
    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|a| pred(a)).count()
    }
}
