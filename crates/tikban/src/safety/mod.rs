//! Safety: never lock the owner out (issue 14).
//!
//! A decision is enforced on the router unless it would cut off something the owner needs: an
//! address the owner allowlisted, tikban's own addresses, the router tikban talks to, loopback
//! and link-local, the LAPI host, or whoever is logged in to the router right now. A decision
//! wider than a configurable prefix is refused as well. docs/safety.md is the user-facing
//! description; this module is its sans-IO core.
//!
//! Sans-IO, like [`crate::engine`] and [`crate::guard`]: nothing here reads the OS, a socket,
//! DNS or a clock. The caller resolves names, reads interface addresses and polls
//! `/user/active`, and hands the addresses in:
//!
//! ```text
//!  ALLOWLIST ──AddrSet::parse──┐
//!  container addrs, router,    │
//!  LAPI host, /user/active ────┴─▶ Safety ──check(&Value)──▶ Verdict::{Enforce, Skip(Reason)}
//!              set_kind(kind, addrs) ──▶ Update { verdicts, reasons }: what to re-check
//! ```
//!
//! ```
//! use crowdsec_lapi::Value;
//! use tikban::safety::{AddrSet, Kind, Reason, Safety, Settings, Verdict};
//!
//! let settings = Settings {
//!     allowlist: AddrSet::parse("192.168.88.0/24").unwrap(),
//!     ..Settings::default()
//! };
//! let mut safety = Safety::new(settings);
//! let v = |s: &str| Value::parse(s).unwrap();
//! assert_eq!(safety.check(&v("203.0.113.9")), Verdict::Enforce);
//! assert_eq!(safety.check(&v("192.168.88.7")), Verdict::Skip(Reason::Allowlist));
//! assert_eq!(safety.check(&v("192.168.0.0/16")), Verdict::Skip(Reason::Allowlist));
//! assert_eq!(safety.check(&v("0.0.0.0/1")), Verdict::Skip(Reason::RangeV4));
//!
//! // The owner logs in to the router from 198.51.100.23; a list update bans that /24.
//! let update = safety.set_kind(Kind::AdminSession, [v("198.51.100.23")]);
//! assert_eq!(update.verdicts.to_string(), "198.51.100.23");
//! assert_eq!(safety.check(&v("198.51.100.0/24")), Verdict::Skip(Reason::AdminSession));
//! // The session ends: the ban applies again.
//! safety.set_kind(Kind::AdminSession, Vec::<Value>::new());
//! assert_eq!(safety.check(&v("198.51.100.0/24")), Verdict::Enforce);
//! ```
//!
//! ## Covering ranges are skipped whole, not split
//!
//! A decision is skipped when it shares any address with a protected set: a host or network
//! inside an allowlisted network, and equally a network that *contains* an allowlisted address
//! (`203.0.113.0/24` when `203.0.113.7` is allowlisted). The covering range is not cut into the
//! pieces around the hole:
//! - splitting a `/8` around one `/32` takes 24 router entries (one per prefix length from /9 to
//!   /32) for every hole, so a handful of protected addresses inside list ranges multiplies the
//!   router's entries and commands;
//! - the pieces are no longer the decision LAPI sent: they cannot be matched, refreshed or
//!   removed as that decision, and the router would hold entries no decision explains;
//! - it would spend the router's entry budget on the widest, least precise decisions;
//! - the owner's safety beats the ban's width: leaving one wide range unenforced costs a little
//!   protection, enforcing it wrongly costs the owner the router.
//!
//! ## Range limits
//!
//! [`RangeLimits`] refuses decisions wider than a prefix, by default nothing wider than `/8`
//! for IPv4 and `/32` for IPv6. Its doc gives the reasoning.
//!
//! ## Changes of a protected set
//!
//! [`Safety::set_kind`] replaces one kind's addresses and returns an [`Update`]: the addresses
//! whose verdict may have flipped. A cached decision outside [`Update::verdicts`] keeps its
//! verdict, so the caller re-checks only the decisions that meet it ([`AddrSet::lookups`] finds
//! them by hash look-up, or [`AddrSet::intersects`] while scanning). An unchanged session list
//! costs a sort and a comparison of a few addresses and yields an empty update; nothing else.
//!
//! ## Logging each skip once
//!
//! [`Reported`] remembers which values were already logged, bounded, so the caller logs a
//! skipped decision once at info rather than on every LAPI re-insert or reconcile.

