//! `/ip/firewall/address-list` and `/ipv6/firewall/address-list`: `add`, `print`, `set`,
//! `remove` (`docs/reference/routeros-api.md` §9).

use std::time::Duration;

use routeros_proto::{Request, category};

use super::print::{Hostile, PrintOpts, Source, Stream, listen, one_shot};
use super::{Outcome, Replier, Trap, attr, check_params, ids};
use crate::normalize::{AddressKind, normalize};
use crate::query::Props;
use crate::shared::Shared;
use crate::state::{Family, NewEntry, State, StoredEntry, entry_props, format_id, parse_bool};
use crate::timefmt::parse_timeout;

const ADD_PARAMS: &[&str] = &[
    "list", "address", "timeout", "comment", "disabled", "dynamic",
];
const SET_PARAMS: &[&str] = &[
    ".id", "numbers", "list", "address", "timeout", "comment", "disabled",
];
const REMOVE_PARAMS: &[&str] = &[".id", "numbers"];

pub(crate) fn run(
    shared: &Shared,
    family: Family,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    match verb {
        "add" => add(shared, family, req, r),
        "print" | "getall" => print(shared, family, req, r),
        "listen" => listen(shared, Source::AddressList(family), req, r),
        "set" => set(shared, family, req, r),
        "remove" => remove(shared, family, req, r),
        _ => Err(Trap::new(Some(category::MISSING_ITEM), "no such command")),
    }
}

fn add(shared: &Shared, family: Family, req: &Request, r: &Replier) -> Result<Outcome, Trap> {
    check_params(req, ADD_PARAMS)?;
    let new = NewEntry {
        // A missing `list`/`address` trap text is **unverified**.
        list: attr(req, "list").ok_or_else(|| Trap::new(None, "failure: list not set"))?,
        address: attr(req, "address").ok_or_else(|| Trap::new(None, "failure: address not set"))?,
        timeout: attr(req, "timeout").map(|t| timeout(&t)).transpose()?,
        dynamic: attr(req, "dynamic")
            .map(|d| boolean("dynamic", &d))
            .transpose()?
            .unwrap_or(false),
        comment: attr(req, "comment").filter(|c| !c.is_empty()),
        disabled: attr(req, "disabled")
            .map(|d| boolean("disabled", &d))
            .transpose()?
            .unwrap_or(false),
    };
    if shared.roll_add_fault() {
        return Err(Trap::new(None, "failure: simulated fault"));
    }
    let id = shared.with_state(|s| insert(shared, s, family, new, true))?;
    Ok(Outcome::Reply(vec![r.done_ret(&format_id(id))]))
}

/// Validates, normalises and stores an entry. `count` adds static entries to the persistent
/// write counter (seeding through the library does not count).
pub(crate) fn insert(
    shared: &Shared,
    s: &mut State,
    family: Family,
    new: NewEntry,
    count: bool,
) -> Result<u64, Trap> {
    let now = shared.clock.now();
    s.purge(now);
    let normalized = normalize(family, &new.address)
        .map_err(|m| Trap::new(Some(category::ARGUMENT_VALUE), m))?;
    let dns = normalized.kind == AddressKind::DnsName;
    let address = normalized.text;
    // Only an enabled entry blocks the same address (see `State` `index`).
    if s.find(family, &new.list, &address).is_some() {
        return Err(Trap::duplicate());
    }
    // `timeout=0` is treated as "no timeout" (static): **unverified**, and the conservative
    // reading for the persistent-write counter.
    let timeout = new.timeout.filter(|t| !t.is_zero());
    let dynamic = timeout.is_some() || new.dynamic;
    let id = s.alloc_id();
    s.insert_entry(
        family,
        StoredEntry {
            id,
            list: new.list,
            address,
            expires_at: timeout.map(|t| now + t),
            dynamic,
            comment: new.comment,
            disabled: new.disabled,
            created_at: now,
            dns,
            parent: None,
        },
    );
    s.sync_dns(family, id, now);
    // §9 "Persistence": an entry without timeout or `dynamic=yes` is saved to flash.
    if count && !dynamic {
        s.persistent_writes += 1;
    }
    Ok(id)
}

