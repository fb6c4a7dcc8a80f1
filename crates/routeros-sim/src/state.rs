//! The router state the menus act on: address lists, firewall rules, scripts and counters.
//!
//! Expiry is lazy: every access first calls [`State::purge`] with the sim clock, which pops
//! expired entries from an ordered expiry index (O(log n) per entry), so expired entries are gone
//! from `print` and from inspection without a background sweeper.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::config::Version;
use crate::memlog::LogBuffer;
use crate::query::Props;
use crate::sessions::ActiveSessions;
use crate::timefmt;

/// Address family: which menu tree (`/ip` or `/ipv6`). The two are separate namespaces even for
/// lists with the same name (`docs/reference/routeros-api.md` §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `/ip/...`
    V4,
    /// `/ipv6/...`
    V6,
}

impl Family {
    pub(crate) fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

/// Firewall table holding rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `/ip/firewall/filter`
    Filter,
    /// `/ip/firewall/raw`
    Raw,
}

/// An address-list entry as the inspection API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `.id`, e.g. `*1A`.
    pub id: String,
    /// List name.
    pub list: String,
    /// Normalised address as printed.
    pub address: String,
    /// Time left before the entry vanishes; `None` for entries without a timeout.
    pub timeout_remaining: Option<Duration>,
    /// `D` flag: RAM only, gone after a reboot.
    pub dynamic: bool,
    /// Comment, if any.
    pub comment: Option<String>,
    /// `X` flag.
    pub disabled: bool,
    /// `creation-time` as printed (`2026-10-01 08:50:12`).
    pub creation_time: String,
}

/// An entry to seed with [`Sim::insert_entry`](crate::Sim::insert_entry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEntry {
    /// List name.
    pub list: String,
    /// Address text; normalised as `add` does.
    pub address: String,
    /// Timeout; makes the entry dynamic.
    pub timeout: Option<Duration>,
    /// Dynamic without timeout (`dynamic=yes`).
    pub dynamic: bool,
    /// Comment.
    pub comment: Option<String>,
    /// Disabled flag.
    pub disabled: bool,
}

impl NewEntry {
    /// A static entry (what a user adds by hand).
    pub fn new(list: &str, address: &str) -> Self {
        Self {
            list: list.to_owned(),
            address: address.to_owned(),
            ..Self::default()
        }
    }

    /// Sets a timeout (the entry becomes dynamic).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets a comment.
    pub fn with_comment(mut self, comment: &str) -> Self {
        self.comment = Some(comment.to_owned());
        self
    }
}

/// A firewall rule as the inspection API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `.id`.
    pub id: String,
    /// Family of the table.
    pub family: Family,
    /// Table.
    pub table: Table,
    /// Properties as given (`chain`, `action`, `src-address-list`, `comment`, ...), in order.
    pub attrs: Vec<(String, String)>,
    /// Byte counter.
    pub bytes: u64,
    /// Packet counter.
    pub packets: u64,
    /// `X` flag.
    pub disabled: bool,
}

/// Command counters ([`Sim::stats`](crate::Sim::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands received after parsing, by path (`/ip/firewall/address-list/add`), including
    /// refused ones.
    pub commands: BTreeMap<String, u64>,
    /// Write commands executed (add, set, remove, move, ...), successful or trapped.
    pub write_commands: u64,
    /// Successful logins.
    pub logins: u64,
    /// Failed logins.
    pub failed_logins: u64,
    /// Accepted connections.
    pub connections: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredEntry {
    pub id: u64,
    pub list: String,
    pub address: String,
    pub expires_at: Option<Duration>,
    pub dynamic: bool,
    pub comment: Option<String>,
    pub disabled: bool,
    pub created_at: Duration,
    /// `address` is a DNS name: the entry has resolved children (see [`State::sync_dns`]).
    pub dns: bool,
    /// Set on a child: the DNS-name entry it was resolved from.
    pub parent: Option<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredRule {
    pub id: u64,
    pub family: Family,
    pub table: Table,
    pub attrs: Vec<(String, String)>,
    pub bytes: u64,
    pub packets: u64,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub id: u64,
    pub name: String,
    pub source: String,
}

/// Change counters, one per kind of table: streams (`print =follow=`, `listen`) wake when the
/// counter of their table moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Generations {
    /// Address lists (both families).
    pub lists: u64,
    /// The memory log.
    pub log: u64,
    /// `/user/active`.
    pub active: u64,
    /// Firewall rules (all tables).
    pub rules: u64,
    /// `/system/script`.
    pub scripts: u64,
}

