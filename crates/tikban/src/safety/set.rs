//! [`AddrSet`]: IPv4 and IPv6 addresses and networks, kept as sorted, merged intervals.
//!
//! Each family holds its intervals `[first, last]` (addresses as integers; IPv4 in the low 32
//! bits) sorted, disjoint and never adjacent: `10.0.0.0/9` and `10.128.0.0/9` are stored as one
//! interval, the same as `10.0.0.0/8`. Two sets are therefore equal exactly when they hold the
//! same addresses, whatever CIDRs they were written with.
//!
//! A query takes a [`Value`]'s interval and binary-searches the first stored interval that ends
//! at or after the query's start: O(log n), no allocation. Building a set sorts its entries
//! (O(n log n)); [`AddrSet::union`] and [`AddrSet::symmetric_difference`] sweep both sets'
//! boundaries (O((n + m) log(n + m))). Sets are small (at most [`MAX_ENTRIES`] entries each) and
//! rebuilt rarely (configuration, an admin session starting or ending), while queries run once
//! per decision (a million on a cold sync).
//!
//! IPv4-mapped IPv6 (`::ffff:a.b.c.d`, and networks of prefix 96 or more inside
//! `::ffff:0:0/96`) is IPv4 here, exactly as [`Value`] canonicalises it: an allowlist entry
//! `::ffff:192.0.2.1` protects the decision `192.0.2.1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crowdsec_lapi::Value;

/// Most entries in one [`AddrSet`]: allowlist entries in [`AddrSet::parse`], values in
/// [`AddrSet::from_values`].
pub const MAX_ENTRIES: usize = 4096;
/// Most bad entries a [`ParseError`] quotes; the rest are counted
/// ([`ParseError::unlisted`]), so the error stays one readable log line.
pub const MAX_LISTED: usize = 64;
/// Most values [`AddrSet::lookups`] returns, whatever `max` it is given: past this many hash
/// look-ups, scanning the cache is as cheap.
pub const MAX_LOOKUPS: usize = 65_536;
/// Bytes of a bad entry quoted in a [`ParseError`].
const ENTRY_BYTES: usize = 64;

// === impl Fam ===

/// An address family, as the interval code needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fam {
    V4,
    V6,
}

impl Fam {
    fn width(self) -> u32 {
        match self {
            Fam::V4 => 32,
            Fam::V6 => 128,
        }
    }

    /// The highest address.
    fn max(self) -> u128 {
        match self {
            Fam::V4 => u128::from(u32::MAX),
            Fam::V6 => u128::MAX,
        }
    }

    fn ip(self, bits: u128) -> IpAddr {
        match self {
            // In a V4 interval every address is at most u32::MAX (`Fam::max`).
            Fam::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX))),
            Fam::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }
}

/// Host bits below a prefix of `width - host` bits: `host` low bits set.
fn low_mask(host: u32) -> u128 {
    if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

/// The family and `[first, last]` addresses of a value.
pub(crate) fn span(value: &Value) -> (Fam, u128, u128) {
    let (fam, bits) = match value.addr() {
        IpAddr::V4(a) => (Fam::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Fam::V6, u128::from(a)),
    };
    // `Value` keeps the prefix within the family's width; saturate all the same.
    let host = fam.width().saturating_sub(u32::from(value.prefix_len()));
    let mask = low_mask(host);
    (fam, bits & !mask, bits | mask)
}

// === impl Runs ===

/// One family's intervals: sorted, disjoint, not adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Runs(Vec<(u128, u128)>);

impl Runs {
    /// Sorts and merges arbitrary intervals (each `first <= last`).
    fn from_unsorted(mut spans: Vec<(u128, u128)>) -> Runs {
        spans.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (first, last) in spans {
            match out.last_mut() {
                // Overlapping or adjacent: `first <= prev.1 + 1`, written without overflow.
                Some(prev) if first <= prev.1 || first - prev.1 == 1 => {
                    prev.1 = prev.1.max(last);
                }
                _ => out.push((first, last)),
            }
        }
        out.shrink_to_fit();
        Runs(out)
    }

    /// True when some address in `[first, last]` is in the set.
    fn intersects(&self, first: u128, last: u128) -> bool {
        // Intervals are sorted and disjoint, so their ends are sorted too.
        let i = self.0.partition_point(|&(_, end)| end < first);
        self.0.get(i).is_some_and(|&(start, _)| start <= last)
    }

    /// True when every address in `[first, last]` is in the set.
    fn covers(&self, first: u128, last: u128) -> bool {
        // Merged intervals: a covered range lies inside one interval.
        let i = self.0.partition_point(|&(_, end)| end < first);
        self.0
            .get(i)
            .is_some_and(|&(start, end)| start <= first && last <= end)
    }

    /// The addresses where `op(in self, in other)` holds; `op(false, false)` must be false.
    fn combine(&self, other: &Runs, fam: Fam, op: fn(bool, bool) -> bool) -> Runs {
        // Membership is constant between consecutive boundaries (an interval's first address,
        // or the address after its last), and false before the lowest one.
        let mut points: Vec<u128> = Vec::with_capacity(2 * (self.0.len() + other.0.len()));
        for &(first, last) in self.0.iter().chain(other.0.iter()) {
            points.push(first);
            if last < fam.max() {
                points.push(last + 1);
            }
        }
        points.sort_unstable();
        points.dedup();
        let mut out: Vec<(u128, u128)> = Vec::new();
        for (i, &start) in points.iter().enumerate() {
            let end = match points.get(i + 1) {
                Some(next) => next - 1,
                None => fam.max(),
            };
            if !op(
                self.intersects(start, start),
                other.intersects(start, start),
            ) {
                continue;
            }
            match out.last_mut() {
                Some(prev) if prev.1 < start && start - prev.1 == 1 => prev.1 = end,
                _ => out.push((start, end)),
            }
        }
        Runs(out)
    }
}

// === impl AddrSet ===

/// A set of IPv4 and IPv6 addresses: the allowlist, or one kind of protected address.
///
/// ```
/// use crowdsec_lapi::Value;
/// use tikban::safety::AddrSet;
///
/// let set = AddrSet::parse("192.168.88.0/24, 2001:db8::7 ::ffff:198.51.100.9").unwrap();
/// let v = |s: &str| Value::parse(s).unwrap();
/// assert!(set.intersects(&v("192.168.88.10")));   // inside an allowlisted network
/// assert!(set.intersects(&v("192.168.0.0/16")));  // covers an allowlisted network
/// assert!(set.intersects(&v("198.51.100.9")));    // mapped IPv6 is IPv4
/// assert!(!set.intersects(&v("192.168.89.1")));
/// assert_eq!(set.to_string(), "192.168.88.0/24, 198.51.100.9, 2001:db8::7");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AddrSet {
    v4: Runs,
    v6: Runs,
}

