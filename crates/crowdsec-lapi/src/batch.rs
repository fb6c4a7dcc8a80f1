//! [`Batch`]: one fully parsed stream response, built by
//! [`LapiClient::poll`](crate::LapiClient::poll) from the [`StreamEvent`](crate::StreamEvent)s of
//! the parser beside it, and applied by [`DecisionCache::apply`](crate::DecisionCache::apply).

use crate::decision::{Decision, Deletion, Interner, Label};
use crate::duration::GoDuration;
use crate::stream_parser::StreamStats;
use crate::value::Value;

/// One fully parsed stream response, in compact canonical form, ready for
/// [`DecisionCache::apply`](crate::DecisionCache::apply).
///
/// A `Batch` only exists for a response whose body parsed to the end
/// ([`LapiClient::poll`](crate::LapiClient::poll) returns an error otherwise), so a failed or
/// truncated response can never be applied, let alone read as "no decisions".
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) startup: bool,
    pub(crate) deletes: Vec<Deletion>,
    pub(crate) adds: Vec<BatchAdd>,
    pub(crate) stats: StreamStats,
    /// `new` decisions dropped by the type filter.
    filtered: u64,
}

/// One `new` decision inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAdd {
    /// The canonical value.
    pub value: Value,
    /// LAPI's decision id.
    pub id: i64,
    /// Time left when LAPI answered.
    pub duration: GoDuration,
    /// Origin label (`lists:<scenario>` for origin `lists`).
    pub origin: Label,
}

impl Batch {
    /// An empty batch; `startup` records whether it came from `startup=true`.
    pub fn new(startup: bool) -> Self {
        Batch {
            startup,
            ..Batch::default()
        }
    }

    /// Adds a `new` decision.
    pub fn push_new(&mut self, d: Decision, interner: &mut Interner) {
        let origin = d.origin_label(interner);
        self.adds.push(BatchAdd {
            value: d.value,
            id: d.id,
            duration: d.duration,
            origin,
        });
    }

    /// Adds a `new` decision from its parts.
    pub fn push_add(&mut self, add: BatchAdd) {
        self.adds.push(add);
    }

    /// Adds a `deleted` decision.
    pub fn push_deleted(&mut self, d: Deletion) {
        self.deletes.push(d);
    }

    /// Counts a `new` decision dropped by the decision-type filter.
    pub(crate) fn count_filtered(&mut self) {
        self.filtered += 1;
    }

    pub(crate) fn set_stats(&mut self, stats: StreamStats) {
        self.stats = stats;
    }

    /// Replaces every value (of adds and deletes alike) by `f(value)`: e.g. an IPv6 host by its
    /// /64 when bans are enforced per prefix. Deletes must map like adds, so a deleted decision
    /// finds the value its add went to.
    pub fn map_values(&mut self, f: impl Fn(Value) -> Value) {
        for a in &mut self.adds {
            a.value = f(a.value);
        }
        for d in &mut self.deletes {
            d.value = f(d.value);
        }
    }

    /// True when the batch is a `startup=true` snapshot. The cache applies snapshots like deltas
    /// (merge, never "replace everything"): a snapshot cut short by a LAPI database error can
    /// come back as a 200 with a truncated list (crowdsec#4691, `docs/reference/crowdsec-lapi.md` §4), so values
    /// missing from it are not unbanned; they leave through `deleted` entries or their expiry.
    pub fn is_startup(&self) -> bool {
        self.startup
    }

    /// The deletions, in body order.
    pub fn deletes(&self) -> &[Deletion] {
        &self.deletes
    }

    /// The additions, in body order.
    pub fn adds(&self) -> &[BatchAdd] {
        &self.adds
    }

    /// Parser counters (including skipped bad elements).
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// `new` decisions dropped because their type is not wanted.
    pub fn filtered_by_type(&self) -> u64 {
        self.filtered
    }
}