mod reported;
mod set;

pub use reported::{DEFAULT_REPORTED, Reported, peer_text};
pub use set::{
    AddrSet, BadEntry, Cidrs, MAX_ENTRIES, MAX_LISTED, MAX_LOOKUPS, ParseError, Problem,
};

use std::fmt;

use crowdsec_lapi::Value;

// === Reason, Kind, Verdict ===

/// Why a decision is not enforced: the label of `tikban_decisions_skipped_total{reason}` and
/// of the `/health` skip counts.
///
/// The range limit has one reason per family (`range-v4`, `range-v6`) because each family has
/// its own limit (`MAX_RANGE_V4`, `MAX_RANGE_V6`): the label tells the owner which one to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// An IPv4 network wider than [`RangeLimits::v4`].
    RangeV4,
    /// An IPv6 network wider than [`RangeLimits::v6`].
    RangeV6,
    /// Meets the owner's allowlist ([`Kind::Allowlist`]).
    Allowlist,
    /// Meets 127.0.0.0/8 or ::1 ([`Kind::Loopback`]).
    Loopback,
    /// Meets 169.254.0.0/16 or fe80::/10 ([`Kind::LinkLocal`]).
    LinkLocal,
    /// Meets one of tikban's own addresses ([`Kind::Own`], label `self`).
    Own,
    /// Meets the router address tikban talks to ([`Kind::Router`]).
    Router,
    /// Meets an address of the LAPI host ([`Kind::Lapi`]).
    Lapi,
    /// Meets the address of an active admin session on the router ([`Kind::AdminSession`]).
    AdminSession,
}

impl Reason {
    /// Every reason, in the order [`Safety::check`] tests them: the first that applies is the
    /// one reported.
    pub const ALL: [Reason; 9] = [
        Reason::RangeV4,
        Reason::RangeV6,
        Reason::Allowlist,
        Reason::Loopback,
        Reason::LinkLocal,
        Reason::Own,
        Reason::Router,
        Reason::Lapi,
        Reason::AdminSession,
    ];

    /// The metric label: `range-v4`, `range-v6`, `allowlist`, `loopback`, `link-local`, `self`,
    /// `router`, `lapi`, `admin-session`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::RangeV4 => "range-v4",
            Reason::RangeV6 => "range-v6",
            Reason::Allowlist => "allowlist",
            Reason::Loopback => "loopback",
            Reason::LinkLocal => "link-local",
            Reason::Own => "self",
            Reason::Router => "router",
            Reason::Lapi => "lapi",
            Reason::AdminSession => "admin-session",
        }
    }

    /// Position in [`Reason::ALL`]: the index of per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The protected set behind this reason; `None` for the range limits.
    pub fn kind(self) -> Option<Kind> {
        match self {
            Reason::RangeV4 | Reason::RangeV6 => None,
            Reason::Allowlist => Some(Kind::Allowlist),
            Reason::Loopback => Some(Kind::Loopback),
            Reason::LinkLocal => Some(Kind::LinkLocal),
            Reason::Own => Some(Kind::Own),
            Reason::Router => Some(Kind::Router),
            Reason::Lapi => Some(Kind::Lapi),
            Reason::AdminSession => Some(Kind::AdminSession),
        }
    }

    /// Why, in words, for the log line: `wider than MAX_RANGE_V4`, `meets the allowlist`, ….
    pub fn why(self) -> &'static str {
        match self {
            Reason::RangeV4 => "wider than the IPv4 range limit (MAX_RANGE_V4)",
            Reason::RangeV6 => "wider than the IPv6 range limit (MAX_RANGE_V6)",
            Reason::Allowlist => "meets the allowlist (ALLOWLIST)",
            Reason::Loopback => "meets loopback (127.0.0.0/8, ::1)",
            Reason::LinkLocal => "meets link-local (169.254.0.0/16, fe80::/10)",
            Reason::Own => "meets one of tikban's own addresses",
            Reason::Router => "meets the router address tikban uses (MIKROTIK_HOST)",
            Reason::Lapi => "meets an address of the LAPI host (CROWDSEC_URL)",
            Reason::AdminSession => "meets an admin session logged in to the router now",
        }
    }
}

