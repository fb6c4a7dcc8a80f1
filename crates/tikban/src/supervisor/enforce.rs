//! The enforcement side of the supervisor: desired-state changes through the policy, updates of
//! the automatic protections, the entry budget, and the router's memory (`docs/safety.md`).

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use crowdsec_lapi::{Change, Value};

use super::{Enforced, MAX_DIRTY, MaxEntries, Refusal, RouterState, Supervisor, View, budget_for};
use crate::engine::{Op, Wanted};
use crate::metrics;
use crate::safety::{Kind, Reason, Reported, peer_text};

/// Refused values kept for `/health`.
const RECENT_SKIPS: usize = 16;
/// Below this share of free memory, `/health` warns (`docs/safety.md`).
const LOW_MEMORY_PERCENT: u64 = 10;

/// Refused values: counts by reason, the latest few, and which were already logged.
#[derive(Debug)]
pub(super) struct Skips {
    counts: [u64; Reason::ALL.len() + 1],
    recent: VecDeque<String>,
    reported: Reported,
}

impl Default for Skips {
    fn default() -> Self {
        Skips {
            counts: [0; Reason::ALL.len() + 1],
            recent: VecDeque::new(),
            reported: Reported::new(crate::safety::DEFAULT_REPORTED),
        }
    }
}

impl Skips {
    fn index(refusal: Refusal) -> usize {
        match refusal {
            Refusal::Safety(r) => r.index(),
            Refusal::Budget => Reason::ALL.len(),
        }
    }

