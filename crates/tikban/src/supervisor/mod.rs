//! The supervisor: every scheduling rule of the daemon, as a sans-IO state machine.
//!
//! It owns the desired state ([`DecisionCache`]), the router view ([`Engine`]) and the explicit
//! states of both peers ([`LapiState`], [`RouterState`] with its [`View`]). It is fed
//! [`Event`]s (a poll result, the router connected or lost, op outcomes, print rows, rule
//! counters) together with `now`, and it returns [`Action`]s (poll, connect, send these ops,
//! print this list, push usage metrics). It never waits, sleeps or touches a socket; the daemon
//! (`daemon/`) performs the actions and feeds the results back. `/health` is derived from the
//! states with [`Supervisor::health`], never kept beside them.
//!
//! ```text
//!  LAPI task ──Polled(batch)──▶┐                         ┌──▶ Poll / PushUsage ──▶ LAPI task
//!                               ├──▶ Supervisor::handle   │
//!  router job ──RouterEvent───▶┘      (cache, engine,     ├──▶ Connect / Send / Print /
//!                                      LapiState,          │    ReadResource / ReadRules /
//!  timers ──────────────────────────▶ RouterState) ──poll_action──▶ Disconnect ──▶ router
//! ```
//!
//! Call order (as in quinn-proto): after every [`handle`](Supervisor::handle), call
//! [`poll_action`](Supervisor::poll_action) until it returns `None`, then wait for the next event
//! or until [`next_timeout`](Supervisor::next_timeout).
//!
//! The rules:
//! - **LAPI polls run beside the router work.** A poll is an action like any other; a stalled,
//!   trickling or endless LAPI response never delays expiry, refreshes, reconnects or
//!   reconciles. Each poll has an overall deadline (snapshots a longer one).
//! - **Never reconcile before the first snapshot**: until then the router is only read.
//! - **One router job at a time**, each with an overall deadline. A print's deadline grows a
//!   little with every row received, so a long list that streams well finishes while a router that
//!   trickles rows is cut off. An overdue job, a lost reply, or several commands in a row without
//!   any reply drop the connection: reconnect with backoff, then reconcile.
//! - **Backoff resets only after useful work** (a completed reconcile, or a minute connected), so a
//!   router that kills the session on every print does not get a login a second, each of which
//!   writes a line into its 1000-line log.
//! - Changes from LAPI are written as they come while the view is fresh; during a reconcile they
//!   are remembered and planned again at its end; a very large update is reconciled instead of
//!   planned change by change (bounded memory).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdsec_lapi::{Batch, DecisionCache, MetricItem, StreamStats};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backoff::Backoff;
use crate::engine::{Engine, EngineConfig, Family, Op, Outcome, RouterRow};
use crate::metrics::{self, Health, Metrics};

mod enforce;
pub mod guard;
mod policy;
mod schedule;
mod state;
#[cfg(test)]
mod tests;

use crate::safety::Safety;
use enforce::{Skips, aggregate};
pub use policy::{Budget, Enforced, Policy, Refusal, class};
use state::Throttle;
pub use state::{Job, JobId, JobKind, LapiState, Phase, PollState, Reconcile, RouterState, View};

/// Timer tick: lazy refreshes and retries of refused commands are planned this often.
pub const TICK: Duration = Duration::from_secs(5);
/// How often `/system/resource` (reboot detection) and the firewall rule counters are read.
pub const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// Ops per write job: keeps the pipeline window full while bounding memory and the deadline.
pub const SEND_CHUNK: usize = 4096;
/// Deadline allowance per op of a write job, on top of the command timeout.
pub const PER_OP: Duration = Duration::from_millis(5);
/// Deadline allowance per row received by a list print, on top of the command timeout.
pub const PER_ROW: Duration = Duration::from_millis(5);
/// A connection up this long has proven itself: the reconnect backoff starts over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Commands in a row without any reply before the connection counts as desynchronised.
pub const MAX_SILENT_TIMEOUTS: u32 = 3;
/// A LAPI response with more decisions than this is applied quietly and reconciled, not planned
/// change by change: the ops of a huge update are never held at once.
pub const MAX_PLANNED_CHANGES: usize = 65_536;
/// Values remembered as changed during one reconcile; past it the reconcile simply runs again.
pub const MAX_DIRTY: usize = 262_144;
/// New bans wait for a read of `/user/active` older than this (`docs/safety.md`).
pub const SESSIONS_FRESH: Duration = Duration::from_secs(10);
/// At most one warning per this interval for the same repeated condition.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the supervisor needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `CROWDSEC_UPDATE_FREQUENCY`.
    pub update_frequency: Duration,
    /// Overall deadline of a delta poll.
    pub poll_timeout: Duration,
    /// Overall deadline of a `startup=true` snapshot.
    pub snapshot_timeout: Duration,
    /// Full reconcile interval.
    pub reconciliation_interval: Duration,
    /// Usage-metrics push interval; `None` disables.
    pub metrics_interval: Option<Duration>,
    /// `MIKROTIK_CONN_TIMEOUT`.
    pub connect_timeout: Duration,
    /// `MIKROTIK_CMD_TIMEOUT`: the unit of every router job's deadline.
    pub command_timeout: Duration,
    /// List names per family; `None` when disabled.
    pub lists: [Option<String>; 2],
    /// Comment prefix of owned entries.
    pub comment_prefix: String,
    /// The safety rules: allowlist, automatic protections, range limits.
    pub safety: crate::safety::Settings,
    /// The entry budget.
    pub max_entries: MaxEntries,
    /// IPv6 bans are enforced as their prefix of this length (128: as they come).
    pub ipv6_prefix: u8,
    /// Guard's detectors; `None` when `GUARD_ENABLED=false`.
    pub guard: Option<crate::guard::Settings>,
    /// Guard's bans are shared with LAPI as alerts (machine credentials are set).
    pub share: bool,
}

