//! Planning: desired-state changes, timer ticks and command outcomes become [`Op`]s.

use std::time::{Duration, Instant};

use crowdsec_lapi::{Change, Value};

use super::{Engine, Family, Held, Op, Outcome, RouterId, Wanted, clamp_secs};

/// A removal is skipped when the router entry ends by itself within this many seconds.
const EXPIRY_SLACK_SECS: u32 = 2;

impl Engine {
    /// Ops for one change-set of the cache. `ExpiryChanged` writes nothing: the refresh is lazy.
    pub fn plan_changes(&mut self, changes: &[Change], now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        for change in changes {
            match change {
                Change::Added {
                    value,
                    expires_at,
                    origin,
                } => {
                    if !self.enabled(value) || self.held(value).is_some() {
                        continue;
                    }
                    self.retry.remove(value);
                    ops.push(self.add_op(*value, *expires_at, origin.clone(), now));
                }
                Change::Removed { value } => {
                    self.retry.remove(value);
                    if let Some(op) = self.plan_removal(value, now) {
                        ops.push(op);
                    }
                }
                Change::ExpiryChanged { .. } => {}
            }
        }
        ops.sort_by_key(Op::order);
        ops
    }

    fn plan_removal(&mut self, value: &Value, now: Instant) -> Option<Op> {
        let held = *self.held(value)?;
        if !held.owned {
            // A manual entry enforced the ban; it stays, and we stop tracking it.
            self.forget(value);
            return None;
        }
        if !held.pending && held.expires <= self.secs(now) + EXPIRY_SLACK_SECS {
            // The router entry carries the same end as the decision and vanishes by itself
            // within a moment: a remove would be a wasted write (the day-of-churn benchmark
            // counted ~5 000 of them a day). Unbans by deletion still remove: their router
            // entries have hours left.
            self.forget(value);
            return None;
        }
        if held.pending {
            // The add (or another command) is in flight; its outcome sees the value is no
            // longer wanted and removes it then.
            return None;
        }
        match held.id {
            Some(id) => {
                if let Some(h) = self.held_mut(value) {
                    h.pending = true;
                }
                Some(Op::Remove {
                    value: *value,
                    id,
                    orphan: false,
                })
            }
            None => {
                if let Some(h) = self.held_mut(value) {
                    h.pending = true;
                }
                Some(Op::Lookup { value: *value })
            }
        }
    }

    /// Ops due on a timer tick: lazy refreshes of entries whose router timeout ends within the
    /// margin while the decision lasts longer, and retries of failed commands.
    pub fn plan_tick(&mut self, desired: &impl Wanted, now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        let horizon = self.secs(now + self.config.refresh_margin);
        for family in Family::ALL {
            let due: Vec<(Value, RouterId, u32)> = self.held[family.index()]
                .iter()
                .filter(|(_, h)| h.owned && !h.pending && h.expires <= horizon)
                .filter_map(|(v, h)| h.id.map(|id| (v, id, h.expires)))
                .collect();
            for (value, id, router_end) in due {
                let Some((wanted, _)) = desired.wanted(&value) else {
                    continue; // the removal comes with its own change (or a replan)
                };
                if self.secs(wanted) <= router_end {
                    continue; // both end together: nothing to extend
                }
                let timeout = clamp_secs(wanted.saturating_duration_since(now));
                if let Some(h) = self.held_mut(&value) {
                    h.pending = true;
                }
                ops.push(Op::Refresh { value, id, timeout });
            }
        }
        let retry: Vec<Value> = self.retry.drain().collect();
        for value in retry {
            match (desired.wanted(&value), self.held(&value).copied()) {
                (Some((expires_at, origin)), None) => {
                    ops.push(self.add_op(value, expires_at, origin, now));
                }
                (None, Some(_)) => ops.extend(self.plan_removal(&value, now)),
                _ => {}
            }
        }
        ops.sort_by_key(Op::order);
        ops
    }

    /// Ops that make the router agree with the cache for `values` (values that changed while a
    /// reconcile was running, when their change could not be planned against the view being
    /// rebuilt): an add for a banned value the router lacks, a removal for an owned entry no
    /// longer wanted. Anything else is left to the lazy refresh.
    pub fn replan(&mut self, values: &[Value], desired: &impl Wanted, now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        for value in values {
            if !self.enabled(value) {
                continue;
            }
            match (desired.wanted(value), self.held(value).copied()) {
                (Some((expires_at, origin)), None) if !self.retry.contains(value) => {
                    ops.push(self.add_op(*value, expires_at, origin, now));
                }
                (None, Some(_)) => ops.extend(self.plan_removal(value, now)),
                _ => {}
            }
        }
        ops.sort_by_key(Op::order);
        ops
    }