/// All mutable router state, behind the sim's mutex.
#[derive(Debug)]
pub(crate) struct State {
    next_id: u64,
    /// Sim time of the last (re)boot: uptime is `now - boot_at`.
    pub boot_at: Duration,
    entries: [BTreeMap<u64, StoredEntry>; 2],
    /// (list, address) → id of the *enabled* entry, for the duplicate check (§9). A disabled
    /// entry does not block an enabled one with the same address: a recorded print lists
    /// `13 X list=azeazeaze address=192.168.3.0/24` and `14 D list=azeazeaze
    /// address=192.168.3.0/24 … timeout=4m52s`, the dynamic one added 19 s after the disabled
    /// one (networktocode/ntc-templates `tests/mikrotik_routeros/ip_firewall_address-list_print_terse`).
    /// Whether a *disabled* add may duplicate an enabled entry is **unverified** (refused here).
    index: [HashMap<(String, String), u64>; 2],
    /// DNS-name entry id → its resolved children, per family.
    children: [BTreeMap<u64, Vec<u64>>; 2],
    /// The resolver the tests control: name → addresses ([`crate::Sim::set_dns`]).
    pub dns: BTreeMap<String, Vec<IpAddr>>,
    /// (expires_at, family index, id).
    expiry: BTreeSet<(Duration, usize, u64)>,
    pub rules: Vec<StoredRule>,
    pub scripts: Vec<Script>,
    pub persistent_writes: u64,
    pub stats: Stats,
    /// Bumped on every change (wakes streams).
    pub gens: Generations,
    /// The memory log (`/log`).
    pub log: LogBuffer,
    /// Bumped by every reboot: a connection of an earlier boot logs no logout.
    pub boot_epoch: u64,
    /// `/user/active`.
    pub active: ActiveSessions,
    /// `/system/resource` `total-memory` and `free-memory`, bytes.
    pub memory: Memory,
}

/// RAM as `/system/resource` prints it: decimal bytes (MikroTik manual, "REST API" example:
/// `"free-memory":"1503133696"`, `"total-memory":"2046820352"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    pub total: u64,
    pub free: u64,
}

impl Default for Memory {
    /// 1 GiB with 768 MiB free (an RB5009, the default board).
    fn default() -> Self {
        Self {
            total: 1_073_741_824,
            free: 805_306_368,
        }
    }
}

impl State {
    pub(crate) fn new(log_lines: usize) -> Self {
        Self {
            next_id: 1,
            boot_at: Duration::ZERO,
            entries: [BTreeMap::new(), BTreeMap::new()],
            index: [HashMap::new(), HashMap::new()],
            children: [BTreeMap::new(), BTreeMap::new()],
            dns: BTreeMap::new(),
            expiry: BTreeSet::new(),
            rules: Vec::new(),
            scripts: Vec::new(),
            persistent_writes: 0,
            stats: Stats::default(),
            gens: Generations::default(),
            log: LogBuffer::new(log_lines),
            boot_epoch: 0,
            active: ActiveSessions::default(),
            memory: Memory::default(),
        }
    }

    /// A fresh `.id`: unique, increasing, never reused (also across reboots; §7 calls real reuse
    /// **unverified**).
    pub(crate) fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Drops every entry whose timeout has run out at sim time `now`.
    pub(crate) fn purge(&mut self, now: Duration) {
        while let Some(&(at, fam, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(e) = self.entries[fam].get(&id)
                && e.expires_at == Some(at)
            {
                self.remove_entry_at(fam, id);
            }
        }
    }

    /// Sim time at which the next address-list entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Duration> {
        self.expiry.first().map(|(at, _, _)| *at)
    }

    pub(crate) fn entries(&self, family: Family) -> impl Iterator<Item = &StoredEntry> {
        self.entries[family.index()].values()
    }

    pub(crate) fn entry(&self, family: Family, id: u64) -> Option<&StoredEntry> {
        self.entries[family.index()].get(&id)
    }

    pub(crate) fn find(&self, family: Family, list: &str, address: &str) -> Option<u64> {
        self.index[family.index()]
            .get(&(list.to_owned(), address.to_owned()))
            .copied()
    }

    /// Inserts a validated, normalised entry; the caller checked for duplicates.
    pub(crate) fn insert_entry(&mut self, family: Family, entry: StoredEntry) {
        let fam = family.index();
        if !entry.disabled {
            self.index[fam].insert((entry.list.clone(), entry.address.clone()), entry.id);
        }
        if let Some(at) = entry.expires_at {
            self.expiry.insert((at, fam, entry.id));
        }
        if let Some(parent) = entry.parent {
            self.children[fam].entry(parent).or_default().push(entry.id);
        }
        self.entries[fam].insert(entry.id, entry);
        self.gens.lists += 1;
    }

