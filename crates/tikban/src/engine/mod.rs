//! The sync engine's brain: which router commands make the address lists equal to the cache.
//!
//! Sans-IO, like the codec: it takes the cache's change-sets, router rows and command outcomes,
//! plus `now`, and returns [`Op`]s. The [`Supervisor`](crate::supervisor::Supervisor) decides
//! when to ask; the daemon turns ops into pipelined RouterOS commands ([`wire`]) and feeds each
//! outcome back with [`Engine::on_outcome`]. Nothing here waits, sleeps or talks to a socket, so
//! every rule below is unit-tested with a hand-driven clock, and a model-based property test
//! (`tests.rs`) drives it against a model router.
//!
//! Layout: this file holds the types and the view; [`plan`](self) (`plan.rs`) turns desired-state
//! changes, timer ticks and outcomes into ops; `reconcile.rs` rebuilds the view from a print;
//! [`wire`] maps ops to RouterOS commands and replies to outcomes.
//!
//! Rules (issue 5, `docs/reference/routeros-api.md` §9):
//! - **One command per changed address.** An add records the `.id` from `!done =ret=`; a later
//!   remove uses it without a lookup.
//! - **Lazy timeout refresh.** An entry gets the decision's remaining time, clamped to
//!   `35w3d13:13:56` (21 474 836 s). When the decision outlives the router entry (extended, or
//!   clamped), one `set` goes out shortly before the router-side timeout ends, not on every LAPI
//!   re-insert (LAPI 1.4.6 re-inserts the community list every 2 h, `docs/reference/crowdsec-lapi.md` §6).
//! - **Ownership.** Only entries whose comment is the prefix, or starts with the prefix and a
//!   space, are removed or changed. Other entries with a banned address are left alone and
//!   count as enforcing it.
//! - **Duplicates** (`failure: already have such entry`) are device errors: look the entry up
//!   and adopt it.
//! - **Reconcile**: router rows (one print per list) against the cache; an entry the router
//!   already holds is not written again, whatever its remaining timeout. Rows are bounded: a
//!   router that streams more rows than the cache could explain abandons the reconcile.
//! - **Orphans** (second copies of an entry, owned rows whose address does not parse) are
//!   removed by id; their outcome never touches the state of the value they resemble.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crowdsec_lapi::{DecisionCache, Label, Value};

mod held;
mod plan;
pub mod reconcile;
#[cfg(test)]
mod tests;
pub mod wire;

pub use reconcile::{ReconcileError, Reconciled};

/// The longest timeout RouterOS accepts: `35w3d13:13:56` (`docs/reference/routeros-api.md` §9).
pub const MAX_TIMEOUT_SECS: u64 = 21_474_836;

/// What the engine asks of the desired state: which values must be on the router, until when,
/// and for which origin. [`DecisionCache`] answers "every banned value"; the supervisor's view
/// also leaves out what the safety rules and the entry budget refuse (`supervisor/policy.rs`).
pub trait Wanted {
    /// When `value`'s ban ends and its origin, if the value must be on the router.
    fn wanted(&self, value: &Value) -> Option<(Instant, Label)>;
    /// Calls `f` with every value that must be on the router.
    fn each_wanted(&self, f: &mut dyn FnMut(Value));
    /// An upper bound of the number of wanted values (it sizes the row limit of a reconcile).
    fn bound(&self) -> usize;
}

impl Wanted for DecisionCache {
    fn wanted(&self, value: &Value) -> Option<(Instant, Label)> {
        self.expires_at(value).map(|e| {
            (
                e,
                self.origin(value)
                    .cloned()
                    .unwrap_or_else(|| Label::new("")),
            )
        })
    }

    fn each_wanted(&self, f: &mut dyn FnMut(Value)) {
        for (value, _, _) in self.iter() {
            f(value);
        }
    }

    fn bound(&self) -> usize {
        self.len()
    }
}

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

    /// 0 for IPv4, 1 for IPv6: the index of per-family arrays.
    pub fn index(self) -> usize {
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
        /// The value (for an orphan: the value it resembles, or the family's unspecified
        /// address; only its family matters then).
        value: Value,
        /// Its router id.
        id: RouterId,
        /// A row the engine does not track as the value's entry (a second copy, an owned row
        /// whose address does not parse): its outcome changes nothing else.
        orphan: bool,
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
    /// The command got no reply within the command timeout: retried like a trap. Several in a
    /// row make the supervisor drop the connection (a desynchronised stream).
    Timeout,
    /// The connection broke before an answer; the supervisor reconnects and reconciles.
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
    /// Rows one list print may stream beyond twice the cache ([`reconcile::ROW_SLACK`]).
    pub row_slack: usize,
    /// Removals one reconcile queues at most ([`reconcile::MAX_REMOVALS`]).
    pub max_removals: usize,
}

