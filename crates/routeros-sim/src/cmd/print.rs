//! `print` (alias `getall`, §2) on any menu: queries, `.proplist`, `count-only`, `!empty` (§6).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use routeros_proto::{Query, Request, Sentence, category};

use super::{PRINT_PARAMS, Replier, Trap, check_params};
use crate::query::{self, Props};
use crate::shared::Shared;
use crate::sim::HostilePrint;
use crate::state::{Family, Generations, Table, format_id};
use crate::timefmt;

/// Parsed `print` options.
#[derive(Debug, Clone)]
pub(crate) struct PrintOpts {
    pub queries: Vec<Query>,
    pub proplist: Option<Vec<String>>,
    pub count_only: bool,
    pub follow: bool,
    pub follow_only: bool,
}

impl PrintOpts {
    pub(crate) fn parse(req: &Request) -> Result<Self, Trap> {
        Self::parse_with(req, PRINT_PARAMS)
    }

    /// Like [`PrintOpts::parse`], with a menu's own list of accepted parameters.
    pub(crate) fn parse_with(req: &Request, allowed: &[&str]) -> Result<Self, Trap> {
        check_params(req, allowed)?;
        query::validate(&req.queries)
            .map_err(|e| Trap::new(Some(category::ARGUMENT_VALUE), e.to_string()))?;
        let proplist = req.attributes.get(".proplist").map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        });
        Ok(Self {
            queries: req.queries.clone(),
            proplist,
            count_only: req.attributes.get("count-only").is_some(),
            follow: req.attributes.get("follow").is_some(),
            follow_only: req.attributes.get("follow-only").is_some(),
        })
    }

    pub(crate) fn matches(&self, item: &Props) -> bool {
        // Validated in `parse`: evaluation cannot fail on the operator words.
        query::matches(&self.queries, item).unwrap_or(false)
    }

    /// Applies `.proplist`: only the listed properties, missing ones absent (§6).
    pub(crate) fn project(&self, item: &Props) -> Props {
        match &self.proplist {
            None => item.clone(),
            Some(names) => item
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == k))
                .cloned()
                .collect(),
        }
    }
}

/// A one-shot print of `items`: `!re` per match, then `!done`; `!empty` first when nothing
/// matched on 7.18+ (§3); `count-only` → `!done =ret=N` (§6).
pub(crate) fn one_shot(
    shared: &Shared,
    opts: &PrintOpts,
    items: &[Props],
    r: &Replier,
) -> Vec<Sentence> {
    let rows: Vec<&Props> = items.iter().filter(|i| opts.matches(i)).collect();
    if opts.count_only {
        return vec![r.done_ret(&rows.len().to_string())];
    }
    let mut out: Vec<Sentence> = rows.iter().map(|i| r.re(&opts.project(i))).collect();
    if out.is_empty() && shared.version.has_empty() {
        out.push(r.empty());
    }
    out.push(r.done());
    out
}

/// A hostile address-list print in progress ([`crate::Faults::hostile_print`]): it makes up
/// the rows that follow the real ones.
#[derive(Debug)]
pub(crate) struct Hostile {
    family: Family,
    list: String,
    opts: PrintOpts,
    pub replier: Replier,
    pub fault: HostilePrint,
}

/// First `.id` of the invented rows: far above the ids a test's entries get.
const HOSTILE_FIRST_ID: u64 = 0x1000_0000;
/// Invented addresses wrap after this many rows (the size of `100.64.0.0/10`).
const HOSTILE_ADDRESSES: u64 = 1 << 22;