impl AddrSet {
    /// The empty set.
    pub fn new() -> AddrSet {
        AddrSet::default()
    }

    /// Parses an allowlist: addresses and CIDR networks, IPv4 or IPv6, separated by commas
    /// and/or white space (`10.0.0.0/8, 192.0.2.7 2001:db8::/32`). Empty text is the empty set.
    ///
    /// Each entry is an address (`192.0.2.7`, `2001:db8::7`, `::ffff:192.0.2.7`) or
    /// `address/prefix` with a decimal prefix of at most 32 or 128. A network must be written
    /// with its host bits clear: `192.168.88.1/24` is refused, because it reads two ways
    /// (the network `192.168.88.0/24`, as RouterOS would store it, or the host `192.168.88.1`,
    /// as `/ip/address` prints an interface), and guessing either is wrong for someone: the host
    /// leaves the rest of the LAN bannable, the network exempts 255 addresses the owner may not
    /// have meant. The error names both readings, so the fix is one edit. `GUARD_ALLOWLIST` has
    /// the same rule. Zone indexes (`fe80::1%ether1`), ranges (`a-b`) and host names are
    /// refused too. Overlapping and duplicate entries are fine and merged.
    ///
    /// Every bad entry is reported at once (the first [`MAX_LISTED`] quoted, the rest counted),
    /// along with a count over [`MAX_ENTRIES`]. Never panics.
    pub fn parse(text: &str) -> Result<AddrSet, ParseError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut bad = Vec::new();
        let mut unlisted = 0;
        let mut entries = 0;
        let tokens = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty());
        for token in tokens {
            entries += 1;
            match parse_entry(token) {
                Ok(value) => {
                    if entries <= MAX_ENTRIES {
                        push_span(&mut v4, &mut v6, &value);
                    }
                }
                Err(problem) if bad.len() < MAX_LISTED => bad.push(BadEntry {
                    text: truncated(token),
                    problem,
                }),
                Err(_) => unlisted += 1,
            }
        }
        if bad.is_empty() && entries <= MAX_ENTRIES {
            return Ok(AddrSet {
                v4: Runs::from_unsorted(v4),
                v6: Runs::from_unsorted(v6),
            });
        }
        Err(ParseError {
            bad,
            unlisted,
            entries,
        })
    }

    /// The set of the first [`MAX_ENTRIES`] values; the second item is how many more there
    /// were (ignored). Values are hosts or networks, canonical as [`Value`] makes them.
    pub fn from_values<I>(values: I) -> (AddrSet, usize)
    where
        I: IntoIterator<Item = Value>,
    {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut left_out = 0;
        for (n, value) in values.into_iter().enumerate() {
            if n < MAX_ENTRIES {
                push_span(&mut v4, &mut v6, &value);
            } else {
                left_out += 1;
            }
        }
        let set = AddrSet {
            v4: Runs::from_unsorted(v4),
            v6: Runs::from_unsorted(v6),
        };
        (set, left_out)
    }

    /// True when the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.0.is_empty() && self.v6.0.is_empty()
    }

    /// Merged intervals held (IPv4 and IPv6): the size that a query's binary search runs over.
    pub fn intervals(&self) -> usize {
        self.v4.0.len() + self.v6.0.len()
    }

    /// True when `value` and the set share an address: the value is inside the set, or
    /// covers part of it. O(log n), no allocation.
    pub fn intersects(&self, value: &Value) -> bool {
        self.intersects_span(span(value))
    }

    /// [`AddrSet::intersects`] for a value's [`span`], computed once for several sets.
    pub(crate) fn intersects_span(&self, (fam, first, last): (Fam, u128, u128)) -> bool {
        self.runs(fam).intersects(first, last)
    }

    /// True when every address of `value` is in the set.
    pub fn contains(&self, value: &Value) -> bool {
        let (fam, first, last) = span(value);
        self.runs(fam).covers(first, last)
    }

    /// The addresses in either set.
    pub fn union(&self, other: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.combine(&other.v4, Fam::V4, |a, b| a || b),
            v6: self.v6.combine(&other.v6, Fam::V6, |a, b| a || b),
        }
    }

    /// The addresses in exactly one of the two sets: what changed between an old and a new set.
    pub fn symmetric_difference(&self, other: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.combine(&other.v4, Fam::V4, |a, b| a != b),
            v6: self.v6.combine(&other.v6, Fam::V6, |a, b| a != b),
        }
    }

    /// The set as the fewest CIDR blocks, IPv4 first, ascending: `(network, prefix)`.
    ///
    /// Blocks are plain addresses and prefixes, not [`Value`]s: an IPv6 block inside
    /// `::ffff:0:0/96` (possible in a difference of two sets) stays IPv6 here.
    pub fn cidrs(&self) -> Cidrs<'_> {
        Cidrs {
            set: self,
            fam: Fam::V4,
            run: 0,
            next: None,
        }
    }

    /// Every canonical [`Value`] (host or network of any prefix) that shares an address with
    /// the set, sorted, when there are at most `max` of them; `None` otherwise.
    ///
    /// This is how a caller finds the cached decisions a change touches without scanning the
    /// cache: look each value up. One changed IPv4 host yields 33 values (itself and its 32
    /// supernets), one IPv6 host 129, a `/24` 535 (24 supernets; the
    /// block, its subnets and hosts, 511). A
    /// wide change returns `None`: scan the cache with [`AddrSet::intersects`] instead.
    /// The values never leave the changed block's family. `max` is capped at [`MAX_LOOKUPS`];
    /// allocates at most that many values.
    pub fn lookups(&self, max: usize) -> Option<Vec<Value>> {
        let max = max.min(MAX_LOOKUPS);
        // Supernets plus the block and everything inside it, per block (shared supernets
        // counted twice: a bound, not the exact count).
        let mut estimate: usize = 0;
        for (addr, prefix) in self.cidrs() {
            let width = if addr.is_ipv4() { 32 } else { 128 };
            let below = width - u32::from(prefix) + 1;
            if below >= usize::BITS {
                return None;
            }
            estimate = estimate
                .checked_add(usize::from(prefix))?
                .checked_add((1usize << below) - 1)?;
            if estimate > max {
                return None;
            }
        }
        let mut out = Vec::with_capacity(estimate);
        for (addr, prefix) in self.cidrs() {
            let v6 = addr.is_ipv6();
            let (fam, width) = if v6 { (Fam::V6, 128) } else { (Fam::V4, 32) };
            let base = match addr {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let mut push = |bits: u128, q: u8| {
                // Within the family's width by construction; a refusal is skipped, not a panic.
                if let Ok(value) = Value::network(fam.ip(bits), q) {
                    // Inside ::ffff:0:0/96 a network of prefix ≥ 96 canonicalises to IPv4,
                    // which an IPv6 change does not touch.
                    if value.is_ipv6() == v6 {
                        out.push(value);
                    }
                }
            };
            for q in 0..prefix {
                push(base, q);
            }
            for q in prefix..=width {
                let count = 1u128 << (q - prefix);
                let step_host = u32::from(width - q);
                for i in 0..count {
                    // i < 2^(q - prefix): the offset stays inside the block.
                    let offset = if step_host >= 128 { 0 } else { i << step_host };
                    push(base | offset, q);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    fn runs(&self, fam: Fam) -> &Runs {
        match fam {
            Fam::V4 => &self.v4,
            Fam::V6 => &self.v6,
        }
    }
}

fn push_span(v4: &mut Vec<(u128, u128)>, v6: &mut Vec<(u128, u128)>, value: &Value) {
    let (fam, first, last) = span(value);
    match fam {
        Fam::V4 => v4.push((first, last)),
        Fam::V6 => v6.push((first, last)),
    }
}

impl fmt::Display for AddrSet {
    /// The [`AddrSet::cidrs`] blocks, `, `-separated; a block of one address without its
    /// prefix. Empty for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (addr, prefix)) in self.cidrs().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let width = if addr.is_ipv4() { 32 } else { 128 };
            if prefix == width {
                write!(f, "{addr}")?;
            } else {
                write!(f, "{addr}/{prefix}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for AddrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddrSet[{self}]")
    }
}

// === impl Cidrs ===

/// The iterator of [`AddrSet::cidrs`].
#[derive(Debug, Clone)]
pub struct Cidrs<'a> {
    set: &'a AddrSet,
    fam: Fam,
    /// Index of the current interval in `fam`'s runs.
    run: usize,
    /// The next address to emit from the current interval, when it is part-way done.
    next: Option<u128>,
}

impl Iterator for Cidrs<'_> {
    type Item = (IpAddr, u8);

    fn next(&mut self) -> Option<(IpAddr, u8)> {
        loop {
            let runs = &self.set.runs(self.fam).0;
            let Some(&(first, last)) = runs.get(self.run) else {
                if self.fam == Fam::V4 {
                    self.fam = Fam::V6;
                    self.run = 0;
                    self.next = None;
                    continue;
                }
                return None;
            };
            let lo = self.next.unwrap_or(first);
            let width = self.fam.width();
            // The largest aligned block at `lo` that ends at or before `last`.
            let align = if lo == 0 {
                width
            } else {
                lo.trailing_zeros().min(width)
            };
            let room = last - lo;
            let fits = if room == u128::MAX {
                128
            } else {
                127 - (room + 1).leading_zeros()
            };
            let host = align.min(fits);
            let end = lo | low_mask(host);
            if end >= last {
                self.run += 1;
                self.next = None;
            } else {
                self.next = Some(end + 1);
            }
            // `host <= width <= 128`, so the prefix fits a u8.
            let prefix = u8::try_from(width - host).unwrap_or(0);
            return Some((self.fam.ip(lo), prefix));
        }
    }
}

// === parsing ===

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Not an IPv4/IPv6 address or `address/prefix` (host names are not resolved).
    NotAnAddress,
    /// The prefix is not a decimal number from 0 to the family's width.
    BadPrefix {
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// A network written with host bits set, e.g. `192.168.88.1/24`.
    HostBits {
        /// The network reading, `192.168.88.0/24`.
        network: Value,
        /// The host reading, `192.168.88.1`.
        host: Value,
    },
    /// A zone index, `fe80::1%ether1`: an allowlist holds addresses, not interfaces.
    Zone,
    /// A range `a-b`: write it as CIDR networks.
    Range,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotAnAddress => {
                f.write_str("not an IP address or CIDR network (host names are not resolved)")
            }
            Problem::BadPrefix { max } => write!(f, "prefix length must be 0 to {max}"),
            Problem::HostBits { network, host } => write!(
                f,
                "host bits set: write {network} for the network or {host} for the host"
            ),
            Problem::Zone => f.write_str("zone index (%...) not allowed"),
            Problem::Range => f.write_str("ranges a-b are not accepted: write CIDR networks"),
        }
    }
}

