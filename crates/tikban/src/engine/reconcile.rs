//! Reconcile: rebuild one family's view from a streamed print of its list, then plan the
//! difference in bounded chunks.
//!
//! Everything here is fed by router rows, so everything is bounded (issue 17 item 2): the rows of
//! one print ([`row_limit`]), and the removals queued by one reconcile ([`MAX_REMOVALS`]; the rest
//! wait for the next reconcile, which the supervisor starts right after). The view being built only
//! keeps rows for banned values, so it never outgrows the cache.

use std::time::Instant;

use crowdsec_lapi::Value;

use super::{Engine, Family, Held, Op, RouterId, RouterRow, Wanted, secs_since};

/// Removals of unwanted owned rows one reconcile queues at most. A router holding more (a list
/// left over after a large blocklist was dropped while tikban was away) is cleaned over several
/// reconciles, back to back.
pub const MAX_REMOVALS: usize = 16_384;

/// Rows one print may stream beyond twice the cache before the reconcile is abandoned. A real list
/// holds tikban's entries (at most one per banned value), manual entries and DNS children; a
/// router that streams millions more is broken or hostile.
pub const ROW_SLACK: usize = 1_000_000;

/// The most rows one print of a family may stream for a cache of this size.
pub fn row_limit(cache_len: usize, slack: usize) -> usize {
    cache_len.saturating_mul(2).saturating_add(slack)
}

/// Why a reconcile was abandoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileError {
    /// The print streamed more rows than [`row_limit`] allows.
    TooManyRows {
        /// The family printed.
        family: Family,
        /// The limit that was passed.
        limit: usize,
    },
}

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReconcileError::TooManyRows { family, limit } => write!(
                f,
                "the {} print streamed more than {limit} rows; abandoning the reconcile",
                family.menu()
            ),
        }
    }
}

impl std::error::Error for ReconcileError {}

/// What one family's reconcile leaves to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Removals of unwanted owned rows (and orphans), at most [`MAX_REMOVALS`].
    pub ops: Vec<Op>,
    /// Unwanted owned rows left for the next reconcile because of [`MAX_REMOVALS`].
    pub deferred: usize,
}

/// A family's view being rebuilt from streamed rows.
#[derive(Debug)]
pub(super) struct Building {
    family: Family,
    held: super::held::HeldMap,
    ops: Vec<Op>,
    rows: usize,
    limit: usize,
    deferred: usize,
}

impl Engine {
    /// Rebuilds the view of one family from a full print of its list, and returns the ops that
    /// make the router equal to the cache. An entry already present is never rewritten here.
    /// Convenience for [`Engine::begin_reconcile`], [`Engine::reconcile_row`] per row,
    /// [`Engine::finish_reconcile`] and [`Engine::plan_missing`] (tests and the benchmark).
    pub fn reconcile(
        &mut self,
        family: Family,
        rows: Vec<RouterRow>,
        desired: &impl Wanted,
        now: Instant,
    ) -> Vec<Op> {
        self.begin_reconcile(family, desired);
        for row in rows {
            if self.reconcile_row(row, desired, now).is_err() {
                self.abandon_reconcile();
                return Vec::new();
            }
        }
        let mut ops = self.finish_reconcile(desired).ops;
        ops.extend(self.plan_missing(desired, now, usize::MAX));
        ops
    }

    /// Starts rebuilding one family's view. Rows then stream in one at a time, so a 100k-entry
    /// print is never held whole.
    pub fn begin_reconcile(&mut self, family: Family, desired: &impl Wanted) {
        self.missing[family.index()].clear();
        self.building = Some(Building {
            family,
            held: super::held::HeldMap::default(),
            ops: Vec::new(),
            rows: 0,
            limit: row_limit(desired.bound(), self.config.row_slack),
            deferred: 0,
        });
    }

    /// Drops a reconcile in progress (the print failed or was abandoned); the old view stays.
    pub fn abandon_reconcile(&mut self) {
        self.building = None;
    }