impl Hostile {
    pub(crate) fn new(
        family: Family,
        opts: PrintOpts,
        replier: Replier,
        fault: HostilePrint,
    ) -> Self {
        let list = opts
            .queries
            .iter()
            .find_map(|q| match q {
                Query::Eq(name, value) if name == "list" => {
                    Some(String::from_utf8_lossy(value).into_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| "hostile".to_owned());
        Hostile {
            family,
            list,
            opts,
            replier,
            fault,
        }
    }

    /// The next `n` invented rows, as `!re` sentences.
    pub(crate) fn rows(&self, shared: &Shared, n: usize) -> Vec<Sentence> {
        let version = shared.version;
        let now = shared.clock.now();
        let created = timefmt::format_date_time(shared.clock.wall(now), version.date_style());
        let day = Duration::from_secs(86_400);
        let timeout = if version.v7_durations() {
            timefmt::format_v7(day)
        } else {
            timefmt::format_v6(day)
        };
        let first = shared
            .hostile
            .next_row
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let out: Vec<Sentence> = (first..first + n as u64)
            .map(|k| {
                let offset = k % HOSTILE_ADDRESSES;
                let address = match self.family {
                    // 100.64.0.0/10 (RFC 6598): never one of a test's ban values.
                    Family::V4 => Ipv4Addr::from(0x6440_0000 + offset as u32).to_string(),
                    // 2001:db8:ffff::/48, printed with its prefix as RouterOS prints an IPv6 entry.
                    Family::V6 => {
                        let base: u128 = 0x2001_0db8_ffff_u128 << 80;
                        format!("{}/128", Ipv6Addr::from(base + u128::from(offset)))
                    }
                };
                let props: Props = vec![
                    (".id".into(), format_id(HOSTILE_FIRST_ID + k)),
                    ("list".into(), self.list.clone()),
                    ("address".into(), address),
                    ("creation-time".into(), created.clone()),
                    ("timeout".into(), timeout.clone()),
                    ("dynamic".into(), "true".into()),
                    ("disabled".into(), "false".into()),
                    ("comment".into(), self.fault.comment.clone()),
                ];
                self.replier.re(&self.opts.project(&props))
            })
            .collect();
        shared
            .hostile
            .rows
            .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        out
    }
}

/// What a stream (`print =follow=`, `=follow-only=`) watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `/ip|ipv6/firewall/address-list`.
    AddressList(Family),
    /// `/log`: new entries only, in order.
    Log,
    /// `/user/active`.
    UserActive,
    /// `/ip|ipv6/firewall/filter|raw`.
    Rules(Family, Table),
    /// `/system/script`.
    Scripts,
}

impl Source {
    /// Properties that change on their own (a countdown): a change in them alone is not news.
    fn volatile(self) -> &'static [&'static str] {
        match self {
            Source::AddressList(_) => &["timeout"],
            // Traffic moves the counters all the time; a listener is told about rule changes.
            Source::Rules(..) => &["bytes", "packets"],
            Source::Log | Source::UserActive | Source::Scripts => &[],
        }
    }
}

/// Where a stream is.
#[derive(Debug)]
enum Cursor {
    /// A table: id -> properties last sent, volatile ones left out.
    Table(HashMap<u64, Props>),
    /// The log: the newest id already looked at.
    Tail(u64),
}

/// A running stream: what it has sent so far.
#[derive(Debug)]
pub(crate) struct Stream {
    pub source: Source,
    pub opts: PrintOpts,
    pub replier: Replier,
    cursor: Cursor,
}

impl Stream {
    /// Starts a stream. `snapshot` sends the current items first (`follow`); without it only
    /// later changes are sent (`follow-only`, §6). Streams never start with `!empty` (§3).
    pub(crate) fn start(
        shared: &Shared,
        source: Source,
        opts: PrintOpts,
        replier: Replier,
        snapshot: bool,
    ) -> (Stream, Vec<Sentence>) {
        let cursor = match source {
            Source::Log => Cursor::Tail(if snapshot {
                0
            } else {
                shared.with_state(|s| s.log.last_id())
            }),
            Source::AddressList(_) | Source::UserActive | Source::Rules(..) | Source::Scripts => {
                Cursor::Table(HashMap::new())
            }
        };
        let mut stream = Stream {
            source,
            opts,
            replier,
            cursor,
        };
        let first = stream.poll(shared);
        let first = if snapshot { first } else { Vec::new() };
        (stream, first)
    }

