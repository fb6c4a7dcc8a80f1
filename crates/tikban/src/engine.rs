//! The sync engine's brain: which router commands make the address lists equal to the cache.
//!
//! Sans-IO, like the codec: it takes the cache's change-sets, router rows and command outcomes,
//! plus `now`, and returns [`Op`]s. The daemon turns ops into pipelined RouterOS commands and feeds
//! each outcome back with [`Engine::on_outcome`]. Nothing here waits, sleeps or talks to a socket,
//! so every rule below is unit-tested with a hand-driven clock.
//!
//! Rules (issue 5, `routeros-api.md` §9):
//! - **One command per changed address.** An add records the `.id` from `!done =ret=`; a later
//!   remove uses it without a lookup.
//! - **Lazy timeout refresh.** An entry gets the decision's remaining time, clamped to
//!   `35w3d13:13:56` (21 474 836 s). When the decision outlives the router entry (extended, or
//!   clamped), one `set` goes out shortly before the router-side timeout ends, not on every LAPI
//!   re-insert (LAPI 1.4.6 re-inserts the community list every 2 h, `crowdsec-lapi.md` §6).
//! - **Ownership.** Only entries whose comment is the prefix, or starts with the prefix and a
//!   space, are removed or changed. Other entries with a banned address are left alone and
//!   count as enforcing it.
//! - **Duplicates** (`failure: already have such entry`) are device errors: look the entry up
//!   and adopt it.
//! - **Reconcile**: router rows (one print per list) against the cache; an entry the router
//!   already holds is not written again, whatever its remaining timeout.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crowdsec_lapi::{Change, DecisionCache, Label, Value};

/// The longest timeout RouterOS accepts: `35w3d13:13:56` (`routeros-api.md` §9).
pub const MAX_TIMEOUT_SECS: u64 = 21_474_836;

/// A removal is skipped when the router entry ends by itself within this many seconds.
const EXPIRY_SLACK_SECS: u32 = 2;

/// Address family: which menu and which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `/ip/firewall/address-list`.
    V4,
    /// `/ipv6/firewall/address-list`.
    V6,
}

impl Family {
    /// Both families.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of a value.
    pub fn of(value: &Value) -> Family {
        if value.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// The address-list menu path.
    pub fn menu(self) -> &'static str {
        match self {
            Family::V4 => "/ip/firewall/address-list",
            Family::V6 => "/ipv6/firewall/address-list",
        }
    }

    /// `ipv4` or `ipv6`, as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A router `.id` such as `*1A`, kept as its number: 4 bytes instead of a string, and
/// `Option<RouterId>` is 4 bytes too (ids start at `*1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouterId(NonZeroU32);

impl RouterId {
    /// The id `*<n>`; `None` for 0, which RouterOS does not use.
    pub fn new(n: u32) -> Option<Self> {
        NonZeroU32::new(n).map(RouterId)
    }

    /// Parses `*HEX`. Other forms are not produced by RouterOS for address-list items.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix('*')?;
        u32::from_str_radix(hex, 16).ok().and_then(Self::new)
    }
}

impl std::fmt::Display for RouterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "*{:X}", self.0.get())
    }
}

/// One router command the engine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add list= address= timeout=<n>s comment=`.
    Add {
        /// The value.
        value: Value,
        /// Timeout in whole seconds, already clamped.
        timeout: u64,
        /// The origin, for the comment ([`Engine::comment`]); shared, not copied, so a 100k cold
        /// sync holds no 100k comment strings.
        origin: Label,
    },
    /// `remove =.id=`.
    Remove {
        /// The value.
        value: Value,
        /// Its router id.
        id: RouterId,
    },
    /// `set =.id= =timeout=<n>s`: the lazy refresh.
    Refresh {
        /// The value.
        value: Value,
        /// Its router id.
        id: RouterId,
        /// New timeout in whole seconds, clamped.
        timeout: u64,
    },
    /// `print ?list= ?address=`: find an entry the router says exists.
    Lookup {
        /// The value.
        value: Value,
    },
}

impl Op {
    /// The value the op is about.
    pub fn value(&self) -> &Value {
        match self {
            Op::Add { value, .. }
            | Op::Remove { value, .. }
            | Op::Refresh { value, .. }
            | Op::Lookup { value } => value,
        }
    }