/// `MAX_ENTRIES`: the most router entries tikban holds across both lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxEntries {
    /// Derived from the router's memory ([`budget_for`]) once `/system/resource` is read.
    Auto,
    /// No limit.
    Unlimited,
    /// This many.
    Fixed(usize),
}

/// The default budget for a router with `total` bytes of RAM, `free` of them free
/// (`docs/safety.md`): the address lists may take at most 5 % of the RAM, and at most a quarter
/// of what is free, at an assumed 200 bytes per entry (RouterOS does not document the cost of an
/// entry; 200 bytes is a deliberate overestimate), rounded down to a thousand, at least 1000.
/// A hAP ac³ (256 MiB) gets 67 000 entries, an RB5009 or hAP ax³ (1 GiB) 268 000.
pub fn budget_for(total: u64, free: u64) -> usize {
    const PER_ENTRY: u64 = 200;
    let by_total = total / 20 / PER_ENTRY;
    let by_free = free / 4 / PER_ENTRY;
    let n = by_total.min(by_free) / 1000 * 1000;
    usize::try_from(n.max(1000)).unwrap_or(usize::MAX)
}

impl Settings {
    /// From the validated configuration.
    pub fn from_config(c: &crate::config::Config) -> Self {
        Settings {
            update_frequency: c.lapi.update_frequency,
            poll_timeout: c.lapi.poll_timeout,
            snapshot_timeout: c.lapi.snapshot_timeout,
            reconciliation_interval: c.reconciliation_interval,
            metrics_interval: c.lapi.metrics_interval,
            connect_timeout: c.router.connect_timeout,
            command_timeout: c.router.command_timeout,
            lists: [c.lists.v4.clone(), c.lists.v6.clone()],
            comment_prefix: c.lists.comment_prefix.clone(),
            safety: c.safety.settings.clone(),
            max_entries: c.safety.max_entries,
            ipv6_prefix: c.safety.ipv6_prefix,
            guard: c.guard.settings.clone(),
            share: c.guard.machine.is_some(),
        }
    }

    /// Refresh an entry when its router timeout ends within this margin and the decision lasts
    /// longer: well before the router drops it, and at least a few polls ahead.
    pub fn refresh_margin(&self) -> Duration {
        (self.update_frequency * 6).max(Duration::from_secs(300))
    }
}

/// The overall deadline of a delta poll: three update intervals, at least 30 s. A delta is small
/// (27 bytes when nothing changed; ~2.3 MB when LAPI 1.4.x re-inserts the community list,
/// `docs/reference/crowdsec-lapi.md` §6), so anything slower is a stalled peer.
pub fn default_poll_timeout(update_frequency: Duration) -> Duration {
    (update_frequency * 3).max(Duration::from_secs(30))
}

/// The overall deadline of a `startup=true` snapshot, from the delta deadline: ten of them, at
/// least 5 minutes. A 1,000,000-decision snapshot is ~185 MB (`docs/reference/crowdsec-lapi.md` §6); LAPI 1.4.6
/// took 2.4 s to the first byte at 100k, and 185 MB take ~15 s at 100 Mbit/s, so 5 minutes leave
/// room for a slow LAPI host and a slow link.
pub fn snapshot_timeout(poll_timeout: Duration) -> Duration {
    (poll_timeout * 10).max(Duration::from_secs(300))
}

/// A failed peer operation, as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error text, already free of secrets and escaped.
    pub message: String,
}

/// Kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection is gone.
    Lost,
    /// No answer in time.
    Timeout,
    /// The peer answered with an error (a trap, an HTTP status).
    Refused,
    /// LAPI refused the credentials (403).
    Auth,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// `/system/resource` fields the supervisor uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resource {
    /// Time since boot; going back means a reboot.
    pub uptime: Option<Duration>,
    /// `total-memory`, bytes.
    pub total_memory: Option<u64>,
    /// `free-memory`, bytes.
    pub free_memory: Option<u64>,
}