    /// Feeds back the outcome of `op`; returns follow-up ops (an adoption lookup, a removal of a
    /// value that stopped being wanted while its add was in flight, a re-add of a vanished entry).
    pub fn on_outcome(
        &mut self,
        op: &Op,
        outcome: Outcome,
        desired: &impl Wanted,
        now: Instant,
    ) -> Vec<Op> {
        let value = *op.value();
        let wanted = desired.wanted(&value);
        if let Op::Remove { orphan: true, .. } = op {
            // A second copy or an unparseable row: whatever happened, the value it resembles
            // keeps its own entry and state. A failed orphan remove is found again by the next
            // reconcile.
            return Vec::new();
        }
        if outcome == Outcome::Lost {
            // The router state is unknown now; the supervisor reconnects and reconciles, which
            // rebuilds the whole view.
            if let Some(h) = self.held_mut(&value) {
                h.pending = false;
            }
            return Vec::new();
        }
        let outcome = match outcome {
            Outcome::Timeout => Outcome::Trap("no reply within the command timeout".into()),
            other => other,
        };
        let mut follow = Vec::new();
        match (op, outcome) {
            (Op::Add { .. }, Outcome::Done(id)) => {
                if let Some(h) = self.held_mut(&value) {
                    h.id = id;
                    h.pending = false;
                }
                if id.is_none() {
                    // No usable id: look it up so a later remove needs no search.
                    follow.push(Op::Lookup { value });
                } else if wanted.is_none() {
                    follow.extend(self.plan_removal(&value, now));
                }
            }
            (Op::Add { .. }, Outcome::Duplicate) => {
                follow.push(Op::Lookup { value });
            }
            (
                Op::Add { .. } | Op::Remove { .. } | Op::Refresh { .. } | Op::Lookup { .. },
                Outcome::Trap(message),
            ) => {
                tracing::debug!(%value, kind = op.kind(), %message, "router refused a command; retrying on the next tick");
                match op {
                    Op::Add { .. } | Op::Lookup { .. } => self.forget(&value),
                    _ => {
                        if let Some(h) = self.held_mut(&value) {
                            h.pending = false;
                        }
                    }
                }
                self.retry.insert(value);
            }
            (Op::Remove { .. }, Outcome::Done(_) | Outcome::NoSuchItem) => {
                self.forget(&value);
                if let Some((expires_at, origin)) = wanted {
                    // Banned again while the remove was in flight.
                    follow.push(self.add_op(value, expires_at, origin, now));
                }
            }
            (Op::Refresh { timeout, .. }, Outcome::Done(_)) => {
                let expires = self.secs(now + Duration::from_secs(*timeout));
                if let Some(h) = self.held_mut(&value) {
                    h.expires = expires;
                    h.pending = false;
                }
            }
            (Op::Refresh { .. }, Outcome::NoSuchItem) => {
                self.forget(&value);
                if let Some((expires_at, origin)) = wanted {
                    follow.push(self.add_op(value, expires_at, origin, now));
                }
            }
            (Op::Lookup { .. }, Outcome::Rows(rows)) => {
                self.forget(&value);
                let mine = rows.iter().find(|r| self.is_owned(r.comment.as_deref()));
                let theirs = rows.iter().find(|r| !self.is_owned(r.comment.as_deref()));
                match (mine, theirs) {
                    (Some(row), _) => {
                        let expires = match row.timeout {
                            Some(t) => self.secs(now + t),
                            None => u32::MAX,
                        };
                        let id = RouterId::parse(&row.id);
                        self.held[Family::of(&value).index()].insert(
                            value,
                            Held {
                                id,
                                expires,
                                owned: true,
                                pending: false,
                            },
                        );
                        if wanted.is_none() && id.is_some() {
                            follow.extend(self.plan_removal(&value, now));
                        }
                    }
                    (None, Some(row)) => {
                        if wanted.is_some() {
                            self.held[Family::of(&value).index()].insert(
                                value,
                                Held {
                                    id: RouterId::parse(&row.id),
                                    expires: u32::MAX,
                                    owned: false,
                                    pending: false,
                                },
                            );
                        }
                    }
                    (None, None) => {
                        // Gone meanwhile: add it on the next tick if still wanted.
                        if wanted.is_some() {
                            self.retry.insert(value);
                        }
                    }
                }
            }
            (_, outcome) => {
                tracing::debug!(%value, kind = op.kind(), ?outcome, "unexpected outcome");
                if let Some(h) = self.held_mut(&value) {
                    h.pending = false;
                }
            }
        }
        follow
    }
}