/// One refused allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// The entry as written, cut to 64 bytes.
    pub text: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Why an allowlist was refused: every bad entry, and the entry count if over [`MAX_ENTRIES`].
///
/// The message does not name the variable; the configuration reader prefixes it:
/// `ALLOWLIST: 2 bad entries: "10.0.0.1/8" (host bits set: write 10.0.0.0/8 for the network or
/// 10.0.0.1 for the host); "nas.lan" (not an IP address or CIDR network (host names are not
/// resolved))`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ParseError {
    /// The first [`MAX_LISTED`] bad entries, in input order.
    pub bad: Vec<BadEntry>,
    /// Bad entries after those (counted, not quoted).
    pub unlisted: usize,
    /// Entries in the input, good and bad.
    pub entries: usize,
}

impl ParseError {
    /// True when the input had more than [`MAX_ENTRIES`] entries.
    pub fn too_many(&self) -> bool {
        self.entries > MAX_ENTRIES
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bad = self.bad.len() + self.unlisted;
        if bad > 0 {
            let noun = if bad == 1 { "entry" } else { "entries" };
            write!(f, "{bad} bad {noun}: ")?;
            for (i, b) in self.bad.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{:?} ({})", b.text, b.problem)?;
            }
            if self.unlisted > 0 {
                write!(f, "; and {} more", self.unlisted)?;
            }
        }
        if self.too_many() {
            if bad > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} entries, at most {MAX_ENTRIES}", self.entries)?;
        }
        Ok(())
    }
}