    /// `add`, `remove`, `set` or `print`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Refresh { .. } => "set",
            Op::Lookup { .. } => "print",
        }
    }

    /// Sort key: deletes before refreshes before adds (issue 5: "Deletes go before adds").
    fn order(&self) -> u8 {
        match self {
            Op::Remove { .. } => 0,
            Op::Lookup { .. } => 1,
            Op::Refresh { .. } => 2,
            Op::Add { .. } => 3,
        }
    }
}

/// One address-list row as printed by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterRow {
    /// `.id`.
    pub id: String,
    /// `address`, as the router prints it.
    pub address: String,
    /// Remaining `timeout`; `None` for a static entry.
    pub timeout: Option<Duration>,
    /// `comment`, decoded lossily.
    pub comment: Option<String>,
}

/// What came back for an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `!done`; for an add, the `=ret=` id if it parsed.
    Done(Option<RouterId>),
    /// `failure: already have such entry`.
    Duplicate,
    /// `no such item`: the entry is gone (expired, removed by hand, router rebooted).
    NoSuchItem,
    /// Any other trap: kept for the retry on the next tick.
    Trap(String),
    /// Rows of a lookup.
    Rows(Vec<RouterRow>),
    /// The connection broke before an answer; the daemon reconnects and reconciles.
    Lost,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// List name per family; `None` when the family is disabled.
    pub lists: [Option<String>; 2],
    /// Comment prefix of owned entries.
    pub prefix: String,
    /// Refresh an entry when its router timeout ends within this margin and the decision lasts
    /// longer.
    pub refresh_margin: Duration,
}

/// What the engine believes about one router entry. 12 bytes (32 with its key in the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// Router id; `None` while an add is in flight or after an adoption failed.
    id: Option<RouterId>,
    /// Router-side end, in seconds since the engine epoch; `u32::MAX` for a static entry.
    expires: u32,
    /// Carries our comment: we may remove or change it.
    owned: bool,
    /// A command about this entry is in flight.
    pending: bool,
}

/// Counts of one planning round, for the batch log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Adds per family.
    pub added: [u64; 2],
    /// Removes per family.
    pub removed: [u64; 2],
    /// Refreshes per family.
    pub refreshed: [u64; 2],
}

impl Tally {
    fn count(&mut self, op: &Op) {
        let f = Family::of(op.value()).index();
        match op {
            Op::Add { .. } => self.added[f] += 1,
            Op::Remove { .. } => self.removed[f] += 1,
            Op::Refresh { .. } => self.refreshed[f] += 1,
            Op::Lookup { .. } => {}
        }
    }

    /// Counts every op of `ops`.
    pub fn of(ops: &[Op]) -> Self {
        let mut t = Tally::default();
        for op in ops {
            t.count(op);
        }
        t
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

impl std::fmt::Display for Tally {
    /// `+120 -3 ~5 v4, +2 v6`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for fam in Family::ALL {
            let i = fam.index();
            if self.added[i] + self.removed[i] + self.refreshed[i] == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            let mut parts = Vec::new();
            if self.added[i] > 0 {
                parts.push(format!("+{}", self.added[i]));
            }
            if self.removed[i] > 0 {
                parts.push(format!("-{}", self.removed[i]));
            }
            if self.refreshed[i] > 0 {
                parts.push(format!("~{}", self.refreshed[i]));
            }
            let v = if fam == Family::V4 { "v4" } else { "v6" };
            write!(f, "{} {v}", parts.join(" "))?;
        }
        if first {
            f.write_str("no changes")?;
        }
        Ok(())
    }
}

/// The engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    epoch: Instant,
    held: [HashMap<Value, Held>; 2],
    /// Values whose last command failed with a trap: planned again on the next tick.
    retry: HashSet<Value>,
    /// The router state is unknown (a connection broke mid-command): reconcile before trusting
    /// `held` again.
    stale: bool,
    /// A reconcile in progress.
    building: Option<Building>,
    /// Cache position `plan_missing` resumes from, per family. Valid while the cache is not
    /// mutated between calls (the daemon runs a reconcile's chunks back to back).
    missing_cursor: [usize; 2],
}