/// The drop rules that use one list, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleScan {
    /// At least one enabled drop, reject or tarpit rule uses the list.
    pub found: bool,
    /// Bytes those rules dropped (absolute).
    pub bytes: u64,
    /// Packets those rules dropped (absolute).
    pub packets: u64,
}

/// An input.
#[derive(Debug)]
pub enum Event {
    /// The LAPI task finished a poll ([`Action::Poll`]).
    Polled(Result<Batch, Failure>),
    /// The LAPI task streamed a snapshot into a fresh cache ([`Action::Poll`] with `fresh`).
    Snapshot(Result<(Box<DecisionCache>, StreamStats), Failure>),
    /// The LAPI task finished a usage-metrics push; `Ok(false)` when LAPI does not support them.
    UsagePushed(Result<bool, Failure>),
    /// A router job reports.
    Router(JobId, RouterEvent),
    /// The LAPI host's addresses, resolved again (they are protected).
    LapiAddresses(Vec<std::net::IpAddr>),
    /// The router connection ended while no job was running (a reboot, a killed session).
    RouterClosed(String),
    /// Rows of the router's log for guard: live ones as they arrive, or the recent buffer
    /// after the follower (re)connected (`backfill`). `now_ms` is the wall clock at arrival,
    /// milliseconds since the Unix epoch.
    Log {
        /// The rows, oldest first.
        rows: Vec<guard::LogRow>,
        /// The recent buffer, read after a (re)connect.
        backfill: bool,
        /// Arrival time.
        now_ms: u64,
    },
    /// The log follower's connection went up or down.
    LogFollower(bool),
    /// The watcher task answered [`Action::PushAlerts`].
    AlertsPushed(Result<(), Failure>),
    /// LAPI (1.6.6+) allowlists a source guard banned: the ban is lifted.
    LapiAllowlisted(crowdsec_lapi::Value, String),
}

/// What a router job reports.
#[derive(Debug)]
pub enum RouterEvent {
    /// Logged in ([`Action::Connect`]); the connection's own and the router's address, when
    /// known (both are protected).
    Connected {
        /// tikban's address, as the router sees it.
        local: Option<std::net::IpAddr>,
        /// The router's address.
        peer: Option<std::net::IpAddr>,
    },
    /// The connection or login failed.
    ConnectFailed(Failure),
    /// Every op of an [`Action::Send`], with its outcome, in order.
    OpsDone(Vec<(Op, Outcome)>),
    /// Rows of an [`Action::Print`] (more may follow).
    Rows(Vec<RouterRow>),
    /// The print ended with `!done`.
    PrintDone,
    /// [`Action::ReadResource`] answered.
    Resource(Resource),
    /// [`Action::ReadRules`] answered: per enabled family, its scan or the failure of its prints.
    Rules(Vec<(Family, Result<RuleScan, Failure>)>),
    /// [`Action::ReadSessions`] answered: the addresses of the router's active admin sessions.
    Sessions(Vec<std::net::IpAddr>),
    /// The job failed as a whole.
    Failed(Failure),
}

/// An output: what the daemon must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Poll the decision stream, in the LAPI task, ending by `deadline` at the latest.
    Poll {
        /// Ask for a `startup=true` snapshot.
        startup: bool,
        /// Stream the snapshot into a fresh cache ([`Event::Snapshot`]): the desired state holds
        /// no LAPI decision yet, so nothing needs a merge, and no batch is held on the way.
        fresh: bool,
        /// Overall deadline.
        deadline: Instant,
    },
    /// Push usage metrics (`items` of one window of `window` seconds) in the LAPI task.
    PushUsage {
        /// The metric items.
        items: Vec<MetricItem>,
        /// The window, seconds.
        window: u64,
    },
    /// Connect and log in to the router; report [`RouterEvent::Connected`] or `ConnectFailed`.
    Connect {
        /// The job.
        job: JobId,
    },
    /// Abort the current router job and drop the connection.
    Disconnect {
        /// Why, for the log.
        reason: String,
    },
    /// Send these ops pipelined; report [`RouterEvent::OpsDone`].
    Send {
        /// The job.
        job: JobId,
        /// The ops.
        ops: Vec<Op>,
    },
    /// Stream the print of one list; report `Rows`, then `PrintDone` or `Failed`.
    Print {
        /// The job.
        job: JobId,
        /// The family.
        family: Family,
    },
    /// Read `/system/resource`; report `Resource` or `Failed`.
    ReadResource {
        /// The job.
        job: JobId,
    },
    /// Scan the firewall rules that use the lists; report `Rules` or `Failed`.
    ReadRules {
        /// The job.
        job: JobId,
    },
    /// Read `/user/active`; report `Sessions` or `Failed`.
    ReadSessions {
        /// The job.
        job: JobId,
    },
    /// Share guard's bans with LAPI (the watcher task); report [`Event::AlertsPushed`].
    PushAlerts(Vec<crowdsec_lapi::Alert>),
}