/// What the engine believes about one router entry. 12 bytes (16 with its key in the compact
/// table of IPv4 hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Held {
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
    /// Counts one op.
    pub fn count(&mut self, op: &Op) {
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

    /// Adds another tally.
    pub fn add(&mut self, other: &Tally) {
        for i in 0..2 {
            self.added[i] += other.added[i];
            self.removed[i] += other.removed[i];
            self.refreshed[i] += other.refreshed[i];
        }
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
    held: [held::HeldMap; 2],
    /// Values whose last command failed with a trap: planned again on the next tick.
    retry: HashSet<Value>,
    /// A reconcile in progress.
    building: Option<reconcile::Building>,
    /// Banned values the router lacked at the last reconcile, per family, taken in chunks by
    /// [`Engine::plan_missing`]. Each is checked again when taken, so a cache that changes
    /// between chunks (LAPI polls run beside the router work) cannot cause a wrong add.
    missing: [Missing; 2],
}

/// Values to add after a reconcile. IPv4 hosts, the bulk of every list, take 4 bytes each.
#[derive(Debug, Default)]
struct Missing {
    v4: Vec<Ipv4Addr>,
    other: Vec<Value>,
}

impl Missing {
    fn pop(&mut self) -> Option<Value> {
        match self.v4.pop() {
            Some(a) => Some(Value::from_ip(a.into())),
            None => self.other.pop(),
        }
    }

    fn push(&mut self, value: Value) {
        match value.as_v4_host() {
            Some(a) => self.v4.push(a),
            None => self.other.push(value),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    fn clear(&mut self) {
        *self = Missing::default();
    }
}

pub(crate) fn secs_since(epoch: Instant, t: Instant) -> u32 {
    u32::try_from(t.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX - 1)
}

/// The comment of a new entry: the prefix and the origin, in plain ASCII (RouterOS declares no
/// charset, `docs/reference/routeros-api.md` §7).
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

pub(crate) fn clamp_secs(d: Duration) -> u64 {
    // Round up: a 0.4 s remainder is still a ban (`docs/reference/crowdsec-lapi.md` §5, "round sub-second values
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
            held: [held::HeldMap::default(), held::HeldMap::default()],
            retry: HashSet::new(),
            building: None,
            missing: [Missing::default(), Missing::default()],
        }
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

    /// Router entries the view holds for a family (owned or not): the size a print of the list
    /// is expected to have, for its deadline.
    pub fn held_count(&self, family: Family) -> usize {
        self.held[family.index()].len()
    }

    /// Changes the row slack of later reconciles (tests of hostile prints).
    #[doc(hidden)]
    pub fn set_row_slack(&mut self, slack: usize) {
        self.config.row_slack = slack;
    }

    /// Heap bytes of the router view and the queue of missing values (`docs/benchmarks.md`).
    pub fn heap_bytes(&self) -> usize {
        self.held
            .iter()
            .map(held::HeldMap::heap_bytes)
            .sum::<usize>()
            + self
                .missing
                .iter()
                .map(|m| m.v4.capacity() * 4 + m.other.capacity() * std::mem::size_of::<Value>())
                .sum::<usize>()
    }

    /// Adds still to plan after the last reconcile, over both families.
    pub fn missing_count(&self) -> usize {
        self.missing.iter().map(Missing::len).sum()
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
    /// no charset, `docs/reference/routeros-api.md` §7).
    pub fn comment(&self, origin: &str) -> String {
        comment(&self.config.prefix, origin)
    }

    /// The comment prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    pub(crate) fn secs(&self, t: Instant) -> u32 {
        secs_since(self.epoch, t)
    }

    pub(crate) fn instant(&self, secs: u32) -> Instant {
        self.epoch + Duration::from_secs(u64::from(secs))
    }

    pub(crate) fn enabled(&self, value: &Value) -> bool {
        self.list(Family::of(value)).is_some()
    }

    pub(crate) fn add_op(
        &mut self,
        value: Value,
        expires_at: Instant,
        origin: Label,
        now: Instant,
    ) -> Op {
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

    pub(crate) fn held_mut(&mut self, value: &Value) -> Option<&mut Held> {
        self.held[Family::of(value).index()].get_mut(value)
    }

    pub(crate) fn held(&self, value: &Value) -> Option<&Held> {
        self.held[Family::of(value).index()].get(value)
    }

    pub(crate) fn forget(&mut self, value: &Value) {
        self.held[Family::of(value).index()].remove(value);
    }

    /// The router-side end of a held entry (tests and diagnostics).
    pub fn router_expiry(&self, value: &Value) -> Option<Instant> {
        self.held(value)
            .filter(|h| h.expires != u32::MAX)
            .map(|h| self.instant(h.expires))
    }
}