    pub(crate) fn remove_entry(&mut self, family: Family, id: u64) -> Option<StoredEntry> {
        self.remove_entry_at(family.index(), id)
    }

    /// Removes an entry and, for a DNS-name entry, its resolved children.
    fn remove_entry_at(&mut self, fam: usize, id: u64) -> Option<StoredEntry> {
        let e = self.remove_one(fam, id)?;
        for child in self.children[fam].remove(&id).unwrap_or_default() {
            self.remove_one(fam, child);
        }
        Some(e)
    }

    fn remove_one(&mut self, fam: usize, id: u64) -> Option<StoredEntry> {
        let e = self.entries[fam].remove(&id)?;
        let key = (e.list.clone(), e.address.clone());
        if self.index[fam].get(&key) == Some(&id) {
            self.index[fam].remove(&key);
        }
        if let Some(at) = e.expires_at {
            self.expiry.remove(&(at, fam, id));
        }
        if let Some(parent) = e.parent
            && let Some(kids) = self.children[fam].get_mut(&parent)
        {
            kids.retain(|k| *k != id);
        }
        self.gens.lists += 1;
        Some(e)
    }

    /// Replaces an entry (after `set`), keeping the indexes and its children right.
    pub(crate) fn replace_entry(&mut self, family: Family, entry: StoredEntry, now: Duration) {
        let fam = family.index();
        let kids = self.children[fam].remove(&entry.id).unwrap_or_default();
        for child in kids {
            self.remove_one(fam, child);
        }
        self.remove_one(fam, entry.id);
        let id = entry.id;
        self.insert_entry(family, entry);
        self.sync_dns(family, id, now);
    }

    /// Brings the resolved children of DNS-name entry `id` in line with the resolver: one
    /// dynamic child per address of the family, in the same list, with the name as its comment
    /// (MikroTik manual, Address-lists, as cited for this project: a DNS name in `address` is
    /// resolved and the router adds dynamic entries for the addresses it returns, commented with
    /// the name; `docs/reference/routeros-sim-calibration.md` §3). Children follow the parent's
    /// `disabled` and go with it; they have no timeout of their own (a router follows the DNS
    /// TTL). An address the list already holds gets no child, and a disabled parent's children
    /// are disabled: both **unverified**. A name the resolver does not know gets none.
    pub(crate) fn sync_dns(&mut self, family: Family, id: u64, now: Duration) {
        let fam = family.index();
        let Some(parent) = self.entries[fam].get(&id).filter(|e| e.dns).cloned() else {
            return;
        };
        let wanted: Vec<String> = self
            .dns
            .get(&parent.address)
            .into_iter()
            .flatten()
            .filter_map(|ip| match (family, ip) {
                (Family::V4, IpAddr::V4(a)) => Some(a.to_string()),
                (Family::V6, IpAddr::V6(a)) => Some(format!("{a}/128")),
                _ => None,
            })
            .collect();
        let kids = self.children[fam].get(&id).cloned().unwrap_or_default();
        for child in kids {
            let stale = self.entries[fam]
                .get(&child)
                .is_none_or(|c| !wanted.contains(&c.address));
            if stale {
                self.remove_one(fam, child);
            }
        }
        for address in wanted {
            let have = self.children[fam].get(&id).is_some_and(|kids| {
                kids.iter().any(|k| {
                    self.entries[fam]
                        .get(k)
                        .is_some_and(|c| c.address == address)
                })
            });
            if have || self.find(family, &parent.list, &address).is_some() {
                continue;
            }
            let child = StoredEntry {
                id: self.alloc_id(),
                list: parent.list.clone(),
                address,
                expires_at: None,
                dynamic: true,
                comment: Some(parent.address.clone()),
                disabled: parent.disabled,
                created_at: now,
                dns: false,
                parent: Some(id),
            };
            self.insert_entry(family, child);
        }
    }

    /// Re-resolves every DNS-name entry that uses `name` (after the resolver changed).
    pub(crate) fn resync_name(&mut self, name: &str, now: Duration) {
        for family in [Family::V4, Family::V6] {
            let ids: Vec<u64> = self
                .entries(family)
                .filter(|e| e.dns && e.address == name)
                .map(|e| e.id)
                .collect();
            for id in ids {
                self.sync_dns(family, id, now);
            }
        }
    }

