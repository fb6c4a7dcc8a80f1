//! The output side: which action is due now, what a write job's outcomes mean, and when the next
//! timer fires.

use std::time::{Duration, Instant};

use crate::engine::{Family, Op, Outcome, Tally};
use crate::metrics;

use super::{
    Action, BACKOFF_RESET_AFTER, Enforced, FailureKind, HOUSEKEEPING, Job, JobKind,
    MAX_SILENT_TIMEOUTS, PER_OP, Phase, PollState, Reconcile, RouterState, RuleScan, SEND_CHUNK,
    SESSIONS_FRESH, Supervisor, TICK, View, WARN_EVERY, policy_hint,
};

impl Supervisor {
    /// The next action due at `now`, if any. Call until it returns `None` after every event and
    /// timer.
    #[must_use]
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(a) = self.lapi_action(now) {
            return Some(a);
        }
        if self.cache.next_expiry().is_some_and(|e| e <= now) {
            let changes = self.cache.expire(now);
            self.on_changes(now, &changes);
        }
        self.router_action(now)
    }

    /// When [`poll_action`](Self::poll_action) may next have something to do (or `/health` may
    /// change), if no event comes first.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let mut t = now + TICK;
        match self.lapi.poll() {
            PollState::Due(at) => t = t.min(*at),
            PollState::InFlight { deadline, .. } => t = t.min(*deadline + Duration::from_millis(1)),
        }
        if let Some(at) = self.usage.next_at {
            t = t.min(at);
        }
        if let Some(at) = self.alert_timeout(now) {
            t = t.min(at);
        }
        if let Some(e) = self.cache.next_expiry() {
            // At most once a second: `expire` scans the cache.
            t = t.min(e.max(now + Duration::from_secs(1)));
        }
        match &self.router {
            RouterState::Disconnected { retry_at } => t = t.min(*retry_at),
            RouterState::Connecting { deadline, .. } => t = t.min(*deadline),
            RouterState::Connected { job: Some(j), .. } => {
                t = t.min(j.deadline + Duration::from_millis(1));
            }
            RouterState::Connected { job: None, .. } => {
                t = t
                    .min(self.tick_at)
                    .min(self.housekeeping_at)
                    .min(self.reconcile_at);
            }
        }
        t.max(now)
    }

    fn lapi_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(a) = self.alert_action(now) {
            return Some(a);
        }
        if let PollState::Due(at) = *self.lapi.poll()
            && now >= at
        {
            let startup = self.needs_snapshot;
            let timeout = if startup {
                self.settings.snapshot_timeout
            } else {
                self.settings.poll_timeout
            };
            let deadline = now + timeout;
            *self.lapi.poll_mut() = PollState::InFlight {
                startup,
                since: now,
                deadline,
            };
            // No LAPI decision held yet (nothing, or guard's bans only): the snapshot can go
            // straight into a fresh cache.
            let fresh = startup && !self.lapi.is_synced();
            return Some(Action::Poll {
                startup,
                deadline,
                fresh,
            });
        }
        let interval = self.settings.metrics_interval?;
        if self.usage.in_flight.is_none()
            && self.lapi.is_synced()
            && self.usage.next_at.is_some_and(|at| now >= at)
        {
            self.usage.next_at = Some(now + interval);
            let (items, rollback) = usage_items(self);
            self.usage.in_flight = Some(rollback);
            return Some(Action::PushUsage {
                items,
                window: interval.as_secs(),
            });
        }
        None
    }

    fn new_job(&mut self) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        id
    }

    fn router_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(cause) = self.pending_loss.take() {
            return Some(self.lose_router(now, &cause));
        }
        match &self.router {
            RouterState::Disconnected { retry_at } => {
                if now < *retry_at {
                    return None;
                }
                let job = self.new_job();
                self.router = RouterState::Connecting {
                    job,
                    deadline: now + self.settings.connect_timeout,
                };
                Some(Action::Connect { job })
            }
            RouterState::Connecting { deadline, .. } => {
                if now <= *deadline {
                    return None;
                }
                let f = super::Failure::new(
                    FailureKind::Timeout,
                    format!(
                        "no login within MIKROTIK_CONN_TIMEOUT ({:?})",
                        self.settings.connect_timeout
                    ),
                );
                self.connect_failed(now, &f);
                Some(Action::Disconnect { reason: f.message })
            }
            RouterState::Connected { since, job, .. } => {
                if let Some(j) = job {
                    if now > j.deadline {
                        let cause = format!(
                            "the {} got no answer by its deadline ({:?} after it started)",
                            j.kind.name(),
                            j.deadline.saturating_duration_since(j.started)
                        );
                        return Some(self.lose_router(now, &cause));
                    }
                    return None;
                }
                if now.saturating_duration_since(*since) >= BACKOFF_RESET_AFTER {
                    self.router_backoff.reset();
                }
                self.next_router_job(now)
            }
        }
    }

    /// The next job for an idle, connected router.
    fn next_router_job(&mut self, now: Instant) -> Option<Action> {
        // Before the first snapshot the desired state is unknown, so nothing may be removed; but
        // guard's bans do not need LAPI: an additive reconcile writes them (and removes nothing).
        let additive = !self.lapi.is_synced() && self.has_local_bans();
        let synced = (self.lapi.is_synced() || additive) && self.budget_known();
        let RouterState::Connected { view, .. } = &mut self.router else {
            return None;
        };
        match view {
            View::Stale { reason } if synced && now >= self.reconcile_retry_at => {
                let reason = *reason;
                // The configuration enables at least one family.
                let first = Family::ALL
                    .into_iter()
                    .find(|f| self.settings.lists[f.index()].is_some())?;
                self.metrics
                    .inc(metrics::RECONCILIATIONS, &[("reason", reason)]);
                self.engine.begin_reconcile(
                    first,
                    &Enforced {
                        cache: &self.cache,
                        policy: &self.policy,
                    },
                );
                *view = View::Reconciling(Reconcile {
                    additive,
                    reason,
                    started: now,
                    phase: Phase::Print(first),
                    tally: Tally::default(),
                    dirty: Vec::new(),
                    again: false,
                    deferred: 0,
                });
                Some(self.start_print(now, first))
            }
            View::Reconciling(r) => match r.phase {
                Phase::Print(f) => Some(self.start_print(now, f)),
                Phase::Write => self.reconcile_write(now),
            },
            View::Fresh => self.fresh_job(now),
            View::Stale { .. } => self.housekeeping(now),
        }
    }

    fn start_print(&mut self, now: Instant, family: Family) -> Action {
        let id = self.new_job();
        self.set_job(Job {
            id,
            kind: JobKind::Print { family, rows: 0 },
            started: now,
            deadline: now + self.settings.command_timeout,
        });
        Action::Print { job: id, family }
    }

    fn set_job(&mut self, new: Job) {
        if let RouterState::Connected { job, .. } = &mut self.router {
            *job = Some(new);
        }
    }

    fn send(&mut self, now: Instant, ops: Vec<Op>) -> Action {
        let id = self.new_job();
        let n = ops.len();
        self.set_job(Job {
            id,
            kind: JobKind::Send { ops: n },
            started: now,
            deadline: now
                + self.settings.command_timeout
                + PER_OP.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)),
        });
        Action::Send { job: id, ops }
    }

    fn take_outbox(&mut self) -> Vec<Op> {
        let n = self.outbox.len().min(SEND_CHUNK);
        self.outbox.drain(..n).collect()
    }

    /// The write phase of a reconcile: removals, then missing adds in chunks, then the values
    /// that changed meanwhile; then the view is fresh.
    fn reconcile_write(&mut self, now: Instant) -> Option<Action> {
        if self.sessions_due(now, SESSIONS_FRESH) {
            return Some(self.read_sessions(now));
        }
        if !self.outbox.is_empty() {
            let ops = self.take_outbox();
            return Some(self.send(now, ops));
        }
        let ops = self.engine.plan_missing(
            &Enforced {
                cache: &self.cache,
                policy: &self.policy,
            },
            now,
            SEND_CHUNK,
        );
        if !ops.is_empty() {
            return Some(self.send(now, ops));
        }
        let RouterState::Connected {
            view: View::Reconciling(r),
            ..
        } = &mut self.router
        else {
            return None;
        };
        if !r.dirty.is_empty() {
            let dirty = std::mem::take(&mut r.dirty);
            let ops = self.engine.replan(
                &dirty,
                &Enforced {
                    cache: &self.cache,
                    policy: &self.policy,
                },
                now,
            );
            if !ops.is_empty() {
                self.outbox.extend(ops);
                let ops = self.take_outbox();
                return Some(self.send(now, ops));
            }
        }
        let RouterState::Connected { view, .. } = &mut self.router else {
            return None;
        };
        let View::Reconciling(r) = std::mem::replace(view, View::Fresh) else {
            return None;
        };
        let took = now.saturating_duration_since(r.started);
        if !r.tally.is_empty() {
            tracing::info!(
                "{} in {} ms ({} reconcile)",
                r.tally,
                took.as_millis(),
                r.reason
            );
        }
        if !self.synced_once {
            tracing::info!(
                decisions = self.cache.len(),
                took_ms = took.as_millis() as u64,
                "first sync done"
            );
        }
        self.synced_once = true;
        // Useful work: the connection has proven itself.
        self.router_backoff.reset();
        self.reconcile_at = if r.again || r.deferred > 0 {
            now
        } else {
            now + self.settings.reconciliation_interval
        };
        if r.again || r.deferred > 0 {
            *view = View::Stale {
                reason: if r.deferred > 0 {
                    "deferred removals"
                } else {
                    "large update"
                },
            };
        }
        // A print reveals real remaining times: plan the refreshes they call for at once.
        self.tick_at = now;
        self.next_router_job(now)
    }

    /// Jobs of a fresh view: pending writes first, then reads, the lazy refresh tick, and the
    /// periodic reconcile (after the tick, so a short reconcile interval cannot starve it).
    fn fresh_job(&mut self, now: Instant) -> Option<Action> {
        if self.outbox.iter().any(|op| matches!(op, Op::Add { .. }))
            && self.sessions_due(now, SESSIONS_FRESH)
        {
            return Some(self.read_sessions(now));
        }
        if !self.outbox.is_empty() {
            let ops = self.take_outbox();
            return Some(self.send(now, ops));
        }
        if let Some(a) = self.housekeeping(now) {
            return Some(a);
        }
        if now >= self.tick_at {
            self.tick_at = now + TICK;
            let ops = self.engine.plan_tick(
                &Enforced {
                    cache: &self.cache,
                    policy: &self.policy,
                },
                now,
            );
            if !ops.is_empty() {
                self.outbox.extend(ops);
                let ops = self.take_outbox();
                return Some(self.send(now, ops));
            }
        }
        if now >= self.reconcile_at {
            self.invalidate_view("periodic");
            return self.next_router_job(now);
        }
        None
    }

    /// `/system/resource` every [`HOUSEKEEPING`], then the rule scan.
    fn housekeeping(&mut self, now: Instant) -> Option<Action> {
        if now >= self.housekeeping_at {
            self.housekeeping_at = now + HOUSEKEEPING;
            let id = self.new_job();
            self.set_job(Job {
                id,
                kind: JobKind::Resource,
                started: now,
                deadline: now + self.settings.command_timeout,
            });
            return Some(Action::ReadResource { job: id });
        }
        if self.rules_due {
            self.rules_due = false;
            let id = self.new_job();
            // Up to four prints (raw and filter per family).
            self.set_job(Job {
                id,
                kind: JobKind::Rules,
                started: now,
                deadline: now + self.settings.command_timeout * 4,
            });
            return Some(Action::ReadRules { job: id });
        }
        if self.sessions_due(now, HOUSEKEEPING) {
            return Some(self.read_sessions(now));
        }
        None
    }

    /// `/user/active` is read every [`HOUSEKEEPING`], and again before new bans are written
    /// when the last read is older than [`SESSIONS_FRESH`] (`docs/safety.md`): whoever is logged
    /// in to the router right now is not banned by a list update.
    fn sessions_due(&self, now: Instant, max_age: Duration) -> bool {
        self.settings.safety.protections.admin_sessions
            && !self.sessions_unreadable
            && self
                .sessions_at
                .is_none_or(|t| now.saturating_duration_since(t) >= max_age)
    }

    fn read_sessions(&mut self, now: Instant) -> Action {
        // Mark the read as done now: a failure must not make it due again at once.
        self.sessions_at = Some(now);
        let id = self.new_job();
        self.set_job(Job {
            id,
            kind: JobKind::Sessions,
            started: now,
            deadline: now + self.settings.command_timeout,
        });
        Action::ReadSessions { job: id }
    }

    /// Outcomes of a write job: metrics, the engine's follow-ups, and the connection's health.
    pub(super) fn on_ops_done(
        &mut self,
        now: Instant,
        started: Instant,
        results: Vec<(Op, Outcome)>,
    ) {
        let mut lost = false;
        let mut refused = 0usize;
        let mut first_refusal: Option<String> = None;
        let mut tally = Tally::default();
        // Commands per (kind, result), added to the counter once per job rather than once per
        // op: a few distinct pairs against thousands of ops.
        let mut commands: Vec<((&'static str, &'static str), u32)> = Vec::new();
        for (op, outcome) in results {
            let label = match &outcome {
                Outcome::Done(_) | Outcome::Rows(_) => "ok",
                Outcome::Duplicate | Outcome::NoSuchItem | Outcome::Trap(_) => "trap",
                Outcome::Timeout | Outcome::Lost => "error",
            };
            let key = (op.kind(), label);
            match commands.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => commands.push((key, 1)),
            }
            match &outcome {
                Outcome::Lost => lost = true,
                Outcome::Timeout => self.silent_timeouts += 1,
                _ => self.silent_timeouts = 0,
            }
            let refusal = match &outcome {
                Outcome::Trap(m) => Some(m.as_str()),
                Outcome::Timeout => {
                    Some("no reply within MIKROTIK_CMD_TIMEOUT (command timed out)")
                }
                _ => None,
            };
            if let Some(m) = refusal {
                refused += 1;
                first_refusal.get_or_insert_with(|| m.to_owned());
            }
            if matches!(outcome, Outcome::Done(_)) {
                tally.count(&op);
            }
            let follow = self.engine.on_outcome(
                &op,
                outcome,
                &Enforced {
                    cache: &self.cache,
                    policy: &self.policy,
                },
                now,
            );
            self.outbox.extend(follow);
        }
        for ((kind, result), n) in commands {
            self.metrics.inc_by(
                metrics::ROUTER_COMMANDS,
                &[("kind", kind), ("result", result)],
                f64::from(n),
            );
        }
        if let Some(first) = first_refusal {
            let hint = policy_hint(&first);
            if self.refusals.allow(now, WARN_EVERY) {
                tracing::warn!(refused, first = %first, "router refused or timed out commands; retrying on the next tick{hint}");
            } else {
                tracing::debug!(refused, first = %first, "router refused or timed out commands");
            }
        }
        let took = now.saturating_duration_since(started);
        self.metrics.observe(metrics::SYNC_BATCH_SECONDS, took);
        match &mut self.router {
            // A reconcile logs one line for all its batches.
            RouterState::Connected {
                view: View::Reconciling(r),
                ..
            } => r.tally.add(&tally),
            _ if !tally.is_empty() => tracing::info!("{tally} in {} ms", took.as_millis()),
            _ => {}
        }
        if lost {
            self.pending_loss = Some("connection lost during a batch".into());
        } else if self.silent_timeouts >= MAX_SILENT_TIMEOUTS {
            self.pending_loss = Some(format!(
                "{} commands in a row got no reply: the connection looks desynchronised",
                self.silent_timeouts
            ));
            self.silent_timeouts = 0;
        }
    }

    /// Drop counters and "no drop rule" warnings. A family whose prints failed keeps its last
    /// counters and warning: a trap or a timeout says nothing about the rules.
    pub(super) fn on_rules(&mut self, scans: Vec<(Family, Result<RuleScan, super::Failure>)>) {
        for (family, scan) in scans {
            let Ok(scan) = scan else { continue };
            let i = family.index();
            let list = self.settings.lists[i].as_deref().unwrap_or_default();
            let base = if family == Family::V4 { "/ip" } else { "/ipv6" };
            let warning = (!scan.found).then(|| {
                format!(
                    "no enabled drop or reject rule in {base}/firewall raw or filter uses src-address-list={list}: bans are listed but not enforced"
                )
            });
            if warning != self.rule_warnings[i] {
                if let Some(w) = &warning {
                    tracing::warn!("{w}");
                }
                self.rule_warnings[i] = warning;
            }
            let label = [("ip_type", family.label())];
            let (pb, pp) = self.dropped[i].unwrap_or((0, 0));
            // Counters reset on reboot or rule changes: only count increases.
            self.metrics.inc_by(
                metrics::DROPPED_BYTES,
                &label,
                scan.bytes.saturating_sub(pb) as f64,
            );
            self.metrics.inc_by(
                metrics::DROPPED_PACKETS,
                &label,
                scan.packets.saturating_sub(pp) as f64,
            );
            self.dropped[i] = Some((scan.bytes, scan.packets));
        }
    }
}

/// The items of one usage-metrics push, and the rollback of the counters it moved.
fn usage_items(s: &mut Supervisor) -> (Vec<crowdsec_lapi::MetricItem>, Vec<(String, Option<u64>)>) {
    let dropped = [0, 1].map(|i| s.dropped[i].unwrap_or((0, 0)));
    crate::usage::items(&s.cache.active_counts(), dropped, &mut s.usage.deltas)
}
