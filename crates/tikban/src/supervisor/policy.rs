//! What is enforced: the desired state (the cache: LAPI decisions and guard bans) through the
//! safety rules (`crate::safety`: allowlist, automatic protections, range limits) and the entry
//! budget. The engine sees the result as a [`Wanted`] view ([`Enforced`]), so every path that
//! writes (changes, reconcile, retries, re-adds) obeys the same rules.
//!
//! **The budget** (`MAX_ENTRIES`, `docs/safety.md`): at most N router entries across both lists.
//! Values are ranked by a total order: priority class of the origin first (local > console >
//! blocklists > CAPI), then the later end (the longest remaining ban), then a hash of the value
//! (a stable tie-break). The top N are enforced. Time passing never reorders values (every
//! remaining time shrinks at the same rate), so the boundary cannot flap by itself; it moves only
//! when LAPI or guard adds, removes or extends a ban, and then exactly the values that cross it
//! are written.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use crowdsec_lapi::{DecisionCache, Label, Value};

use crate::engine::Wanted;
use crate::safety::{Reason, Safety, Verdict};

/// Priority class of an origin (`docs/safety.md`): 3 local (`cscli`, `crowdsec`, `cscli-import`,
/// guard), 2 `console`, 1 blocklists (`lists:*`) and other importers, 0 `CAPI`.
pub fn class(origin: &str) -> u8 {
    match origin {
        "CAPI" => 0,
        "console" => 2,
        "cscli" | "crowdsec" | "cscli-import" | "guard" => 3,
        o if o.starts_with("tikban") => 3,
        _ => 1,
    }
}

/// A value's rank: larger is kept first.
fn rank(value: &Value, class: u8, expires_secs: u32) -> u128 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    (u128::from(class) << 96) | (u128::from(expires_secs) << 64) | u128::from(h.finish())
}

/// The entry budget: which values fit.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    limit: Option<usize>,
    /// Values ranked below this are left out; `None` while everything fits.
    threshold: Option<u128>,
    /// Values left out at the last computation.
    excluded: usize,
}

impl Budget {
    /// The limit in force (`None`: unlimited).
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Values the budget leaves out (as of the last computation).
    pub fn excluded(&self) -> usize {
        self.excluded
    }
}

/// The policy: safety rules plus the budget.
#[derive(Debug)]
pub struct Policy {
    /// The safety rules.
    pub safety: Safety,
    budget: Budget,
    /// The clock origin of ranks.
    epoch: Instant,
}

impl Policy {
    /// A policy with `safety` and no budget yet.
    pub fn new(safety: Safety, epoch: Instant) -> Self {
        Policy {
            safety,
            budget: Budget::default(),
            epoch,
        }
    }

    /// The budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    fn secs(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// The safety verdict for a value.
    pub fn verdict(&self, value: &Value) -> Verdict {
        self.safety.check(value)
    }

    /// True when the budget keeps this value.
    fn fits(&self, value: &Value, expires_at: Instant, origin: &Label) -> bool {
        match self.budget.threshold {
            None => true,
            Some(t) => rank(value, class(origin.as_str()), self.secs(expires_at)) >= t,
        }
    }

    /// Why `value` is not enforced, if it is not.
    pub fn refusal(&self, value: &Value, expires_at: Instant, origin: &Label) -> Option<Refusal> {
        match self.safety.check(value) {
            Verdict::Skip(reason) => Some(Refusal::Safety(reason)),
            Verdict::Enforce if !self.fits(value, expires_at, origin) => Some(Refusal::Budget),
            Verdict::Enforce => None,
        }
    }

    /// Sets the limit and computes which values fit; returns the values whose fate changed.
    pub fn set_limit(&mut self, limit: Option<usize>, cache: &DecisionCache) -> Vec<Value> {
        self.budget.limit = limit;
        self.rebudget(cache)
    }