impl fmt::Display for Reason {
    /// The [`Reason::label`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One protected set of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The owner's `ALLOWLIST`, parsed with [`AddrSet::parse`].
    Allowlist,
    /// 127.0.0.0/8 and ::1, filled by [`Safety::new`]. A decision for a loopback address is
    /// a parser's mistake (a reverse proxy's own address), never an attacker.
    Loopback,
    /// 169.254.0.0/16 and fe80::/10, filled by [`Safety::new`]. IPv6 link-local addresses
    /// carry neighbour discovery and router advertisements; banning them breaks IPv6 on the
    /// link, and neither range is routed, so no remote attacker has one.
    LinkLocal,
    /// tikban's own addresses: the container's interface addresses, read by the caller.
    Own,
    /// The router address tikban connects to (`MIKROTIK_HOST`, resolved by the caller).
    Router,
    /// The LAPI host's addresses (`CROWDSEC_URL`'s host, re-resolved by the caller when its
    /// addresses change): banning it would stop tikban from hearing the unban.
    Lapi,
    /// Source addresses of the router's active admin sessions (`/user/active`, the `address`
    /// of each row), replaced wholesale on every refresh.
    AdminSession,
}

impl Kind {
    /// Every kind, in the order [`Safety::check`] tests them.
    pub const ALL: [Kind; 7] = [
        Kind::Allowlist,
        Kind::Loopback,
        Kind::LinkLocal,
        Kind::Own,
        Kind::Router,
        Kind::Lapi,
        Kind::AdminSession,
    ];

    /// The reason a decision meeting this set is skipped for.
    pub fn reason(self) -> Reason {
        match self {
            Kind::Allowlist => Reason::Allowlist,
            Kind::Loopback => Reason::Loopback,
            Kind::LinkLocal => Reason::LinkLocal,
            Kind::Own => Reason::Own,
            Kind::Router => Reason::Router,
            Kind::Lapi => Reason::Lapi,
            Kind::AdminSession => Reason::AdminSession,
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The [`Reason::label`] of this kind.
    pub fn label(self) -> &'static str {
        self.reason().label()
    }
}

/// What to do with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Put it on the router.
    Enforce,
    /// Keep it in the cache but not on the router, for this reason.
    Skip(Reason),
}

impl Verdict {
    /// True for [`Verdict::Enforce`].
    pub fn is_enforce(self) -> bool {
        self == Verdict::Enforce
    }
}

// === Settings ===

/// Which automatic protections are on. All are on by default; each can be switched off
/// (docs/safety.md proposes one variable each). The allowlist has no switch: empty is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protections {
    /// tikban's own addresses ([`Kind::Own`], `PROTECT_SELF`).
    pub own: bool,
    /// The router address tikban uses ([`Kind::Router`], `PROTECT_ROUTER`).
    pub router: bool,
    /// 127.0.0.0/8 and ::1 ([`Kind::Loopback`], `PROTECT_LOOPBACK`).
    pub loopback: bool,
    /// 169.254.0.0/16 and fe80::/10 ([`Kind::LinkLocal`], `PROTECT_LINK_LOCAL`).
    pub link_local: bool,
    /// The LAPI host's addresses ([`Kind::Lapi`], `PROTECT_LAPI`).
    pub lapi: bool,
    /// Active admin sessions' addresses ([`Kind::AdminSession`], `PROTECT_ADMIN_SESSIONS`).
    pub admin_sessions: bool,
}

impl Default for Protections {
    /// Everything on.
    fn default() -> Self {
        Protections {
            own: true,
            router: true,
            loopback: true,
            link_local: true,
            lapi: true,
            admin_sessions: true,
        }
    }
}

impl Protections {
    /// True when `kind` is protected. [`Kind::Allowlist`] always is (an empty one protects
    /// nothing).
    pub fn enabled(&self, kind: Kind) -> bool {
        match kind {
            Kind::Allowlist => true,
            Kind::Loopback => self.loopback,
            Kind::LinkLocal => self.link_local,
            Kind::Own => self.own,
            Kind::Router => self.router,
            Kind::Lapi => self.lapi,
            Kind::AdminSession => self.admin_sessions,
        }
    }
}