    /// Router reboot: dynamic entries vanish, counters reset, ids keep counting.
    pub(crate) fn reboot(&mut self, now: Duration) {
        for fam in [Family::V4, Family::V6] {
            let dynamic: Vec<u64> = self
                .entries(fam)
                .filter(|e| e.dynamic)
                .map(|e| e.id)
                .collect();
            for id in dynamic {
                self.remove_entry(fam, id);
            }
            // Static DNS-name entries survive and resolve again.
            let names: Vec<u64> = self.entries(fam).filter(|e| e.dns).map(|e| e.id).collect();
            for id in names {
                self.sync_dns(fam, id, now);
            }
        }
        for r in &mut self.rules {
            r.bytes = 0;
            r.packets = 0;
        }
        // The memory log is RAM only (MikroTik manual, "Log").
        self.log.clear();
        self.gens.log += 1;
        // A reboot ends every session.
        self.active.clear();
        self.gens.active += 1;
        self.boot_epoch += 1;
        self.boot_at = now;
    }
}

/// `*1A`-style `.id` text.
pub fn format_id(id: u64) -> String {
    format!("*{id:X}")
}

/// Parses `*1A` into 0x1A. Bare print numbers are not supported (§10: use `.id`s).
pub fn parse_id(text: &str) -> Option<u64> {
    let hex = text.strip_prefix('*')?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Print properties of an address-list entry, in the router's order. `creation-time` is in the
/// version's date style ([`timefmt::DateStyle`]).
pub(crate) fn entry_props(
    e: &StoredEntry,
    now: Duration,
    version: Version,
    wall: impl Fn(Duration) -> std::time::SystemTime,
) -> Props {
    let v7 = version.v7_durations();
    let mut p: Props = vec![
        (".id".into(), format_id(e.id)),
        ("list".into(), e.list.clone()),
        ("address".into(), e.address.clone()),
        (
            "creation-time".into(),
            timefmt::format_date_time(wall(e.created_at), version.date_style()),
        ),
    ];
    if let Some(at) = e.expires_at {
        let left = at.saturating_sub(now);
        let text = if v7 {
            timefmt::format_v7(left)
        } else {
            timefmt::format_v6(left)
        };
        p.push(("timeout".into(), text));
    }
    p.push(("dynamic".into(), bool_text(e.dynamic).into()));
    p.push(("disabled".into(), bool_text(e.disabled).into()));
    if let Some(c) = &e.comment {
        p.push(("comment".into(), c.clone()));
    }
    p
}

/// Print properties of a firewall rule.
pub(crate) fn rule_props(r: &StoredRule) -> Props {
    let mut p: Props = vec![(".id".into(), format_id(r.id))];
    p.extend(r.attrs.iter().cloned());
    p.push(("bytes".into(), r.bytes.to_string()));
    p.push(("packets".into(), r.packets.to_string()));
    p.push(("invalid".into(), "false".into()));
    p.push(("dynamic".into(), "false".into()));
    p.push(("disabled".into(), bool_text(r.disabled).into()));
    p
}

/// v7 prints booleans as `true`/`false` (§7).
pub(crate) fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Accepts `yes`/`no`/`true`/`false` (§7: older versions used `yes`/`no`).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_format_as_upper_hex_with_star() {
        assert_eq!(format_id(0x1A), "*1A");
        assert_eq!(format_id(1), "*1");
        assert_eq!(parse_id("*1A"), Some(0x1A));
        assert_eq!(parse_id("*1a"), Some(0x1A));
        assert_eq!(parse_id("1A"), None);
        assert_eq!(parse_id("*"), None);
        assert_eq!(parse_id("*zz"), None);
    }

    fn stored(id: u64, expires: Option<u64>) -> StoredEntry {
        StoredEntry {
            id,
            list: "l".into(),
            address: format!("192.0.2.{id}"),
            expires_at: expires.map(Duration::from_secs),
            dynamic: expires.is_some(),
            comment: None,
            disabled: false,
            created_at: Duration::ZERO,
            dns: false,
            parent: None,
        }
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let mut s = State::new(1000);
        s.insert_entry(Family::V4, stored(1, Some(10)));
        s.insert_entry(Family::V4, stored(2, Some(20)));
        s.insert_entry(Family::V4, stored(3, None));
        s.purge(Duration::from_secs(10));
        let ids: Vec<u64> = s.entries(Family::V4).map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(s.find(Family::V4, "l", "192.0.2.1"), None);
        s.reboot(Duration::from_secs(11));
        let ids: Vec<u64> = s.entries(Family::V4).map(|e| e.id).collect();
        assert_eq!(ids, [3]);
    }
}