    /// Computes which values fit the budget again (after the desired state changed), and
    /// returns the values that crossed the boundary, in either direction. O(n log N) for n
    /// cached values and a budget of N; nothing when there is no limit.
    pub fn rebudget(&mut self, cache: &DecisionCache) -> Vec<Value> {
        let old = self.budget.threshold;
        let new = match self.budget.limit {
            None => None,
            Some(limit) => {
                // Count first: under the limit (the usual case) no heap is built at all, and over
                // it the heap holds exactly `limit + 1` ranks, never room for the limit's default.
                let eligible = cache
                    .iter()
                    .filter(|(value, _, _)| self.safety.check(value).is_enforce())
                    .count();
                self.budget.excluded = eligible.saturating_sub(limit);
                (eligible > limit).then(|| self.nth_best_rank(cache, limit))
            }
        };
        if new.is_none() {
            self.budget.excluded = 0;
        }
        self.budget.threshold = new;
        if old == new {
            return Vec::new();
        }
        // The values between the two thresholds changed sides.
        let lo = old.unwrap_or(0).min(new.unwrap_or(0));
        let hi = old.unwrap_or(0).max(new.unwrap_or(0));
        let mut flipped = Vec::new();
        for (value, expires_at, origin) in cache.iter() {
            let r = rank(&value, class(origin.as_str()), self.secs(expires_at));
            if r >= lo && r < hi {
                flipped.push(value);
            }
        }
        flipped
    }

    /// The `limit`-th best rank among the values the safety rules allow (`u128::MAX` when the
    /// limit is 0: nothing fits). A min-heap of the `limit` best, O(n log limit).
    fn nth_best_rank(&self, cache: &DecisionCache, limit: usize) -> u128 {
        let mut heap: BinaryHeap<Reverse<u128>> = BinaryHeap::with_capacity(limit + 1);
        for (value, expires_at, origin) in cache.iter() {
            if !self.safety.check(&value).is_enforce() {
                continue;
            }
            let r = rank(&value, class(origin.as_str()), self.secs(expires_at));
            if heap.len() < limit {
                heap.push(Reverse(r));
            } else if heap.peek().is_some_and(|Reverse(min)| r > *min) {
                heap.pop();
                heap.push(Reverse(r));
            }
        }
        heap.peek().map_or(u128::MAX, |Reverse(min)| *min)
    }
}

/// Why a wanted value is not on the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A safety rule.
    Safety(Reason),
    /// Beyond the entry budget.
    Budget,
}

impl Refusal {
    /// The metric label: the safety reason's label, or `budget`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Safety(r) => r.label(),
            Refusal::Budget => "budget",
        }
    }
}

/// The desired state as the engine must see it.
#[derive(Debug, Clone, Copy)]
pub struct Enforced<'a> {
    /// Every ban.
    pub cache: &'a DecisionCache,
    /// What may be enforced.
    pub policy: &'a Policy,
}