    /// Takes one printed row of the family being rebuilt.
    pub fn reconcile_row(
        &mut self,
        row: RouterRow,
        desired: &impl Wanted,
        now: Instant,
    ) -> Result<(), ReconcileError> {
        let owned = self.is_owned(row.comment.as_deref());
        let epoch = self.epoch;
        let max_removals = self.config.max_removals;
        let Some(b) = self.building.as_mut() else {
            return Ok(());
        };
        b.rows += 1;
        if b.rows > b.limit {
            return Err(ReconcileError::TooManyRows {
                family: b.family,
                limit: b.limit,
            });
        }
        let family = b.family;
        let value = Value::parse(&row.address)
            .ok()
            .filter(|v| Family::of(v) == family);
        let id = RouterId::parse(&row.id);
        let expires = match row.timeout {
            Some(t) => secs_since(epoch, now + t),
            None => u32::MAX,
        };
        match (value, owned) {
            (Some(v), false) => {
                // Someone else's entry: only worth remembering when it enforces a ban, and never
                // in place of one of ours.
                if desired.wanted(&v).is_some() && !b.held.get(&v).is_some_and(|h| h.owned) {
                    b.held.insert(
                        v,
                        Held {
                            id,
                            expires: u32::MAX,
                            owned: false,
                            pending: false,
                        },
                    );
                }
            }
            (None, false) => {}
            (v, true) => {
                let wanted = v.filter(|v| desired.wanted(v).is_some());
                let duplicate = wanted.is_some_and(|v| b.held.get(&v).is_some_and(|h| h.owned));
                match (wanted, id) {
                    (Some(v), Some(id)) if !duplicate => {
                        b.held.insert(
                            v,
                            Held {
                                id: Some(id),
                                expires,
                                owned: true,
                                pending: false,
                            },
                        );
                    }
                    // Ours but not wanted, unparseable, or a second copy: remove it. Only an
                    // unwanted entry of a parsed value is the value's own; the others are
                    // orphans whose outcome must not touch the value they resemble.
                    (_, Some(id)) => {
                        if b.ops.len() >= max_removals {
                            b.deferred += 1;
                        } else {
                            let orphan = v.is_none() || duplicate;
                            let value = v.unwrap_or_else(|| unspecified(family));
                            b.ops.push(Op::Remove { value, id, orphan });
                        }
                    }
                    (_, None) => {
                        tracing::warn!(id = %row.id.escape_debug(), "owned entry with an unreadable .id left alone");
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the rebuild: installs the new view, queues the banned values the router lacks for
    /// [`Engine::plan_missing`], and returns the removals of unwanted owned entries.
    pub fn finish_reconcile(&mut self, desired: &impl Wanted) -> Reconciled {
        let Some(Building {
            family,
            held,
            mut ops,
            deferred,
            ..
        }) = self.building.take()
        else {
            return Reconciled::default();
        };
        let f = family.index();
        self.held[f] = held;
        self.retry.retain(|v| Family::of(v) != family);
        let missing = &mut self.missing[f];
        missing.clear();
        if self.config.lists[f].is_some() {
            let held = &self.held[f];
            desired.each_wanted(&mut |value| {
                if Family::of(&value) == family && !held.contains_key(&value) {
                    missing.push(value);
                }
            });
        }
        // Reserve once for every missing value so the view never rehashes into a second, doubled
        // table in the middle of a cold sync.
        self.held[f].reserve(missing.len());
        ops.sort_by_key(Op::order);
        Reconciled { ops, deferred }
    }

    /// Up to `limit` adds for banned values the router lacked at the last reconcile. Called in
    /// chunks, so a 100k cold sync never holds 100k ops at once. Each value is checked again when
    /// taken: one that is no longer banned, or was added meanwhile, is skipped.
    pub fn plan_missing(&mut self, desired: &impl Wanted, now: Instant, limit: usize) -> Vec<Op> {
        let mut ops = Vec::new();
        for family in Family::ALL {
            while ops.len() < limit {
                let Some(value) = self.missing[family.index()].pop() else {
                    break;
                };
                let Some((expires_at, origin)) = desired.wanted(&value) else {
                    continue;
                };
                if self.held(&value).is_some() || self.retry.contains(&value) {
                    continue;
                }
                ops.push(self.add_op(value, expires_at, origin, now));
            }
        }
        ops
    }
}

/// The unspecified address of a family: the placeholder value of an orphan remove.
fn unspecified(family: Family) -> Value {
    match family {
        Family::V4 => Value::from_ip(std::net::Ipv4Addr::UNSPECIFIED.into()),
        Family::V6 => Value::from_ip(std::net::Ipv6Addr::UNSPECIFIED.into()),
    }
}