/// The widest decisions enforced, as prefix lengths: a decision with a shorter prefix is
/// skipped ([`Reason::RangeV4`], [`Reason::RangeV6`]). A limit of 0 accepts everything.
///
/// Defaults: nothing wider than a `/8` for IPv4 and a `/32` for IPv6.
/// - A `/0` or `/1` is almost certainly a mistake (a typo in a list, a parser that lost the
///   prefix), and on the router it would drop the owner's own traffic along with everyone
///   else's.
/// - IPv4: a `/8` is the largest block ever assigned to a single organisation (the legacy
///   class A assignments). Public abuse lists list blocks held by abusers (Spamhaus DROP lists
///   only whole RIR allocations to spammers or hijacked blocks); the only wider entries seen in
///   public lists are bogon blocks such as `224.0.0.0/3` in FireHOL's level 1 set, which its
///   maintainer says belongs on the internet-facing interface only
///   (firehol/blocklist-ipsets#70), not on a router's global drop list.
/// - IPv6: a `/32` is the classic minimum allocation from a regional registry to one ISP
///   (RIPE's IPv6 policy, "minimum allocation"), so a wider decision spans more than one
///   provider's customers. Registries now hand out up to a `/29` without justification; a list
///   that bans such a whole allocation is skipped at the default and counted under `range-v6`:
///   lower `MAX_RANGE_V6` to 29 to enforce it.
///
/// The limit does not make narrower lists safe: `10.0.0.0/8` and `192.168.0.0/16` pass it and
/// appear in bogon lists that lock LANs out (firehol/blocklist-ipsets#59, #357); that is what
/// the allowlist and the admin-session protection are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLimits {
    /// Shortest IPv4 prefix enforced, 0 to 32 (`MAX_RANGE_V4`).
    pub v4: u8,
    /// Shortest IPv6 prefix enforced, 0 to 128 (`MAX_RANGE_V6`).
    pub v6: u8,
}

impl Default for RangeLimits {
    /// `/8` and `/32`.
    fn default() -> Self {
        RangeLimits { v4: 8, v6: 32 }
    }
}

/// A range limit beyond the family's width.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// The IPv4 limit is above 32.
    #[error("MAX_RANGE_V4: {0} is not a prefix length from 0 to 32")]
    V4(u8),
    /// The IPv6 limit is above 128.
    #[error("MAX_RANGE_V6: {0} is not a prefix length from 0 to 128")]
    V6(u8),
}

impl RangeLimits {
    /// Checks both limits; every problem.
    pub fn check(&self) -> Result<(), Vec<RangeError>> {
        let mut problems = Vec::new();
        if self.v4 > 32 {
            problems.push(RangeError::V4(self.v4));
        }
        if self.v6 > 128 {
            problems.push(RangeError::V6(self.v6));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The range reason for `value`, if it is wider than its family's limit.
    pub fn exceeded(&self, value: &Value) -> Option<Reason> {
        let prefix = value.prefix_len();
        if value.is_ipv6() {
            (prefix < self.v6).then_some(Reason::RangeV6)
        } else {
            (prefix < self.v4).then_some(Reason::RangeV4)
        }
    }
}

/// Everything [`Safety::new`] takes from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The owner's allowlist (`ALLOWLIST`, [`AddrSet::parse`]).
    pub allowlist: AddrSet,
    /// Which automatic protections are on.
    pub protections: Protections,
    /// The widest decisions enforced.
    pub ranges: RangeLimits,
}

// === Safety ===

/// The protected sets and the range limits; answers "enforce this decision?".
///
/// Calling order: [`Safety::new`] once; [`Safety::set_kind`] whenever the caller learns new
/// addresses for a kind (at start for [`Kind::Own`], [`Kind::Router`], [`Kind::Lapi`], then on
/// every re-resolution and every `/user/active` refresh); [`Safety::check`] for every decision
/// before it goes to the router, and again for the cached decisions an [`Update`] names.
///
/// Cost: [`Safety::check`] is one binary search over the union of all sets for the common
/// case (not protected), plus one per kind when the value is protected, to name the reason.
/// No allocation. Memory: each set at most [`MAX_ENTRIES`] intervals of 32 bytes.
#[derive(Debug, Clone)]
pub struct Safety {
    protections: Protections,
    ranges: RangeLimits,
    sets: [AddrSet; 7],
    /// The union of `sets`: one search answers "protected at all?".
    union: AddrSet,
    generation: u64,
}

/// What a [`Safety::set_kind`] call changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Addresses that became protected or stopped being protected (by any kind). A decision
    /// that does not meet this set has the same [`Verdict`] `Enforce`/`Skip` as before; one
    /// that meets it must be re-checked. Empty when nothing flipped.
    pub verdicts: AddrSet,
    /// Addresses whose protection by this kind changed: a superset of `verdicts`. A decision
    /// meeting it but not `verdicts` is still skipped, possibly for another [`Reason`]; only a
    /// caller that keeps per-reason gauges needs it.
    pub reasons: AddrSet,
    /// Values given beyond [`MAX_ENTRIES`], ignored (the caller should warn).
    pub left_out: usize,
}