fn print(shared: &Shared, family: Family, req: &Request, r: &Replier) -> Result<Outcome, Trap> {
    let opts = PrintOpts::parse(req)?;
    if opts.follow || opts.follow_only {
        let snapshot = !opts.follow_only;
        let (stream, first) = Stream::start(
            shared,
            Source::AddressList(family),
            opts,
            r.clone(),
            snapshot,
        );
        return Ok(Outcome::Follow(stream, first));
    }
    let items: Vec<Props> = snapshot(shared, family)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if !opts.count_only
        && let Some(fault) = shared.hostile_print()
    {
        // The real rows first, as a real print would send them; invented ones follow forever.
        let real = items
            .iter()
            .filter(|i| opts.matches(i))
            .map(|i| r.re(&opts.project(i)))
            .collect();
        let hostile = Hostile::new(family, opts, r.clone(), fault);
        return Ok(Outcome::Hostile(hostile, real));
    }
    Ok(Outcome::Reply(one_shot(shared, &opts, &items, r)))
}

/// Current entries as print rows.
pub(crate) fn snapshot(shared: &Shared, family: Family) -> Vec<(u64, Props)> {
    let now = shared.clock.now();
    let version = shared.version;
    shared.with_state(|s| {
        s.purge(now);
        s.entries(family)
            .map(|e| (e.id, entry_props(e, now, version, |t| shared.clock.wall(t))))
            .collect()
    })
}

fn set(shared: &Shared, family: Family, req: &Request, r: &Replier) -> Result<Outcome, Trap> {
    check_params(req, SET_PARAMS)?;
    let ids = ids(req)?;
    let timeout = attr(req, "timeout").map(|t| timeout(&t)).transpose()?;
    let disabled = attr(req, "disabled")
        .map(|d| boolean("disabled", &d))
        .transpose()?;
    let now = shared.clock.now();
    shared.with_state(|s| {
        s.purge(now);
        // Resolve every id before changing anything.
        let mut entries = Vec::with_capacity(ids.len());
        for id in &ids {
            entries.push(
                s.entry(family, *id)
                    .cloned()
                    .ok_or_else(Trap::no_such_item)?,
            );
        }
        for mut e in entries {
            let was_static = !e.dynamic;
            if let Some(list) = attr(req, "list") {
                e.list = list;
            }
            if let Some(addr) = attr(req, "address") {
                let n = normalize(family, &addr)
                    .map_err(|m| Trap::new(Some(category::ARGUMENT_VALUE), m))?;
                e.dns = n.kind == AddressKind::DnsName;
                e.address = n.text;
            }
            if let Some(t) = timeout {
                // Setting a timeout on a static entry makes it dynamic (**unverified**).
                if t.is_zero() {
                    e.expires_at = None;
                } else {
                    e.expires_at = Some(now + t);
                    e.dynamic = true;
                }
            }
            if let Some(c) = attr(req, "comment") {
                e.comment = Some(c).filter(|c| !c.is_empty());
            }
            if let Some(d) = disabled {
                e.disabled = d;
            }
            // The result may not duplicate another enabled entry (§9; disabled ones never
            // collide, see `State` `index`).
            if !e.disabled
                && let Some(found) = s.find(family, &e.list, &e.address)
                && found != e.id
            {
                return Err(Trap::duplicate());
            }
            s.replace_entry(family, e, now);
            if was_static {
                s.persistent_writes += 1;
            }
        }
        Ok(())
    })?;
    Ok(Outcome::Reply(vec![r.done()]))
}

fn remove(shared: &Shared, family: Family, req: &Request, r: &Replier) -> Result<Outcome, Trap> {
    check_params(req, REMOVE_PARAMS)?;
    let ids = ids(req)?;
    let now = shared.clock.now();
    shared.with_state(|s| {
        s.purge(now);
        // Items go in list order until one is missing, which traps `no such item` and leaves
        // the rest: the earlier ones stay removed (see `super::remove_in_order`).
        super::remove_in_order(&ids, |id| match s.remove_entry(family, id) {
            Some(e) => {
                if !e.dynamic {
                    s.persistent_writes += 1;
                }
                true
            }
            None => false,
        })
    })?;
    Ok(Outcome::Reply(vec![r.done()]))
}

/// A timeout argument; both refusals are argument-value failures (category 1, inferred from
/// §3). The out-of-range text is verbatim from §9; the invalid-value text is **unverified**.
fn timeout(text: &str) -> Result<Duration, Trap> {
    parse_timeout(text).map_err(|e| Trap::new(Some(category::ARGUMENT_VALUE), e.to_string()))
}

/// A boolean argument; the wording of the refusal is **unverified**.
fn boolean(name: &str, text: &str) -> Result<bool, Trap> {
    parse_bool(text).ok_or_else(|| {
        Trap::new(
            Some(category::ARGUMENT_VALUE),
            format!("value of {name} must be yes or no"),
        )
    })
}