fn truncated(s: &str) -> String {
    let mut end = s.len().min(ENTRY_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// One allowlist entry; see [`AddrSet::parse`] for the rules.
fn parse_entry(token: &str) -> Result<Value, Problem> {
    if token.contains('%') {
        return Err(Problem::Zone);
    }
    if token.contains('-') {
        return Err(Problem::Range);
    }
    let (addr_text, prefix_text) = match token.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (token, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| Problem::NotAnAddress)?;
    let (bits, width) = match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8),
        IpAddr::V6(a) => (u128::from(a), 128u8),
    };
    let bad_prefix = Problem::BadPrefix { max: width };
    let prefix = match prefix_text {
        None => width,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_prefix);
            }
            let n: u16 = p.parse().map_err(|_| bad_prefix.clone())?;
            if n > u16::from(width) {
                return Err(bad_prefix);
            }
            // n <= 128.
            u8::try_from(n).map_err(|_| bad_prefix.clone())?
        }
    };
    let network = Value::network(addr, prefix).map_err(|_| bad_prefix.clone())?;
    if bits & low_mask(u32::from(width - prefix)) != 0 {
        return Err(Problem::HostBits {
            network,
            host: Value::from_ip(addr),
        });
    }
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Value {
        Value::parse(s).unwrap()
    }

    fn set(s: &str) -> AddrSet {
        AddrSet::parse(s).unwrap()
    }

    fn problem(entry: &str) -> Problem {
        let e = AddrSet::parse(entry).unwrap_err();
        assert_eq!(e.bad.len(), 1, "{entry:?}: {e}");
        e.bad[0].problem.clone()
    }

    // === parsing ===

    #[test]
    fn parses_every_form_and_separator() {
        let s = set("10.0.0.0/8,192.0.2.7 2001:db8::/32\t2001:DB8:1::1\n::ffff:198.51.100.9 ,, ");
        assert_eq!(
            s.to_string(),
            "10.0.0.0/8, 192.0.2.7, 198.51.100.9, 2001:db8::/32"
        );
        // 2001:db8:1::1 is inside 2001:db8::/32 and merged away.
        assert!(s.intersects(&v("2001:db8:1::1")));
        assert_eq!(s.intervals(), 4);
    }

    #[test]
    fn empty_and_blank_text_is_the_empty_set() {
        for text in ["", " ", ",", " , ,\n"] {
            let s = set(text);
            assert!(s.is_empty(), "{text:?}");
            assert_eq!(s.to_string(), "");
            assert!(!s.intersects(&v("0.0.0.0/0")));
            assert!(!s.intersects(&v("::/0")));
        }
    }

    #[test]
    fn host_prefixes_and_zero_prefixes_are_accepted() {
        assert_eq!(set("192.0.2.7/32").to_string(), "192.0.2.7");
        assert_eq!(set("2001:db8::7/128").to_string(), "2001:db8::7");
        assert_eq!(set("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(set("::/0").to_string(), "::/0");
        assert_eq!(set("10.0.0.0/008").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        assert_eq!(set("::ffff:192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(set("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        assert_eq!(set("::FFFF:C000:0207").to_string(), "192.0.2.7");
        // The whole mapped block is all of IPv4.
        assert_eq!(set("::ffff:0:0/96").to_string(), "0.0.0.0/0");
        // A /95 reaches outside the mapped block: it stays IPv6.
        assert_eq!(set("::fffe:0:0/95").to_string(), "::fffe:0:0/95");
        let s = set("::fffe:0:0/95");
        assert!(!s.intersects(&v("192.0.2.7")), "IPv4 is not in an IPv6 set");
    }

    #[test]
    fn host_bits_are_refused_naming_both_readings() {
        assert_eq!(
            problem("192.168.88.1/24"),
            Problem::HostBits {
                network: v("192.168.88.0/24"),
                host: v("192.168.88.1"),
            }
        );
        let e = AddrSet::parse("192.168.88.1/24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 bad entry: \"192.168.88.1/24\" (host bits set: write 192.168.88.0/24 for the \
             network or 192.168.88.1 for the host)"
        );
        assert!(matches!(
            problem("2001:db8::1/64"),
            Problem::HostBits { .. }
        ));
        assert!(matches!(problem("0.0.0.1/0"), Problem::HostBits { .. }));
        assert_eq!(
            problem("::ffff:10.0.0.1/104"),
            Problem::HostBits {
                network: v("10.0.0.0/8"),
                host: v("10.0.0.1"),
            }
        );
    }

    #[test]
    fn refuses_every_bad_form_with_its_reason() {
        for bad in [
            "bob",
            "nas.lan",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.4:80",
            "[::1]",
            "/8",
            "FR",
            "AS1234",
            "::1::1",
        ] {
            assert_eq!(problem(bad), Problem::NotAnAddress, "{bad:?}");
        }
        for bad in [
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "1.2.3.4/8/8",
            "1.2.3.4/0x8",
        ] {
            assert_eq!(problem(bad), Problem::BadPrefix { max: 32 }, "{bad:?}");
        }
        for bad in ["::1/129", "::/1000", "::/ 8"] {
            // "::/ 8" splits at the space: "::/" is the bad entry, "8" another.
            let e = AddrSet::parse(bad).unwrap_err();
            assert!(
                e.bad
                    .iter()
                    .any(|b| b.problem == Problem::BadPrefix { max: 128 }),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(problem("fe80::1%ether1"), Problem::Zone);
        assert_eq!(problem("192.0.2.0-192.0.2.255"), Problem::Range);
        assert_eq!(problem("1.2.3.4/-1"), Problem::Range);
    }

    #[test]
    fn every_bad_entry_is_listed_in_input_order() {
        let e = AddrSet::parse("10.0.0.0/8, bob, 192.0.2.1/24 ::1/129, 198.51.100.7").unwrap_err();
        let texts: Vec<&str> = e.bad.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["bob", "192.0.2.1/24", "::1/129"]);
        assert_eq!(e.entries, 5);
        assert!(!e.too_many());
        assert_eq!(
            e.to_string(),
            "3 bad entries: \"bob\" (not an IP address or CIDR network (host names are not \
             resolved)); \"192.0.2.1/24\" (host bits set: write 192.0.2.0/24 for the network or \
             192.0.2.1 for the host); \"::1/129\" (prefix length must be 0 to 128)"
        );
    }

    #[test]
    fn quoted_entries_are_cut_and_escaped() {
        let long = "x".repeat(300);
        let e = AddrSet::parse(&format!("{long} \u{7}bell é")).unwrap_err();
        assert_eq!(e.bad[0].text.len(), 64);
        assert!(e.to_string().contains("\"\\u{7}bell\""), "{e}");
        assert!(e.to_string().contains("\"é\""), "{e}");
        // Cut on a character boundary.
        let e = AddrSet::parse(&"é".repeat(100)).unwrap_err();
        assert_eq!(e.bad[0].text.chars().count(), 32);
    }

    #[test]
    fn more_than_max_entries_is_refused_with_the_count() {
        let ok = vec!["192.0.2.1"; MAX_ENTRIES].join(",");
        assert_eq!(set(&ok).to_string(), "192.0.2.1");
        let many = vec!["192.0.2.1"; MAX_ENTRIES + 1].join(" ");
        let e = AddrSet::parse(&many).unwrap_err();
        assert!(e.too_many());
        assert!(e.bad.is_empty());
        assert_eq!(e.to_string(), "4097 entries, at most 4096");
        // Both problems at once.
        let e = AddrSet::parse(&format!("{many} bob")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 bad entry: \"bob\" (not an IP address or CIDR network (host names are not \
             resolved)); 4098 entries, at most 4096"
        );
    }

    #[test]
    fn bad_entries_past_the_listing_bound_are_counted() {
        let text = vec!["bob"; MAX_LISTED + 10].join(",");
        let e = AddrSet::parse(&text).unwrap_err();
        assert_eq!(e.bad.len(), MAX_LISTED);
        assert_eq!(e.unlisted, 10);
        assert!(e.to_string().starts_with("74 bad entries: \"bob\""));
        assert!(e.to_string().ends_with("; and 10 more"));
    }

    #[test]
    fn from_values_keeps_the_first_max_entries() {
        let values = (0..MAX_ENTRIES as u32 + 3).map(|i| Value::from_ip(Ipv4Addr::from(i).into()));
        let (s, left_out) = AddrSet::from_values(values);
        assert_eq!(left_out, 3);
        assert_eq!(s.to_string(), "0.0.0.0/20");
        assert!(!s.intersects(&v("0.0.16.0")));
    }

    // === queries at the edges ===

    #[test]
    fn inside_and_covering_both_intersect() {
        let s = set("10.1.0.0/16, 192.0.2.7");
        assert!(s.intersects(&v("10.1.2.3")), "host inside a network");
        assert!(s.intersects(&v("10.1.2.0/24")), "network inside a network");
        assert!(s.intersects(&v("10.0.0.0/8")), "network covering a network");
        assert!(s.intersects(&v("192.0.2.0/24")), "network covering a host");
        assert!(s.intersects(&v("192.0.2.7")), "the host itself");
        assert!(!s.intersects(&v("192.0.2.6")));
        assert!(!s.intersects(&v("192.0.2.8")));
        assert!(!s.intersects(&v("10.2.0.0/16")));
        assert!(!s.intersects(&v("10.0.0.0/16")), "adjacent below");
        assert!(!s.intersects(&v("10.2.0.0/15")), "adjacent above");
        assert!(s.contains(&v("10.1.2.0/24")));
        assert!(!s.contains(&v("10.0.0.0/8")));
        assert!(!s.contains(&v("192.0.2.0/24")));
    }

    #[test]
    fn slash_zero_and_full_width_edges() {
        let all4 = set("0.0.0.0/0");
        for x in ["0.0.0.0", "255.255.255.255", "0.0.0.0/0", "128.0.0.0/1"] {
            assert!(all4.intersects(&v(x)), "{x}");
            assert!(all4.contains(&v(x)), "{x}");
        }
        assert!(!all4.intersects(&v("::")), "IPv6 is a different family");
        let all6 = set("::/0");
        for x in [
            "::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::/0",
            "8000::/1",
        ] {
            assert!(all6.intersects(&v(x)), "{x}");
        }
        assert!(!all6.intersects(&v("0.0.0.0")));
        let top = set("255.255.255.255, ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert!(top.intersects(&v("255.255.255.254/31")));
        assert!(!top.intersects(&v("255.255.255.254")));
        assert!(top.intersects(&v("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127")));
        assert!(top.intersects(&v("0.0.0.0/0")));
        let bottom = set("0.0.0.0, ::");
        assert!(bottom.intersects(&v("0.0.0.0/31")));
        assert!(!bottom.intersects(&v("0.0.0.1")));
        assert!(bottom.intersects(&v("::/127")));
        assert!(!bottom.intersects(&v("::1")));
    }

    #[test]
    fn adjacent_entries_merge_into_one_interval() {
        let s = set("10.0.0.0/9 10.128.0.0/9");
        assert_eq!(s, set("10.0.0.0/8"));
        assert_eq!(s.intervals(), 1);
        assert_eq!(s.to_string(), "10.0.0.0/8");
        let s = set("192.0.2.0/25, 192.0.2.128/26, 192.0.2.192/26, 192.0.3.0");
        assert_eq!(s.to_string(), "192.0.2.0/24, 192.0.3.0");
        assert_eq!(s.intervals(), 1);
        let s = set("2001:db8::/33 2001:db8:8000::/33");
        assert_eq!(s.to_string(), "2001:db8::/32");
        // Not adjacent: a gap of one address stays a gap.
        assert_eq!(set("192.0.2.0, 192.0.2.2").intervals(), 2);
    }

    #[test]
    fn cidrs_decompose_odd_intervals_minimally() {
        let s = set("192.0.2.1 192.0.2.2/31 192.0.2.4/30 192.0.2.8");
        assert_eq!(
            s.to_string(),
            "192.0.2.1, 192.0.2.2/31, 192.0.2.4/30, 192.0.2.8"
        );
        let all = set("0.0.0.0/1 128.0.0.0/1 ::/1 8000::/1");
        assert_eq!(all.to_string(), "0.0.0.0/0, ::/0");
    }

    #[test]
    fn symmetric_difference_is_what_changed() {
        let old = set("192.0.2.7, 198.51.100.0/24, 2001:db8::1");
        let new = set("192.0.2.7, 198.51.100.0/25, 2001:db8::2");
        let d = old.symmetric_difference(&new);
        assert_eq!(d.to_string(), "198.51.100.128/25, 2001:db8::1, 2001:db8::2");
        assert!(old.symmetric_difference(&old).is_empty());
        assert_eq!(
            old.union(&new).to_string(),
            "192.0.2.7, 198.51.100.0/24, 2001:db8::1, 2001:db8::2"
        );
    }

    #[test]
    fn differences_in_the_mapped_block_stay_ipv6() {
        // ::/64 less one host just below ::ffff:0:0 leaves blocks starting at ::ffff:0:0.
        let a = set("::/64");
        let b = set("::/64, ::fffe:ffff:ffff");
        let d = a.symmetric_difference(&b);
        assert!(d.is_empty(), "the host was already inside");
        let c = set("::fffe:ffff:ffff");
        let rest = a.symmetric_difference(&c);
        assert!(rest.cidrs().all(|(addr, _)| addr.is_ipv6()));
        assert!(rest.to_string().contains("::ffff:0.0.0.0/96"), "{rest}");
        // One IPv6 address inside the mapped block (built directly: canonical values never
        // leave such a small piece): its lookups are its IPv6 supernets, never IPv4 values.
        let mapped = u128::from(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let odd = AddrSet {
            v4: Runs::default(),
            v6: Runs(vec![(mapped, mapped)]),
        };
        assert_eq!(odd.to_string(), "::ffff:192.0.2.7");
        let looks = odd.lookups(200).unwrap();
        assert_eq!(looks.len(), 96);
        assert!(looks.iter().all(Value::is_ipv6));
        assert!(!odd.intersects(&v("192.0.2.7")));
    }

    #[test]
    fn lookups_enumerate_supernets_and_subnets() {
        let one = set("192.0.2.7").lookups(100).unwrap();
        assert_eq!(one.len(), 33);
        assert!(one.contains(&v("192.0.2.7")));
        assert!(one.contains(&v("0.0.0.0/0")));
        assert!(one.contains(&v("192.0.2.0/24")));
        let six = set("2001:db8::7").lookups(200).unwrap();
        assert_eq!(six.len(), 129);
        let net = set("192.0.2.0/24").lookups(1000).unwrap();
        assert_eq!(net.len(), 24 + 511);
        assert!(net.contains(&v("192.0.2.128/25")));
        assert!(net.contains(&v("192.0.2.255")));
        assert!(net.contains(&v("192.0.0.0/22")));
        assert_eq!(set("192.0.2.0/24").lookups(534), None);
        assert_eq!(set("2001:db8::/64").lookups(1_000_000), None);
        assert_eq!(set("0.0.0.0/0").lookups(usize::MAX), None);
        assert_eq!(
            set("10.0.0.0/16").lookups(usize::MAX),
            None,
            "past MAX_LOOKUPS"
        );
        assert_eq!(
            set("10.0.0.0/18").lookups(usize::MAX).unwrap().len(),
            18 + 32_767
        );
        assert_eq!(AddrSet::new().lookups(0), Some(Vec::new()));
        // Two hosts share their supernets: listed once.
        let two = set("192.0.2.6, 192.0.2.7").lookups(100).unwrap();
        assert_eq!(two.len(), 31 + 1 + 2);
    }

    // === properties against a naive model ===

    /// A (network bits, prefix, is IPv6) triple, biased to small nearby blocks so that
    /// overlaps and adjacency are common.
    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0u32..64, 24u8..=32).prop_map(|(x, p)| {
                Value::network(Ipv4Addr::from(0xC000_0200 | x).into(), p).unwrap()
            }),
            (any::<u32>(), 0u8..=32)
                .prop_map(|(x, p)| Value::network(Ipv4Addr::from(x).into(), p).unwrap()),
            (0u128..64, 120u8..=128).prop_map(|(x, p)| {
                let base: u128 = 0x2001_0db8 << 96;
                Value::network(Ipv6Addr::from(base | x).into(), p).unwrap()
            }),
            (any::<u128>(), 0u8..=128).prop_map(|(x, p)| Value::network(
                Ipv6Addr::from(x).into(),
                p
            )
            .unwrap()),
            (any::<u32>(), 96u8..=128).prop_map(|(x, p)| {
                Value::network(Ipv4Addr::from(x).to_ipv6_mapped().into(), p).unwrap()
            }),
        ]
    }

    fn naive_intersects(entries: &[Value], q: &Value) -> bool {
        let (qf, qa, qb) = span(q);
        entries.iter().any(|e| {
            let (f, a, b) = span(e);
            f == qf && a <= qb && qa <= b
        })
    }

    fn naive_member(entries: &[Value], fam: Fam, x: u128) -> bool {
        entries.iter().any(|e| {
            let (f, a, b) = span(e);
            f == fam && a <= x && x <= b
        })
    }

    proptest! {
        #[test]
        fn intersects_matches_a_linear_scan(
            entries in prop::collection::vec(arb_value(), 0..40),
            queries in prop::collection::vec(arb_value(), 1..40),
        ) {
            let (s, left_out) = AddrSet::from_values(entries.iter().copied());
            prop_assert_eq!(left_out, 0);
            for q in &queries {
                prop_assert_eq!(s.intersects(q), naive_intersects(&entries, q), "{:?}", q);
            }
            for e in &entries {
                prop_assert!(s.intersects(e));
                prop_assert!(s.contains(e));
            }
        }

        #[test]
        fn parse_of_display_is_the_same_set(entries in prop::collection::vec(arb_value(), 0..40)) {
            let (s, _) = AddrSet::from_values(entries);
            let again = AddrSet::parse(&s.to_string()).unwrap();
            prop_assert_eq!(&again, &s);
            // Stored intervals are merged: no block list is shorter than the intervals.
            prop_assert!(s.cidrs().count() >= s.intervals());
        }

        #[test]
        fn set_algebra_matches_membership(
            a in prop::collection::vec(arb_value(), 0..20),
            b in prop::collection::vec(arb_value(), 0..20),
            probes in prop::collection::vec(arb_value(), 1..30),
        ) {
            let (sa, _) = AddrSet::from_values(a.iter().copied());
            let (sb, _) = AddrSet::from_values(b.iter().copied());
            let union = sa.union(&sb);
            let diff = sa.symmetric_difference(&sb);
            for p in &probes {
                // Probe the first and last address of each value.
                let (fam, first, last) = span(p);
                for x in [first, last] {
                    let (ia, ib) = (naive_member(&a, fam, x), naive_member(&b, fam, x));
                    let host = Value::from_ip(fam.ip(x));
                    prop_assert_eq!(union.intersects(&host), ia || ib);
                    prop_assert_eq!(diff.intersects(&host), ia != ib, "{:?}", host);
                }
                // A value whose verdict differs between the sets meets the difference.
                if sa.intersects(p) != sb.intersects(p) {
                    prop_assert!(diff.intersects(p));
                }
            }
            prop_assert_eq!(union.union(&sa), union.clone());
            prop_assert!(diff.symmetric_difference(&diff).is_empty());
        }

        #[test]
        fn lookups_find_exactly_the_intersecting_values(
            entries in prop::collection::vec(arb_value(), 0..4),
            probes in prop::collection::vec(arb_value(), 1..40),
        ) {
            let (s, _) = AddrSet::from_values(entries);
            if let Some(looks) = s.lookups(5000) {
                for l in &looks {
                    prop_assert!(s.intersects(l), "{:?}", l);
                }
                for p in &probes {
                    if s.intersects(p) {
                        prop_assert!(looks.binary_search(p).is_ok(), "{:?} missing", p);
                    }
                }
            }
        }

        #[test]
        fn parse_never_panics(text in "[0-9a-fA-F:./%, -]{0,80}") {
            let _ = AddrSet::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_any_text(text in "\\PC{0,80}") {
            let _ = AddrSet::parse(&text);
        }
    }
}