/// A family's view being rebuilt from streamed rows.
#[derive(Debug)]
struct Building {
    family: Family,
    held: HashMap<Value, Held>,
    ops: Vec<Op>,
}

fn secs_since(epoch: Instant, t: Instant) -> u32 {
    u32::try_from(t.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX - 1)
}

/// The comment of a new entry: the prefix and the origin, in plain ASCII (RouterOS declares no
/// charset, `routeros-api.md` §7).
pub fn comment(prefix: &str, origin: &str) -> String {
    let origin: String = origin
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if origin.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix} {origin}")
    }
}

fn clamp_secs(d: Duration) -> u64 {
    // Round up: a 0.4 s remainder is still a ban (`crowdsec-lapi.md` §5, "round sub-second values
    // up and clamp").
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.clamp(1, MAX_TIMEOUT_SECS)
}

impl Engine {
    /// A new engine with an empty view of the router (call [`Engine::reconcile`] first).
    pub fn new(config: EngineConfig, now: Instant) -> Self {
        Engine {
            config,
            epoch: now,
            held: [HashMap::new(), HashMap::new()],
            retry: HashSet::new(),
            stale: true,
            building: None,
            missing_cursor: [0; 2],
        }
    }

    /// True when the router view must be rebuilt with [`Engine::reconcile`].
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Marks the view unknown (connection lost, router rebooted).
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// The list of a family, if enabled.
    pub fn list(&self, family: Family) -> Option<&str> {
        self.config.lists[family.index()].as_deref()
    }

    /// Entries tikban owns on the router, per family (for metrics).
    pub fn owned_count(&self, family: Family) -> usize {
        self.held[family.index()]
            .values()
            .filter(|h| h.owned && h.id.is_some())
            .count()
    }