impl Update {
    /// True when no verdict nor reason changed.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty() && self.reasons.is_empty()
    }
}

impl Safety {
    /// Protection as configured: the allowlist, loopback and link-local (when on); the other
    /// kinds empty until [`Safety::set_kind`].
    pub fn new(settings: Settings) -> Safety {
        let Settings {
            allowlist,
            protections,
            ranges,
        } = settings;
        let fixed = |on: bool, entries: &[&str]| {
            if !on {
                return AddrSet::new();
            }
            // Constant, valid CIDRs: parsing cannot fail (tested); empty if it did.
            AddrSet::parse(&entries.join(" ")).unwrap_or_default()
        };
        let sets = [
            allowlist,
            fixed(protections.loopback, &["127.0.0.0/8", "::1"]),
            fixed(protections.link_local, &["169.254.0.0/16", "fe80::/10"]),
            AddrSet::new(),
            AddrSet::new(),
            AddrSet::new(),
            AddrSet::new(),
        ];
        let mut safety = Safety {
            protections,
            ranges,
            sets,
            union: AddrSet::new(),
            generation: 0,
        };
        safety.union = safety.build_union();
        safety
    }

    /// Enforce or skip `value`. Range limits first, then the kinds in [`Kind::ALL`] order; the
    /// first that applies is the reason. O(log n), no allocation.
    pub fn check(&self, value: &Value) -> Verdict {
        if let Some(reason) = self.ranges.exceeded(value) {
            return Verdict::Skip(reason);
        }
        let span = set::span(value);
        if !self.union.intersects_span(span) {
            return Verdict::Enforce;
        }
        for kind in Kind::ALL {
            if self.sets[kind.index()].intersects_span(span) {
                return Verdict::Skip(kind.reason());
            }
        }
        // The union holds exactly the sets' addresses; not reached.
        Verdict::Enforce
    }

    /// Replaces `kind`'s addresses (hosts or networks) and says what changed. A kind switched
    /// off in [`Protections`] stays empty and the update is empty. At most [`MAX_ENTRIES`]
    /// values are kept; [`Update::left_out`] counts the rest.
    ///
    /// When the addresses are the same as before (a session list refreshed with nobody
    /// logging in or out) the update is empty and [`Safety::generation`] does not move.
    pub fn set_kind<I>(&mut self, kind: Kind, values: I) -> Update
    where
        I: IntoIterator,
        I::Item: Into<Value>,
    {
        if !self.protections.enabled(kind) {
            return Update::default();
        }
        let (set, left_out) = AddrSet::from_values(values.into_iter().map(Into::into));
        let slot = &mut self.sets[kind.index()];
        if *slot == set {
            return Update {
                left_out,
                ..Update::default()
            };
        }
        let reasons = slot.symmetric_difference(&set);
        *slot = set;
        let union = self.build_union();
        let verdicts = self.union.symmetric_difference(&union);
        self.union = union;
        self.generation += 1;
        Update {
            verdicts,
            reasons,
            left_out,
        }
    }

    /// `kind`'s addresses, for `/health` and logs.
    pub fn set(&self, kind: Kind) -> &AddrSet {
        &self.sets[kind.index()]
    }

    /// Every protected address, all kinds together.
    pub fn protected(&self) -> &AddrSet {
        &self.union
    }

    /// Counts the [`Safety::set_kind`] calls that changed something. A caller that re-checks
    /// its whole cache (1,000,000 values cost one [`Safety::check`] each) can remember the
    /// generation it last checked at and skip the pass when it has not moved.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The protections as configured.
    pub fn protections(&self) -> Protections {
        self.protections
    }

    /// The range limits as configured.
    pub fn ranges(&self) -> RangeLimits {
        self.ranges
    }

    fn build_union(&self) -> AddrSet {
        self.sets
            .iter()
            .fold(AddrSet::new(), |acc, set| acc.union(set))
    }
}

#[cfg(test)]
mod tests;