/// Usage-metrics state.
#[derive(Debug, Default)]
struct Usage {
    next_at: Option<Instant>,
    deltas: crowdsec_lapi::CounterDeltas,
    /// Previous values of the counters the push in flight moved (its rollback).
    in_flight: Option<Vec<(String, Option<u64>)>>,
}

/// Heap bytes by structure ([`Supervisor::heap_profile`]).
#[derive(Debug, Clone, Copy)]
pub struct HeapProfile {
    /// The decision cache, by part.
    pub cache: crowdsec_lapi::HeapBytes,
    /// The router view and the queue of values to add.
    pub view: usize,
    /// Guard's source table.
    pub guard: usize,
}

/// The supervisor. See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    cache: DecisionCache,
    engine: Engine,
    lapi: LapiState,
    needs_snapshot: bool,
    lapi_backoff: Backoff,
    router: RouterState,
    router_backoff: Backoff,
    router_failures: u32,
    rng: StdRng,
    next_job: JobId,
    /// Ops planned against a fresh view, waiting for the next write job.
    outbox: VecDeque<Op>,
    tick_at: Instant,
    housekeeping_at: Instant,
    rules_due: bool,
    reconcile_at: Instant,
    /// A stale view is not reconciled before this (after a failed print: the next tick).
    reconcile_retry_at: Instant,
    last_uptime: Option<Duration>,
    /// Absolute (bytes, packets) of the drop rules per family, as last read.
    dropped: [Option<(u64, u64)>; 2],
    /// "No drop rule" warnings per family.
    rule_warnings: [Option<String>; 2],
    usage: Usage,
    synced_once: bool,
    silent_timeouts: u32,
    /// The connection must be dropped (lost reply, too many rows, …): the next `poll_action`
    /// says so.
    pending_loss: Option<String>,
    refusals: Throttle,
    /// What may be enforced: safety rules and the entry budget.
    policy: Policy,
    /// [`MAX_PLANNED_CHANGES`], lowered by tests.
    max_planned: usize,
    /// Guard's detectors and alert queue.
    guard: Option<guard::GuardState>,
    /// Oversized LAPI elements already warned about (id, value); bounded.
    oversized_warned: Vec<(Option<i64>, Option<crowdsec_lapi::Value>)>,
    /// The log follower is connected.
    log_up: bool,
    /// Refused values, for logs and `/health`.
    skips: Skips,
    /// `/system/resource` memory (total, free), bytes, as last read.
    memory: Option<(u64, u64)>,
    /// When `/user/active` was last read; `None` before the first read.
    sessions_at: Option<Instant>,
    /// `/user/active` cannot be read (no policy): do not hold writes for it.
    sessions_unreadable: bool,
    /// `/system/resource` was read (or failed) at least once: a derived budget is known or
    /// cannot be.
    resource_seen: bool,
    metrics: Arc<Metrics>,
}