    /// True if a change from `old` to `new` concerns this stream.
    pub(crate) fn woken_by(&self, old: &Generations, new: &Generations) -> bool {
        match self.source {
            Source::AddressList(_) => old.lists != new.lists,
            Source::Log => old.log != new.log,
            Source::UserActive => old.active != new.active,
            Source::Rules(..) => old.rules != new.rules,
            Source::Scripts => old.scripts != new.scripts,
        }
    }

    /// Sim time at which something this stream shows expires on its own.
    pub(crate) fn next_deadline(&self, shared: &Shared) -> Option<Duration> {
        match self.source {
            Source::AddressList(_) => shared.with_state(|s| s.next_expiry()),
            Source::Log | Source::UserActive | Source::Rules(..) | Source::Scripts => None,
        }
    }

    /// Rows for what changed since the last call. Tables: new or changed items as `!re`,
    /// vanished ones as `!re =.id=X =.dead=true` (§2; librouteros `docs/api_analysis.rst`,
    /// "Canceling listen", prints `=.dead=true`). The log: new entries, oldest first.
    pub(crate) fn poll(&mut self, shared: &Shared) -> Vec<Sentence> {
        let source = self.source;
        match &mut self.cursor {
            Cursor::Tail(after) => {
                let rows = super::log::rows(shared, *after);
                if let Some((id, _)) = rows.last() {
                    *after = *id;
                }
                rows.iter()
                    .filter(|(_, p)| self.opts.matches(p))
                    .map(|(_, p)| self.replier.re(&self.opts.project(p)))
                    .collect()
            }
            Cursor::Table(seen) => {
                let current = match source {
                    Source::AddressList(family) => super::address_list::snapshot(shared, family),
                    Source::UserActive => super::user::rows(shared),
                    Source::Rules(family, table) => super::rules::rows(shared, family, table),
                    Source::Scripts => super::script::rows(shared),
                    Source::Log => Vec::new(),
                };
                diff(seen, current, source.volatile(), &self.opts, &self.replier)
            }
        }
    }
}

/// `listen` on a menu: streams each change as `!re` (`=.dead=true` for a removed item) and never
/// ends by itself (§5, [API]); after `/cancel` it ends like a print stream (librouteros
/// `docs/api_analysis.rst`, "Canceling listen"). It sends nothing about the items that exist
/// when it starts. `.proplist` and queries filter it as they filter `print` (**unverified**: the
/// recorded listen has neither); any other parameter traps.
pub(crate) fn listen(
    shared: &Shared,
    source: Source,
    req: &Request,
    r: &Replier,
) -> Result<super::Outcome, Trap> {
    let opts = PrintOpts::parse_with(req, &[".proplist"])?;
    let (stream, first) = Stream::start(shared, source, opts, r.clone(), false);
    Ok(super::Outcome::Follow(stream, first))
}

/// The rows that bring a client that saw `seen` up to `current`; updates `seen`.
fn diff(
    seen: &mut HashMap<u64, Props>,
    current: Vec<(u64, Props)>,
    volatile: &[&str],
    opts: &PrintOpts,
    replier: &Replier,
) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut now_seen = HashMap::with_capacity(current.len());
    for (id, props) in current {
        if !opts.matches(&props) {
            continue;
        }
        let stable: Props = props
            .iter()
            .filter(|(k, _)| !volatile.contains(&k.as_str()))
            .cloned()
            .collect();
        if seen.get(&id) != Some(&stable) {
            out.push(replier.re(&opts.project(&props)));
        }
        now_seen.insert(id, stable);
    }
    let mut dead: Vec<u64> = seen
        .keys()
        .filter(|id| !now_seen.contains_key(id))
        .copied()
        .collect();
    dead.sort_unstable();
    for id in dead {
        let props = vec![
            (".id".to_owned(), crate::state::format_id(id)),
            (".dead".to_owned(), "true".to_owned()),
        ];
        out.push(replier.re(&props));
    }
    *seen = now_seen;
    out
}