impl Wanted for Enforced<'_> {
    fn wanted(&self, value: &Value) -> Option<(Instant, Label)> {
        let (expires_at, origin) = self.cache.wanted(value)?;
        self.policy
            .refusal(value, expires_at, &origin)
            .is_none()
            .then_some((expires_at, origin))
    }

    fn each_wanted(&self, f: &mut dyn FnMut(Value)) {
        for (value, expires_at, origin) in self.cache.iter() {
            if self.policy.refusal(&value, expires_at, origin).is_none() {
                f(value);
            }
        }
    }

    fn bound(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crowdsec_lapi::{Batch, BatchAdd, GoDuration};
    use proptest::prelude::*;

    use super::*;
    use crate::safety::Settings;

    fn cache_of(t0: Instant, bans: &[(u32, &str, i64)]) -> DecisionCache {
        let mut cache = DecisionCache::new(t0);
        let mut b = Batch::new(true);
        for (i, (host, origin, secs)) in bans.iter().enumerate() {
            b.push_add(BatchAdd {
                value: Value::from_ip(std::net::Ipv4Addr::from(0x0a00_0000 + host).into()),
                id: i as i64 + 1,
                duration: GoDuration::from_secs(*secs),
                origin: Label::new(origin),
            });
        }
        cache.apply_quiet(&b, t0);
        cache
    }

    fn enforced(cache: &DecisionCache, policy: &Policy) -> Vec<Value> {
        let mut out = Vec::new();
        Enforced { cache, policy }.each_wanted(&mut |v| out.push(v));
        out.sort_by_key(|v| v.to_string());
        out
    }

    #[test]
    fn classes_follow_the_origin() {
        assert_eq!(class("CAPI"), 0);
        assert_eq!(class("lists:firehol_level1"), 1);
        assert_eq!(class("blocklist-import"), 1);
        assert_eq!(class("console"), 2);
        for local in ["cscli", "crowdsec", "cscli-import", "guard"] {
            assert_eq!(class(local), 3);
        }
    }

    #[test]
    fn the_budget_keeps_the_highest_class_then_the_longest_ban() {
        let t0 = Instant::now();
        let cache = cache_of(
            t0,
            &[
                (1, "CAPI", 9000),
                (2, "CAPI", 100),
                (3, "lists:x", 50),
                (4, "cscli", 10),
                (5, "console", 20),
            ],
        );
        let mut p = Policy::new(Safety::new(Settings::default()), t0);
        p.set_limit(Some(3), &cache);
        let kept: Vec<String> = enforced(&cache, &p).iter().map(|v| v.to_string()).collect();
        assert_eq!(kept, ["10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        assert_eq!(p.budget().excluded(), 2);
        p.set_limit(Some(4), &cache);
        let kept: Vec<String> = enforced(&cache, &p).iter().map(|v| v.to_string()).collect();
        assert_eq!(
            kept,
            ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5"],
            "the longer CAPI ban"
        );
        // Unlimited again: everything, and every value that was out is reported as flipped.
        let flipped = p.set_limit(None, &cache);
        assert_eq!(flipped.len(), 1);
        assert_eq!(enforced(&cache, &p).len(), 5);
    }

    #[test]
    fn time_passing_never_moves_the_boundary() {
        let t0 = Instant::now();
        let cache = cache_of(t0, &[(1, "CAPI", 500), (2, "CAPI", 400), (3, "CAPI", 300)]);
        let mut p = Policy::new(Safety::new(Settings::default()), t0);
        p.set_limit(Some(2), &cache);
        let before = enforced(&cache, &p);
        // Later, nothing changed in LAPI: recomputing flips nothing.
        let _ = t0 + Duration::from_secs(200);
        assert!(p.rebudget(&cache).is_empty());
        assert_eq!(enforced(&cache, &p), before);
    }

    proptest! {
        /// The enforced set is exactly the top N of the eligible values by (class, end, tie).
        #[test]
        fn the_enforced_set_is_the_top_n(
            bans in proptest::collection::vec((0u32..500, 0usize..4, 1i64..100_000), 0..300),
            limit in 0usize..200,
        ) {
            let origins = ["CAPI", "lists:a", "console", "cscli"];
            let t0 = Instant::now();
            let list: Vec<(u32, &str, i64)> = bans.iter().map(|(h, o, s)| (*h, origins[*o], *s)).collect();
            let cache = cache_of(t0, &list);
            let mut p = Policy::new(Safety::new(Settings::default()), t0);
            p.set_limit(Some(limit), &cache);
            let mut all: Vec<(u128, String)> = cache
                .iter()
                .map(|(v, e, o)| (rank(&v, class(o.as_str()), p.secs(e)), v.to_string()))
                .collect();
            all.sort();
            all.reverse();
            let mut want: Vec<String> = all.into_iter().take(limit).map(|(_, v)| v).collect();
            want.sort();
            let got: Vec<String> = enforced(&cache, &p).iter().map(|v| v.to_string()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