impl Supervisor {
    /// A supervisor that has done nothing yet: its first actions are a snapshot poll and a
    /// router connection. `seed` feeds the backoff jitter.
    pub fn new(settings: Settings, metrics: Arc<Metrics>, seed: u64, now: Instant) -> Self {
        let engine = Engine::new(
            EngineConfig {
                lists: settings.lists.clone(),
                prefix: settings.comment_prefix.clone(),
                refresh_margin: settings.refresh_margin(),
                row_slack: crate::engine::reconcile::ROW_SLACK,
                max_removals: crate::engine::reconcile::MAX_REMOVALS,
            },
            now,
        );
        let guard_state = settings.guard.clone().and_then(|g| {
            match crate::guard::Guard::new(g, [seed, seed.rotate_left(32) ^ 0x7469_6b62_616e]) {
                Ok(guard) => Some(guard::GuardState::new(guard, settings.share)),
                Err(problems) => {
                    // The configuration checked these settings already.
                    tracing::error!(?problems, "guard settings refused; guard is off");
                    None
                }
            }
        });
        let mut policy = Policy::new(Safety::new(settings.safety.clone()), now);
        if let MaxEntries::Fixed(n) = settings.max_entries {
            // The cache is empty: nothing flips.
            let _ = policy.set_limit(Some(n), &DecisionCache::new(now));
        }
        let backoff = || match Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.3) {
            Ok(b) => b,
            // 0 < 1 s <= 60 s and a jitter within 0..=1: these constants are valid.
            Err(_) => unreachable!("constant backoff parameters are valid"),
        };
        Supervisor {
            usage: Usage {
                next_at: settings.metrics_interval.map(|i| now + i),
                ..Usage::default()
            },
            reconcile_at: now + settings.reconciliation_interval,
            reconcile_retry_at: now,
            settings,
            cache: DecisionCache::new(now),
            engine,
            lapi: LapiState::Starting {
                poll: PollState::Due(now),
            },
            needs_snapshot: true,
            lapi_backoff: backoff(),
            router: RouterState::Disconnected { retry_at: now },
            router_backoff: backoff(),
            router_failures: 0,
            rng: StdRng::seed_from_u64(seed),
            next_job: 1,
            outbox: VecDeque::new(),
            tick_at: now + TICK,
            housekeeping_at: now,
            rules_due: false,
            last_uptime: None,
            dropped: [None; 2],
            rule_warnings: [None, None],
            synced_once: false,
            silent_timeouts: 0,
            pending_loss: None,
            refusals: Throttle::default(),
            policy,
            max_planned: MAX_PLANNED_CHANGES,
            guard: guard_state,
            oversized_warned: Vec::new(),
            log_up: false,
            skips: Skips::default(),
            memory: None,
            sessions_at: None,
            sessions_unreadable: false,
            resource_seen: false,
            metrics,
        }
    }

    // === getters ===

    /// The desired state.
    pub fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    /// The router view.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Heap bytes of the structures that grow with decisions and sources (`docs/benchmarks.md`).
    pub fn heap_profile(&self) -> HeapProfile {
        HeapProfile {
            cache: self.cache.heap_bytes(),
            view: self.engine.heap_bytes(),
            guard: self.guard.as_ref().map_or(0, guard::GuardState::heap_bytes),
        }
    }

    /// LAPI's state.
    pub fn lapi_state(&self) -> &LapiState {
        &self.lapi
    }

    /// The router's state.
    pub fn router_state(&self) -> &RouterState {
        &self.router
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What `/health` reports now: derived from the states, with overdue work counted as down.
    pub fn health(&self, now: Instant) -> Health {
        let lapi_up = match &self.lapi {
            LapiState::Synced {
                poll,
                failing_since: None,
            } => !matches!(poll, PollState::InFlight { deadline, .. } if now > *deadline),
            _ => false,
        };
        let router_up = match &self.router {
            RouterState::Connected { job, .. } => job.as_ref().is_none_or(|j| now <= j.deadline),
            _ => false,
        };
        let mut warnings: Vec<String> = self.rule_warnings.iter().flatten().cloned().collect();
        warnings.extend(self.policy_warnings());
        Health {
            lapi_up,
            router_up,
            synced: self.synced_once,
            warnings,
            skipped: self.skips.report(self.policy.budget()),
        }
    }

    /// Sets the gauges (decisions per origin, entries per family, connection states). Walks the
    /// cache: call it at most about once a second.
    pub fn publish(&self, now: Instant) {
        let m = &self.metrics;
        let health = self.health(now);
        m.set(
            metrics::CONNECTED,
            &[("peer", "lapi")],
            f64::from(u8::from(health.lapi_up)),
        );
        m.set(
            metrics::CONNECTED,
            &[("peer", "router")],
            f64::from(u8::from(health.router_up)),
        );
        for family in Family::ALL {
            m.set(
                metrics::ROUTER_ENTRIES,
                &[("ip_type", family.label())],
                self.engine.owned_count(family) as f64,
            );
        }
        let series = self
            .cache
            .active_counts()
            .into_iter()
            .map(|c| {
                (
                    vec![
                        ("origin", c.origin.to_string()),
                        ("ip_type", if c.ipv6 { "ipv6" } else { "ipv4" }.to_owned()),
                    ],
                    c.count as f64,
                )
            })
            .collect();
        m.replace_capped(metrics::DECISIONS, series, "origin", metrics::MAX_ORIGINS);
        let budget = self.policy.budget();
        match budget.limit() {
            Some(limit) => m.set(metrics::ENTRY_BUDGET, &[], limit as f64),
            None => m.replace(metrics::ENTRY_BUDGET, Vec::new()),
        }
        m.set(metrics::OVER_BUDGET, &[], budget.excluded() as f64);
        if self.guard.is_some() {
            m.set(
                metrics::GUARD_LOG_CONNECTED,
                &[],
                f64::from(u8::from(self.log_up)),
            );
        }
        self.publish_guard();
    }

    // === inputs ===

    /// Feeds one event.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Polled(result) => self.on_polled(now, result),
            Event::Snapshot(result) => self.on_snapshot(now, result),
            Event::UsagePushed(result) => self.on_usage_pushed(result),
            Event::Router(job, event) => self.on_router(now, job, event),
            Event::Log {
                rows,
                backfill,
                now_ms,
            } => self.on_log(now, rows, backfill, now_ms),
            Event::LogFollower(up) => self.log_up = up,
            Event::AlertsPushed(result) => self.on_alerts_pushed(now, result),
            Event::LapiAllowlisted(value, reason) => self.on_lapi_allowlisted(now, value, &reason),
            Event::LapiAddresses(addresses) => {
                self.protect(now, crate::safety::Kind::Lapi, addresses);
            }
            Event::RouterClosed(cause) => {
                if matches!(self.router, RouterState::Connected { .. }) {
                    self.pending_loss = Some(cause);
                }
            }
        }
    }

    /// What every successful poll does: metrics, the log line, the LAPI state, the warning
    /// about an oversized element. Returns true for the first snapshot.
    fn poll_succeeded(&mut self, now: Instant, startup: bool, stats: &StreamStats) -> bool {
        self.metrics.inc(metrics::LAPI_POLLS, &[("result", "ok")]);
        let skipped = stats.skipped + stats.oversized;
        if skipped > 0 {
            self.metrics
                .inc_by(metrics::LAPI_SKIPPED, &[], skipped as f64);
        }
        if let Some(e) = &stats.first_oversized {
            // Warn once per element: a too-large decision comes back in every snapshot.
            let key = (e.id, e.value);
            if !self.oversized_warned.contains(&key) {
                if self.oversized_warned.len() >= 64 {
                    self.oversized_warned.clear();
                }
                self.oversized_warned.push(key);
                let id = e.id.map_or_else(|| "?".to_owned(), |i| i.to_string());
                let value = e.value.map_or_else(|| "?".to_owned(), |v| v.to_string());
                tracing::warn!(
                    id = %id,
                    value = %value,
                    oversized = stats.oversized,
                    "LAPI sent a decision larger than the per-element limit (a very long reason or scenario?); it is skipped, the rest applies"
                );
            }
        }
        let was_up = matches!(
            self.lapi,
            LapiState::Synced {
                failing_since: None,
                ..
            }
        );
        if !was_up {
            tracing::info!(
                snapshot = startup,
                new = stats.new,
                deleted = stats.deleted,
                "LAPI connected"
            );
        }
        let first = !self.lapi.is_synced();
        self.lapi = LapiState::Synced {
            poll: PollState::Due(now + self.settings.update_frequency),
            failing_since: None,
        };
        self.needs_snapshot = false;
        self.lapi_backoff.reset();
        first
    }

    /// The first snapshot, streamed into a fresh cache by the LAPI task: it becomes the desired
    /// state (guard's bans held so far are carried over), and the router is reconciled.
    fn on_snapshot(
        &mut self,
        now: Instant,
        result: Result<(Box<DecisionCache>, StreamStats), Failure>,
    ) {
        match result {
            Ok((cache, stats)) => {
                let first = self.poll_succeeded(now, true, &stats);
                let old = std::mem::replace(&mut self.cache, *cache);
                if self.settings.ipv6_prefix < 128 {
                    let p = self.settings.ipv6_prefix;
                    self.cache.remap_others(|v| aggregate(v, p));
                }
                self.cache.absorb(&old, now);
                drop(old);
                self.invalidate_view(if first { "startup" } else { "resync" });
                self.after_quiet_apply(now);
            }
            Err(failure) => self.on_polled(now, Err(failure)),
        }
    }

    fn on_polled(&mut self, now: Instant, result: Result<Batch, Failure>) {
        match result {
            Ok(batch) => {
                let first = self.poll_succeeded(now, batch.is_startup(), &batch.stats());
                self.apply(now, batch);
                if first {
                    // A view built before the first snapshot was additive (guard's bans only):
                    // now the whole desired state is known, compare everything.
                    self.invalidate_view("startup");
                }
            }
            Err(failure) => {
                self.metrics
                    .inc(metrics::LAPI_POLLS, &[("result", "error")]);
                self.needs_snapshot = true;
                let delay = self.lapi_backoff.next_delay(&mut self.rng);
                let first = match &self.lapi {
                    LapiState::Synced { failing_since, .. } => failing_since.is_none(),
                    LapiState::Starting { .. } => self.lapi_backoff.attempts() <= 1,
                };
                let hint = if failure.kind == FailureKind::Auth {
                    "; check CROWDSEC_BOUNCER_API_KEY (cscli bouncers add) or the client certificate"
                } else {
                    ""
                };
                if first {
                    tracing::warn!(cause = %failure.message, retry_in = ?delay, "LAPI poll failed; router entries are kept as they are{hint}");
                } else {
                    tracing::debug!(cause = %failure.message, retry_in = ?delay, "LAPI poll failed again");
                }
                let poll = PollState::Due(now + delay);
                self.lapi = match &self.lapi {
                    LapiState::Starting { .. } => LapiState::Starting { poll },
                    LapiState::Synced { failing_since, .. } => LapiState::Synced {
                        poll,
                        failing_since: Some(failing_since.unwrap_or(now)),
                    },
                };
            }
        }
    }

    /// Applies one LAPI response to the desired state and plans what the view allows.
    fn apply(&mut self, now: Instant, mut batch: Batch) {
        if self.settings.ipv6_prefix < 128 {
            let p = self.settings.ipv6_prefix;
            batch.map_values(|v| aggregate(v, p));
        }
        let batch = &batch;
        let size = batch.adds().len() + batch.deletes().len();
        let plannable = match &self.router {
            RouterState::Connected { view, .. } => !matches!(view, View::Stale { .. }),
            _ => false,
        };
        if !plannable || size > self.max_planned {
            // A reconcile against the whole cache comes next anyway: skip the change-set (a 100k
            // snapshot would otherwise hold batch, change-set and cache at once).
            self.cache.apply_quiet(batch, now);
            if size > self.max_planned {
                self.invalidate_view("large update");
            }
            self.after_quiet_apply(now);
        } else {
            let changes = self.cache.apply(batch, now);
            self.on_changes(now, &changes);
        }
    }

    /// Makes the view stale (a reconcile follows); a reconcile in progress runs again after.
    fn invalidate_view(&mut self, reason: &'static str) {
        if let RouterState::Connected { view, .. } = &mut self.router {
            match view {
                View::Reconciling(r) => r.again = true,
                _ => {
                    *view = View::Stale { reason };
                    self.outbox.clear();
                }
            }
        }
    }

    fn on_usage_pushed(&mut self, result: Result<bool, Failure>) {
        let rollback = self.usage.in_flight.take();
        match result {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    "LAPI does not support usage metrics (older than 1.6.3); no more pushes"
                );
                self.usage.next_at = None;
            }
            Err(f) => {
                // Keep the window: the counters' previous values come back, so the next push
                // carries this window's increases too.
                for (key, previous) in rollback.into_iter().flatten() {
                    self.usage.deltas.rollback(&key, previous);
                }
                tracing::debug!(cause = %f.message, "usage-metrics push failed; its window goes with the next push");
            }
        }
    }

    fn on_router(&mut self, now: Instant, job_id: JobId, event: RouterEvent) {
        match (&self.router, event) {
            (RouterState::Connecting { job, .. }, RouterEvent::Connected { local, peer })
                if *job == job_id =>
            {
                self.protect(now, crate::safety::Kind::Own, local);
                self.protect(now, crate::safety::Kind::Router, peer);
                self.router = RouterState::Connected {
                    since: now,
                    view: View::Stale {
                        reason: if self.synced_once {
                            "resync"
                        } else {
                            "startup"
                        },
                    },
                    job: None,
                };
                self.router_failures = 0;
                self.silent_timeouts = 0;
                self.housekeeping_at = now;
                self.metrics.inc(metrics::ROUTER_CONNECTS, &[]);
            }
            (RouterState::Connecting { job, .. }, RouterEvent::ConnectFailed(f))
                if *job == job_id =>
            {
                self.connect_failed(now, &f);
            }
            (RouterState::Connected { job: Some(j), .. }, event) if j.id == job_id => {
                self.on_job_event(now, event);
            }
            (_, event) => {
                tracing::debug!(job = job_id, ?event, "event of a finished job ignored");
            }
        }
    }

    fn connect_failed(&mut self, now: Instant, f: &Failure) {
        let delay = self.router_backoff.next_delay(&mut self.rng);
        self.router_failures += 1;
        // The first failure and then every tenth: RouterOS keeps 1000 log lines.
        if self.router_failures == 1 || self.router_failures % 10 == 0 {
            tracing::warn!(cause = %f.message, retry_in = ?delay, failures = self.router_failures, "router connection failed");
        }
        self.router = RouterState::Disconnected {
            retry_at: now + delay,
        };
    }

    /// The connection is gone or no longer trusted: back off, reconnect, reconcile.
    fn lose_router(&mut self, now: Instant, cause: &str) -> Action {
        let delay = self.router_backoff.next_delay(&mut self.rng);
        tracing::warn!(
            cause,
            retry_in = ?delay,
            "router connection lost; will reconnect and reconcile"
        );
        self.engine.abandon_reconcile();
        self.outbox.clear();
        self.router = RouterState::Disconnected {
            retry_at: now + delay,
        };
        Action::Disconnect {
            reason: cause.to_owned(),
        }
    }

    fn on_job_event(&mut self, now: Instant, event: RouterEvent) {
        let RouterState::Connected { job, view, .. } = &mut self.router else {
            return;
        };
        let Some(current) = job.as_mut() else {
            return;
        };
        match event {
            RouterEvent::Rows(rows) => {
                if let JobKind::Print { rows: n, .. } = &mut current.kind {
                    *n += rows.len();
                    current.deadline = current.started
                        + self.settings.command_timeout
                        + PER_ROW.saturating_mul(u32::try_from(*n).unwrap_or(u32::MAX));
                }
                for row in rows {
                    if let Err(e) = self.engine.reconcile_row(
                        row,
                        &Enforced {
                            cache: &self.cache,
                            policy: &self.policy,
                        },
                        now,
                    ) {
                        tracing::error!(cause = %e, "router print refused");
                        self.pending_loss = Some(e.to_string());
                        return;
                    }
                }
            }
            RouterEvent::PrintDone => {
                *job = None;
                self.metrics.inc(
                    metrics::ROUTER_COMMANDS,
                    &[("kind", "print"), ("result", "ok")],
                );
                if let View::Reconciling(r) = view {
                    let done = self.engine.finish_reconcile(&Enforced {
                        cache: &self.cache,
                        policy: &self.policy,
                    });
                    if !r.additive {
                        r.deferred += done.deferred;
                        self.outbox.extend(done.ops);
                    }
                    r.phase = match (r.phase, next_family(&self.settings, r.phase)) {
                        (_, Some(f)) => {
                            self.engine.begin_reconcile(
                                f,
                                &Enforced {
                                    cache: &self.cache,
                                    policy: &self.policy,
                                },
                            );
                            Phase::Print(f)
                        }
                        (_, None) => Phase::Write,
                    };
                }
            }
            RouterEvent::OpsDone(results) => {
                let started = current.started;
                *job = None;
                self.on_ops_done(now, started, results);
            }
            RouterEvent::Resource(res) => {
                *job = None;
                if let (Some(up), Some(before)) = (res.uptime, self.last_uptime)
                    && up < before
                {
                    tracing::warn!("router rebooted (uptime went back); full resync");
                    self.invalidate_view("reboot");
                }
                if res.uptime.is_some() {
                    self.last_uptime = res.uptime;
                }
                self.rules_due = true;
                self.resource_seen = true;
                if let (Some(total), Some(free)) = (res.total_memory, res.free_memory) {
                    self.on_memory(now, total, free);
                }
            }
            RouterEvent::Rules(scans) => {
                *job = None;
                self.on_rules(scans);
            }
            RouterEvent::Failed(f) => {
                let kind = current.kind.clone();
                *job = None;
                if matches!(kind, JobKind::Print { .. }) {
                    let result = if f.kind == FailureKind::Refused {
                        "trap"
                    } else {
                        "error"
                    };
                    self.metrics.inc(
                        metrics::ROUTER_COMMANDS,
                        &[("kind", "print"), ("result", result)],
                    );
                }
                if f.kind == FailureKind::Lost {
                    self.pending_loss = Some(f.message);
                    return;
                }
                match kind {
                    JobKind::Print { .. } => {
                        // A trap or a timeout on a print: keep the connection, try again on the
                        // next tick. A user without `read` would otherwise fill the router's log
                        // with one line per tick.
                        self.engine.abandon_reconcile();
                        *view = View::Stale { reason: "resync" };
                        self.reconcile_retry_at = now + TICK;
                        let hint = policy_hint(&f.message);
                        if self.refusals.allow(now, WARN_EVERY) {
                            tracing::warn!(cause = %f.message, "router print failed{hint}");
                        } else {
                            tracing::debug!(cause = %f.message, "router print failed again");
                        }
                    }
                    JobKind::Send { .. } => {
                        tracing::debug!(cause = %f.message, "write job failed");
                    }
                    JobKind::Sessions => {
                        // A user without the policy to read sessions: protect nothing more, and
                        // stop holding writes for it (docs/safety.md).
                        self.sessions_unreadable = true;
                        tracing::warn!(cause = %f.message, "cannot read /user/active: the addresses of admin sessions are not protected");
                    }
                    JobKind::Resource | JobKind::Rules => {
                        self.resource_seen = true;
                        tracing::debug!(cause = %f.message, job = kind.name(), "router read failed");
                        self.rules_due = false;
                    }
                }
            }
            RouterEvent::Sessions(addresses) => {
                *job = None;
                self.sessions_at = Some(now);
                self.protect(now, crate::safety::Kind::AdminSession, addresses);
            }
            RouterEvent::Connected { .. } | RouterEvent::ConnectFailed(_) => {}
        }
    }
}

/// The family printed after `phase`, if any.
fn next_family(settings: &Settings, phase: Phase) -> Option<Family> {
    let after = match phase {
        Phase::Print(f) => f.index() + 1,
        Phase::Write => return None,
    };
    Family::ALL
        .into_iter()
        .skip(after)
        .find(|f| settings.lists[f.index()].is_some())
}

/// A hint for traps that mean the API user lacks a policy (least privilege, `docs/security.md`).
pub(crate) fn policy_hint(message: &str) -> &'static str {
    if message.contains("not enough permissions") {
        "; the router user's group needs the policies api,read,write (docs/security.md)"
    } else {
        ""
    }
}