    /// True when `comment` marks an entry as ours.
    pub fn is_owned(&self, comment: Option<&str>) -> bool {
        let p = &self.config.prefix;
        comment.is_some_and(|c| {
            c == p
                || c.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with(' '))
        })
    }

    /// The comment of a new entry: the prefix and the origin, in plain ASCII (RouterOS declares
    /// no charset, `routeros-api.md` §7).
    pub fn comment(&self, origin: &str) -> String {
        comment(&self.config.prefix, origin)
    }

    /// The comment prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    fn secs(&self, t: Instant) -> u32 {
        secs_since(self.epoch, t)
    }

    fn instant(&self, secs: u32) -> Instant {
        self.epoch + Duration::from_secs(u64::from(secs))
    }

    fn enabled(&self, value: &Value) -> bool {
        self.list(Family::of(value)).is_some()
    }

    fn add_op(&mut self, value: Value, expires_at: Instant, origin: Label, now: Instant) -> Op {
        let timeout = clamp_secs(expires_at.saturating_duration_since(now));
        let held = Held {
            id: None,
            expires: self.secs(now + Duration::from_secs(timeout)),
            owned: true,
            pending: true,
        };
        self.held[Family::of(&value).index()].insert(value, held);
        Op::Add {
            value,
            timeout,
            origin,
        }
    }

    fn held_mut(&mut self, value: &Value) -> Option<&mut Held> {
        self.held[Family::of(value).index()].get_mut(value)
    }

    fn held(&self, value: &Value) -> Option<&Held> {
        self.held[Family::of(value).index()].get(value)
    }

    fn forget(&mut self, value: &Value) {
        self.held[Family::of(value).index()].remove(value);
    }

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
                Some(Op::Remove { value: *value, id })
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
    pub fn plan_tick(&mut self, cache: &DecisionCache, now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        let horizon = self.secs(now + self.config.refresh_margin);
        for family in Family::ALL {
            let due: Vec<(Value, RouterId, u32)> = self.held[family.index()]
                .iter()
                .filter(|(_, h)| h.owned && !h.pending && h.expires <= horizon)
                .filter_map(|(v, h)| h.id.map(|id| (*v, id, h.expires)))
                .collect();
            for (value, id, router_end) in due {
                let Some(wanted) = cache.expires_at(&value) else {
                    continue; // the removal comes with the cache's own change-set
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
            match (cache.expires_at(&value), self.held(&value).copied()) {
                (Some(expires_at), None) => {
                    let origin = cache
                        .origin(&value)
                        .cloned()
                        .unwrap_or_else(|| Label::new(""));
                    ops.push(self.add_op(value, expires_at, origin, now));
                }
                (None, Some(_)) => ops.extend(self.plan_removal(&value, now)),
                _ => {}
            }
        }
        ops.sort_by_key(Op::order);
        ops
    }

    /// Rebuilds the view of one family from a full print of its list, and returns the ops that
    /// make the router equal to the cache. An entry already present is never rewritten here.
    /// Convenience for [`Engine::begin_reconcile`], [`Engine::reconcile_row`] per row, and
    /// [`Engine::finish_reconcile`].
    pub fn reconcile(
        &mut self,
        family: Family,
        rows: Vec<RouterRow>,
        cache: &DecisionCache,
        now: Instant,
    ) -> Vec<Op> {
        self.begin_reconcile(family);
        for row in rows {
            self.reconcile_row(row, cache, now);
        }
        let mut ops = self.finish_reconcile(cache);
        ops.extend(self.plan_missing(family, cache, now, usize::MAX));
        ops
    }

    /// Starts rebuilding one family's view. Rows then stream in one at a time, so a 100k-entry
    /// print is never held whole.
    pub fn begin_reconcile(&mut self, family: Family) {
        self.missing_cursor[family.index()] = 0;
        self.building = Some(Building {
            family,
            held: HashMap::new(),
            ops: Vec::new(),
        });
    }

    /// Takes one printed row of the family being rebuilt.
    pub fn reconcile_row(&mut self, row: RouterRow, cache: &DecisionCache, now: Instant) {
        let owned = self.is_owned(row.comment.as_deref());
        let epoch = self.epoch;
        let Some(b) = self.building.as_mut() else {
            return;
        };
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
                if cache.expires_at(&v).is_some() && !b.held.get(&v).is_some_and(|h| h.owned) {
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
                let wanted = v.filter(|v| cache.expires_at(v).is_some());
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
                    // Ours but not wanted, unparseable, or a second copy: remove it.
                    (_, Some(id)) => {
                        let value = v.unwrap_or_else(|| match family {
                            Family::V4 => Value::from_ip(std::net::Ipv4Addr::UNSPECIFIED.into()),
                            Family::V6 => Value::from_ip(std::net::Ipv6Addr::UNSPECIFIED.into()),
                        });
                        b.ops.push(Op::Remove { value, id });
                    }
                    (_, None) => {
                        tracing::warn!(id = %row.id, "owned entry with an unreadable .id left alone");
                    }
                }
            }
        }
    }

    /// Ends the rebuild: installs the new view and returns the removals of unwanted owned
    /// entries. Then call [`Engine::plan_missing`] until it returns nothing.
    pub fn finish_reconcile(&mut self, cache: &DecisionCache) -> Vec<Op> {
        let Some(Building {
            family,
            held,
            mut ops,
        }) = self.building.take()
        else {
            return Vec::new();
        };
        self.held[family.index()] = held;
        // The adds of missing values come from `plan_missing`, in bounded chunks. Reserve once
        // for every banned value (an upper bound) so the view never rehashes into a second,
        // doubled table in the middle of a cold sync.
        let f = family.index();
        let room = cache.len().saturating_sub(self.held[f].len());
        self.held[f].reserve(room);
        self.retry.retain(|v| Family::of(v) != family);
        ops.sort_by_key(Op::order);
        ops
    }

    /// Up to `limit` adds for banned values of `family` the router lacks (after a reconcile).
    /// Called in chunks, so a 100k cold sync never holds 100k ops at once: each call skips the
    /// values the previous chunks already planned. Values waiting for a retry are left to the tick.
    pub fn plan_missing(
        &mut self,
        family: Family,
        cache: &DecisionCache,
        now: Instant,
        limit: usize,
    ) -> Vec<Op> {
        let mut ops = Vec::new();
        if self.list(family).is_none() || limit == 0 {
            return ops;
        }
        let f = family.index();
        // Resume where the previous chunk stopped: skipping costs no hashing, so a 1M-value cold
        // sync stays linear instead of rescanning the cache for every chunk.
        let start = self.missing_cursor[f];
        let mut scanned = 0;
        for (value, expires_at, origin) in cache.iter().skip(start) {
            scanned += 1;
            if Family::of(&value) != family
                || self.held[f].contains_key(&value)
                || self.retry.contains(&value)
            {
                continue;
            }
            ops.push(self.add_op(value, expires_at, origin.clone(), now));
            if ops.len() >= limit {
                break;
            }
        }
        self.missing_cursor[f] = start + scanned;
        ops
    }

    /// Call after reconciling every enabled family.
    pub fn mark_fresh(&mut self) {
        self.stale = false;
    }

    /// Feeds back the outcome of `op`; returns follow-up ops (an adoption lookup, a removal of a
    /// value that stopped being wanted while its add was in flight, a re-add of a vanished entry).
    pub fn on_outcome(
        &mut self,
        op: &Op,
        outcome: Outcome,
        cache: &DecisionCache,
        now: Instant,
    ) -> Vec<Op> {
        let value = *op.value();
        let wanted = cache.expires_at(&value);
        if outcome == Outcome::Lost {
            self.stale = true;
            if let Some(h) = self.held_mut(&value) {
                h.pending = false;
            }
            return Vec::new();
        }
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
                if let Some(expires_at) = wanted {
                    // Banned again while the remove was in flight.
                    let origin = cache
                        .origin(&value)
                        .cloned()
                        .unwrap_or_else(|| Label::new(""));
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
                if let Some(expires_at) = wanted {
                    let origin = cache
                        .origin(&value)
                        .cloned()
                        .unwrap_or_else(|| Label::new(""));
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

    /// The router-side end of a held entry (tests and diagnostics).
    pub fn router_expiry(&self, value: &Value) -> Option<Instant> {
        self.held(value)
            .filter(|h| h.expires != u32::MAX)
            .map(|h| self.instant(h.expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdsec_lapi::{Batch, BatchAdd, Deletion, GoDuration};

    fn rid(n: u32) -> RouterId {
        RouterId::new(n).unwrap()
    }

    #[test]
    fn held_entries_stay_small() {
        assert_eq!(std::mem::size_of::<Option<RouterId>>(), 4);
        assert!(std::mem::size_of::<(Value, Held)>() <= 32);
    }

    fn v(s: &str) -> Value {
        Value::parse(s).unwrap()
    }

    fn engine(now: Instant) -> Engine {
        let mut e = Engine::new(
            EngineConfig {
                lists: [
                    Some("crowdsec-banned".into()),
                    Some("crowdsec6-banned".into()),
                ],
                prefix: "tikban".into(),
                refresh_margin: Duration::from_secs(300),
            },
            now,
        );
        e.mark_fresh();
        e
    }

    fn ban(
        cache: &mut DecisionCache,
        value: &str,
        id: i64,
        secs: i64,
        now: Instant,
    ) -> Vec<Change> {
        let mut b = Batch::new(false);
        b.push_add(BatchAdd {
            value: v(value),
            id,
            duration: GoDuration::from_secs(secs),
            origin: Label::new("cscli"),
        });
        cache.apply(&b, now)
    }

    fn unban(cache: &mut DecisionCache, value: &str, id: i64, now: Instant) -> Vec<Change> {
        let mut b = Batch::new(false);
        b.push_deleted(Deletion {
            value: v(value),
            id,
        });
        cache.apply(&b, now)
    }

    #[test]
    fn one_add_per_new_value_then_remove_by_recorded_id() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let ops = e.plan_changes(&ban(&mut cache, "192.0.2.1", 1, 3600, t0), t0);
        assert_eq!(
            ops,
            [Op::Add {
                value: v("192.0.2.1"),
                timeout: 3600,
                origin: Label::new("cscli")
            }]
        );
        assert!(
            e.on_outcome(&ops[0], Outcome::Done(Some(rid(0x1A))), &cache, t0)
                .is_empty()
        );
        let ops = e.plan_changes(&unban(&mut cache, "192.0.2.1", 1, t0), t0);
        assert_eq!(
            ops,
            [Op::Remove {
                value: v("192.0.2.1"),
                id: rid(0x1A)
            }]
        );
        assert!(
            e.on_outcome(&ops[0], Outcome::Done(None), &cache, t0)
                .is_empty()
        );
        assert_eq!(e.owned_count(Family::V4), 0);
    }

    #[test]
    fn re_insert_with_later_expiry_writes_nothing_until_shortly_before_router_timeout() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let ops = e.plan_changes(&ban(&mut cache, "192.0.2.1", 1, 4 * 3600, t0), t0);
        e.on_outcome(&ops[0], Outcome::Done(Some(rid(1))), &cache, t0);
        // LAPI 1.4.6 re-inserts the community list every 2 h with a new id and a later expiry.
        let t2h = t0 + Duration::from_secs(2 * 3600);
        let changes = ban(&mut cache, "192.0.2.1", 2, 4 * 3600, t2h);
        assert!(matches!(changes[..], [Change::ExpiryChanged { .. }]));
        assert!(e.plan_changes(&changes, t2h).is_empty());
        assert!(e.plan_tick(&cache, t2h).is_empty());
        // 4 minutes before the router entry ends: one refresh with the remaining 2 h.
        let t_due = t0 + Duration::from_secs(4 * 3600 - 240);
        let ops = e.plan_tick(&cache, t_due);
        assert_eq!(
            ops,
            [Op::Refresh {
                value: v("192.0.2.1"),
                id: rid(1),
                timeout: 2 * 3600 + 240
            }]
        );
        e.on_outcome(&ops[0], Outcome::Done(None), &cache, t_due);
        assert!(
            e.plan_tick(&cache, t_due).is_empty(),
            "one refresh, not one per tick"
        );
    }

    #[test]
    fn long_bans_are_clamped_then_refreshed_before_the_router_drops_them() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let year = 365 * 24 * 3600;
        let ops = e.plan_changes(&ban(&mut cache, "2001:db8::1", 1, year, t0), t0);
        assert!(matches!(
            ops[0],
            Op::Add {
                timeout: MAX_TIMEOUT_SECS,
                ..
            }
        ));
        e.on_outcome(&ops[0], Outcome::Done(Some(rid(7))), &cache, t0);
        let before_end = t0 + Duration::from_secs(MAX_TIMEOUT_SECS - 60);
        let ops = e.plan_tick(&cache, before_end);
        let Op::Refresh { timeout, .. } = ops[0] else {
            panic!("{ops:?}")
        };
        // The year-long ban has ~116 days left: the refresh carries exactly that.
        assert_eq!(timeout, year as u64 - (MAX_TIMEOUT_SECS - 60));
    }

    #[test]
    fn a_shorter_decision_ending_does_not_unban() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let ops = e.plan_changes(&ban(&mut cache, "192.0.2.9", 1, 60, t0), t0);
        e.on_outcome(&ops[0], Outcome::Done(Some(rid(2))), &cache, t0);
        assert!(
            e.plan_changes(&ban(&mut cache, "192.0.2.9", 2, 7200, t0), t0)
                .is_empty()
        );
        let later = t0 + Duration::from_secs(61);
        assert!(e.plan_changes(&cache.expire(later), later).is_empty());
        // The router entry (60 s) has run out by now while the 2 h ban holds: refresh it.
        let ops = e.plan_tick(&cache, later);
        assert!(matches!(ops[..], [Op::Refresh { .. }]), "{ops:?}");
        e.on_outcome(&ops[0], Outcome::NoSuchItem, &cache, later);
    }

    #[test]
    fn a_ban_that_runs_out_is_not_removed_by_hand() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let ops = e.plan_changes(&ban(&mut cache, "192.0.2.11", 1, 600, t0), t0);
        e.on_outcome(&ops[0], Outcome::Done(Some(rid(11))), &cache, t0);
        // The router entry got the same 600 s; both end together: no write.
        let end = t0 + Duration::from_secs(600);
        let changes = cache.expire(end);
        assert!(matches!(changes[..], [Change::Removed { .. }]));
        assert!(e.plan_changes(&changes, end).is_empty());
        assert_eq!(e.owned_count(Family::V4), 0);
        // A deletion long before the end still removes.
        let ops = e.plan_changes(&ban(&mut cache, "192.0.2.12", 2, 600, end), end);
        e.on_outcome(&ops[0], Outcome::Done(Some(rid(12))), &cache, end);
        let later = end + Duration::from_secs(60);
        let ops = e.plan_changes(&unban(&mut cache, "192.0.2.12", 2, later), later);
        assert_eq!(
            ops,
            [Op::Remove {
                value: v("192.0.2.12"),
                id: rid(12)
            }]
        );
    }

    #[test]
    fn plan_missing_resumes_and_covers_every_value_once() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        for i in 0..1000u32 {
            ban(
                &mut cache,
                &format!("10.1.{}.{}", i / 250, i % 250 + 1),
                i64::from(i),
                600,
                t0,
            );
        }
        e.begin_reconcile(Family::V4);
        assert!(e.finish_reconcile(&cache).is_empty());
        let mut seen = HashSet::new();
        loop {
            let ops = e.plan_missing(Family::V4, &cache, t0, 64);
            if ops.is_empty() {
                break;
            }
            assert!(ops.len() <= 64);
            for op in &ops {
                assert!(seen.insert(*op.value()), "{op:?} planned twice");
                e.on_outcome(op, Outcome::Done(Some(rid(seen.len() as u32))), &cache, t0);
            }
        }
        assert_eq!(seen.len(), 1000);
        assert_eq!(e.owned_count(Family::V4), 1000);
    }

    #[test]
    fn duplicate_is_adopted_via_lookup() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let ops = e.plan_changes(&ban(&mut cache, "192.0.2.3", 1, 600, t0), t0);
        let follow = e.on_outcome(&ops[0], Outcome::Duplicate, &cache, t0);
        assert_eq!(
            follow,
            [Op::Lookup {
                value: v("192.0.2.3")
            }]
        );
        let row = RouterRow {
            id: "*2F".into(),
            address: "192.0.2.3".into(),
            timeout: Some(Duration::from_secs(500)),
            comment: Some("tikban CAPI".into()),
        };
        assert!(
            e.on_outcome(&follow[0], Outcome::Rows(vec![row]), &cache, t0)
                .is_empty()
        );
        let ops = e.plan_changes(&unban(&mut cache, "192.0.2.3", 1, t0), t0);
        assert_eq!(
            ops,
            [Op::Remove {
                value: v("192.0.2.3"),
                id: rid(0x2F)
            }]
        );
    }

    #[test]
    fn manual_entries_are_never_touched() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        ban(&mut cache, "192.0.2.5", 1, 600, t0);
        let rows = vec![
            RouterRow {
                id: "*1".into(),
                address: "192.0.2.5".into(),
                timeout: None,
                comment: Some("my own block".into()),
            },
            RouterRow {
                id: "*2".into(),
                address: "198.51.100.1".into(),
                timeout: None,
                comment: Some("tikbanner".into()),
            },
            RouterRow {
                id: "*3".into(),
                address: "198.51.100.2".into(),
                timeout: None,
                comment: None,
            },
        ];
        assert!(e.reconcile(Family::V4, rows, &cache, t0).is_empty());
        // The ban ends: the manual entry that enforced it stays.
        assert!(
            e.plan_changes(&unban(&mut cache, "192.0.2.5", 1, t0), t0)
                .is_empty()
        );
    }

    #[test]
    fn reconcile_writes_only_the_difference() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        ban(&mut cache, "192.0.2.1", 1, 600, t0);
        ban(&mut cache, "2001:DB8::1", 2, 600, t0);
        ban(&mut cache, "192.0.2.0/24", 3, 600, t0);
        let row = |id: &str, addr: &str, comment: &str| RouterRow {
            id: id.into(),
            address: addr.into(),
            timeout: Some(Duration::from_secs(30)),
            comment: Some(comment.into()),
        };
        let v4 = vec![
            row("*1", "192.0.2.1", "tikban cscli"), // held correctly (short timeout: no rewrite)
            row("*2", "203.0.113.9", "tikban CAPI"), // ours, no longer banned
            row("*3", "not an address", "tikban"),  // ours, garbage
        ];
        let ops = e.reconcile(Family::V4, v4, &cache, t0);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(matches!(ops[0], Op::Remove { id, .. } if id == rid(2)));
        assert!(matches!(ops[1], Op::Remove { id, .. } if id == rid(3)));
        assert!(matches!(&ops[2], Op::Add { value, .. } if *value == v("192.0.2.0/24")));
        let v6 = vec![row("*9", "2001:db8::1/128", "tikban cscli")];
        assert!(
            e.reconcile(Family::V6, v6, &cache, t0).is_empty(),
            "/128 matches the plain host"
        );
    }

    #[test]
    fn a_warm_restart_writes_nothing() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let mut rows = Vec::new();
        for i in 0..200u32 {
            let addr = format!("10.0.{}.{}", i / 250, i % 250 + 1);
            ban(&mut cache, &addr, i64::from(i), 3600, t0);
            rows.push(RouterRow {
                id: format!("*{:X}", i + 1),
                address: addr,
                timeout: Some(Duration::from_secs(3590)),
                comment: Some("tikban cscli".into()),
            });
        }
        assert!(e.reconcile(Family::V4, rows, &cache, t0).is_empty());
        assert!(e.reconcile(Family::V6, vec![], &cache, t0).is_empty());
        assert_eq!(e.owned_count(Family::V4), 200);
    }

    #[test]
    fn removal_during_an_inflight_add_is_applied_after_the_add() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let add = e.plan_changes(&ban(&mut cache, "192.0.2.4", 1, 600, t0), t0);
        assert!(
            e.plan_changes(&unban(&mut cache, "192.0.2.4", 1, t0), t0)
                .is_empty()
        );
        let follow = e.on_outcome(&add[0], Outcome::Done(Some(rid(4))), &cache, t0);
        assert_eq!(
            follow,
            [Op::Remove {
                value: v("192.0.2.4"),
                id: rid(4)
            }]
        );
    }

    #[test]
    fn traps_are_retried_on_the_next_tick_and_losses_mark_the_view_stale() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = engine(t0);
        let add = e.plan_changes(&ban(&mut cache, "192.0.2.8", 1, 600, t0), t0);
        assert!(
            e.on_outcome(
                &add[0],
                Outcome::Trap("failure: simulated fault".into()),
                &cache,
                t0
            )
            .is_empty()
        );
        let again = e.plan_tick(&cache, t0);
        assert!(matches!(again[..], [Op::Add { .. }]), "{again:?}");
        assert!(!e.is_stale());
        e.on_outcome(&again[0], Outcome::Lost, &cache, t0);
        assert!(e.is_stale());
    }

    #[test]
    fn disabled_family_is_ignored_and_ownership_needs_prefix_and_space() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(t0);
        let mut e = Engine::new(
            EngineConfig {
                lists: [Some("l4".into()), None],
                prefix: "tikban".into(),
                refresh_margin: Duration::from_secs(60),
            },
            t0,
        );
        assert!(
            e.plan_changes(&ban(&mut cache, "2001:db8::5", 1, 60, t0), t0)
                .is_empty()
        );
        assert!(e.is_owned(Some("tikban")));
        assert!(e.is_owned(Some("tikban CAPI")));
        assert!(!e.is_owned(Some("tikban-other CAPI")));
        assert!(!e.is_owned(None));
        assert_eq!(e.comment("lists:fire hol/x"), "tikban lists:fire_hol_x");
    }

    #[test]
    fn timeouts_round_up_and_clamp() {
        assert_eq!(clamp_secs(Duration::from_millis(400)), 1);
        assert_eq!(clamp_secs(Duration::from_millis(1001)), 2);
        assert_eq!(clamp_secs(Duration::ZERO), 1);
        assert_eq!(
            clamp_secs(Duration::from_secs(u64::MAX / 2)),
            MAX_TIMEOUT_SECS
        );
        assert_eq!(RouterId::parse("*1A"), Some(rid(0x1A)));
        assert_eq!(rid(0x1A).to_string(), "*1A");
        assert_eq!(RouterId::parse("1A"), None);
        assert_eq!(RouterId::parse("*0"), None);
    }

    #[test]
    fn tally_formats_the_batch_line() {
        let t = Tally {
            added: [120, 2],
            removed: [3, 0],
            refreshed: [0, 0],
        };
        assert_eq!(t.to_string(), "+120 -3 v4, +2 v6");
        assert_eq!(Tally::default().to_string(), "no changes");
    }
}