    /// `/health`'s view.
    pub(super) fn report(&self, budget: &super::Budget) -> metrics::SkipReport {
        let mut counts: Vec<(&'static str, u64)> = Reason::ALL
            .iter()
            .map(|r| (r.label(), self.counts[r.index()]))
            .collect();
        counts.push(("budget", self.counts[Reason::ALL.len()]));
        counts.retain(|(_, n)| *n > 0);
        metrics::SkipReport {
            counts,
            recent: self.recent.iter().cloned().collect(),
            budget: budget.limit().map(|l| (l, budget.excluded())),
        }
    }
}

/// The value an IPv6 ban is enforced as: its prefix of `prefix` bits (`IPV6_BAN_PREFIX`). Longer
/// IPv6 networks are widened the same way; IPv4 and wider networks stay as they are.
pub(super) fn aggregate(value: Value, prefix: u8) -> Value {
    if value.is_ipv6() && value.prefix_len() > prefix {
        Value::network(value.addr(), prefix).unwrap_or(value)
    } else {
        value
    }
}

impl Supervisor {
    /// Desired-state changes: through the safety rules and the budget, then planned against a
    /// fresh view, remembered during a reconcile, left to the next reconcile otherwise.
    pub(super) fn on_changes(&mut self, now: Instant, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        // The budget first, so that a new ban is judged against the boundary it moves.
        let budgeted = self.policy.budget().limit().is_some();
        let mut replan = if budgeted {
            self.policy.rebudget(&self.cache)
        } else {
            Vec::new()
        };
        let mut plannable = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Added {
                    value,
                    expires_at,
                    origin,
                } => match self.policy.refusal(value, *expires_at, origin) {
                    Some(refusal) => self.note_skip(*value, refusal),
                    None => plannable.push(change.clone()),
                },
                Change::Removed { value } => {
                    self.skips.reported.forget(value);
                    plannable.push(change.clone());
                }
                // An extension can move a value across the budget's boundary.
                Change::ExpiryChanged { value, .. } if budgeted => replan.push(*value),
                Change::ExpiryChanged { .. } => {}
            }
        }
        let RouterState::Connected { view, .. } = &mut self.router else {
            return;
        };
        match view {
            View::Fresh => {
                let ops = self.engine.plan_changes(&plannable, now);
                self.outbox.extend(ops);
                self.replan_values(now, replan);
            }
            View::Reconciling(r) => {
                let values = plannable
                    .iter()
                    .filter_map(|c| match c {
                        Change::Added { value, .. } | Change::Removed { value } => Some(*value),
                        Change::ExpiryChanged { .. } => None,
                    })
                    .chain(replan);
                for value in values {
                    if r.dirty.len() >= MAX_DIRTY {
                        r.again = true;
                        break;
                    }
                    r.dirty.push(value);
                }
            }
            View::Stale { .. } => {}
        }
    }

    /// Makes the router agree with the policy for `values`, whose verdict may have changed.
    fn replan_values(&mut self, now: Instant, values: Vec<Value>) {
        if values.is_empty() {
            return;
        }
        self.drop_unsent_adds(&values);
        let RouterState::Connected { view, .. } = &mut self.router else {
            return;
        };
        match view {
            View::Fresh if values.len() > self.max_planned => {
                self.invalidate_view("policy change");
            }
            View::Fresh => {
                let desired = Enforced {
                    cache: &self.cache,
                    policy: &self.policy,
                };
                let ops = self.engine.replan(&values, &desired, now);
                self.outbox.extend(ops);
            }
            View::Reconciling(r) => {
                if r.dirty.len() + values.len() > MAX_DIRTY {
                    r.again = true;
                } else {
                    r.dirty.extend(values);
                }
            }
            View::Stale { .. } => {}
        }
    }

    /// Drops the adds still waiting in the outbox for those of `values` that are no longer
    /// wanted, and forgets them in the engine: they were never sent, so nothing is on the router
    /// to remove. Without this, a ban planned before a `/user/active` read that protects its
    /// address (or before the budget's boundary moved past it) would still be written, and
    /// removed only once its add returned: the owner's address on the drop list, briefly.
    fn drop_unsent_adds(&mut self, values: &[Value]) {
        if !self.outbox.iter().any(|op| matches!(op, Op::Add { .. })) {
            return;
        }
        let desired = Enforced {
            cache: &self.cache,
            policy: &self.policy,
        };
        let unwanted: HashSet<Value> = values
            .iter()
            .filter(|v| desired.wanted(v).is_none())
            .copied()
            .collect();
        if unwanted.is_empty() {
            return;
        }
        let engine = &mut self.engine;
        self.outbox.retain(|op| match op {
            Op::Add { value, .. } if unwanted.contains(value) => {
                engine.forget(value);
                false
            }
            _ => true,
        });
    }

    /// After a LAPI response was applied without a change-set (a snapshot, a large update): the
    /// budget again, and the refused values counted and logged once.
    pub(super) fn after_quiet_apply(&mut self, _now: Instant) {
        let _ = self.policy.rebudget(&self.cache);
        let mut refused = Vec::new();
        for (value, expires_at, origin) in self.cache.iter() {
            if let Some(r) = self.policy.refusal(&value, expires_at, origin) {
                refused.push((value, r));
            }
        }
        for (value, r) in refused {
            self.note_skip(value, r);
        }
    }

    /// One refused value: counted, logged once at info (safety reasons; the budget is reported
    /// as a whole), and listed in `/health`.
    fn note_skip(&mut self, value: Value, refusal: Refusal) {
        if !self.skips.reported.first_time(value) {
            return;
        }
        self.skips.counts[Skips::index(refusal)] += 1;
        self.metrics
            .inc(metrics::DECISIONS_SKIPPED, &[("reason", refusal.label())]);
        if let Refusal::Safety(reason) = refusal {
            tracing::info!(%value, reason = reason.label(), why = reason.why(), "ban not enforced");
            if self.skips.recent.len() == RECENT_SKIPS {
                self.skips.recent.pop_front();
            }
            self.skips
                .recent
                .push_back(peer_text(&format!("{value}: {}", reason.label())));
        }
    }

    /// New addresses for one automatic protection (own address, router, LAPI host, admin
    /// sessions): the values whose verdict changes are written or removed.
    pub(super) fn protect(
        &mut self,
        now: Instant,
        kind: Kind,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) {
        let update = self
            .policy
            .safety
            .set_kind(kind, addresses.into_iter().map(Value::from_ip));
        if update.left_out > 0 {
            tracing::warn!(
                kind = kind.label(),
                left_out = update.left_out,
                "too many addresses to protect; the rest are not protected"
            );
        }
        if update.is_empty() {
            return;
        }
        // The cached values inside the changed addresses: looked up one by one when there are
        // few candidates (one session address: 33 look-ups), scanned otherwise.
        let mut values: Vec<Value> = match update.reasons.lookups(4096) {
            Some(candidates) => candidates
                .into_iter()
                .filter(|v| self.cache.expires_at(v).is_some())
                .collect(),
            None => self
                .cache
                .iter()
                .map(|(v, _, _)| v)
                .filter(|v| update.reasons.intersects(v))
                .collect(),
        };
        for v in &values {
            if let Some((e, o)) = crate::engine::Wanted::wanted(&self.cache, v)
                && let Some(r) = self.policy.refusal(v, e, &o)
            {
                self.note_skip(*v, r);
            }
        }
        if self.policy.budget().limit().is_some() {
            values.extend(self.policy.rebudget(&self.cache));
        }
        self.replan_values(now, values);
    }

    /// `/system/resource` memory: the gauges, the low-memory warning, and the derived budget.
    pub(super) fn on_memory(&mut self, now: Instant, total: u64, free: u64) {
        self.memory = Some((total, free));
        self.metrics
            .set(metrics::ROUTER_MEMORY, &[("kind", "total")], total as f64);
        self.metrics
            .set(metrics::ROUTER_MEMORY, &[("kind", "free")], free as f64);
        if self.settings.max_entries == MaxEntries::Auto && self.policy.budget().limit().is_none() {
            let limit = budget_for(total, free);
            tracing::info!(
                limit,
                total_mib = total >> 20,
                free_mib = free >> 20,
                "entry budget derived from the router's memory (MAX_ENTRIES to set it)"
            );
            let flipped = self.policy.set_limit(Some(limit), &self.cache);
            self.replan_values(now, flipped);
        }
    }

    /// True once the budget is known: fixed, unlimited, or derived from a `/system/resource`
    /// read (a router that reports no memory gets no derived budget).
    pub(super) fn budget_known(&self) -> bool {
        self.settings.max_entries != MaxEntries::Auto
            || self.policy.budget().limit().is_some()
            || self.resource_seen
    }

    /// `/health` warnings of the policy: values over budget, low router memory.
    pub(super) fn policy_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let b = self.policy.budget();
        if let Some(limit) = b.limit()
            && b.excluded() > 0
        {
            w.push(format!(
                "entry budget: {} banned values are not on the router (limit {limit}); the lowest priority and shortest bans are left out (docs/safety.md)",
                b.excluded()
            ));
        }
        if let Some((total, free)) = self.memory
            && total > 0
            && free * 100 < total * LOW_MEMORY_PERCENT
        {
            w.push(format!(
                "router memory is low: {} MiB free of {} MiB",
                free >> 20,
                total >> 20
            ));
        }
        w
    }
}
