//! `/ip/firewall/filter`, `/ip/firewall/raw` and the `/ipv6` equivalents: `print`, `add`, `set`,
//! `remove`, `move`, `reset-counters` (`docs/reference/routeros-api.md` §10). Counters (`bytes`, `packets`) are
//! driven by tests through [`Sim::set_rule_counters`](crate::Sim::set_rule_counters).
//!
//! Rules are configuration: every change counts as a persistent write.

use routeros_proto::{Request, category};

use super::print::{PrintOpts, Source, listen, one_shot};
use super::{Outcome, Replier, Trap, attr, check_params, ids};
use crate::query::Props;
use crate::shared::Shared;
use crate::state::{Family, State, StoredRule, Table, format_id, parse_bool, parse_id, rule_props};

/// Rule properties the sim accepts; anything else traps `unknown parameter`.
pub(crate) const RULE_PARAMS: &[&str] = &[
    "chain",
    "action",
    "comment",
    "disabled",
    "log",
    "log-prefix",
    "src-address",
    "dst-address",
    "src-address-list",
    "dst-address-list",
    "src-address-type",
    "dst-address-type",
    "in-interface",
    "out-interface",
    "in-interface-list",
    "out-interface-list",
    "protocol",
    "src-port",
    "dst-port",
    "port",
    "connection-state",
    "connection-nat-state",
    "connection-type",
    "connection-mark",
    "connection-limit",
    "packet-mark",
    "routing-mark",
    "jump-target",
    "reject-with",
    "address-list",
    "address-list-timeout",
    "tcp-flags",
    "icmp-options",
    "limit",
    "dst-limit",
    "packet-size",
    "ttl",
    "hop-limit",
    "ipsec-policy",
    "fragment",
    "nth",
    "random",
    "priority",
    "dscp",
    "tls-host",
    "content",
    "new-connection-mark",
    "new-packet-mark",
    "new-routing-mark",
    "passthrough",
    "to-addresses",
    "to-ports",
];

pub(crate) fn run(
    shared: &Shared,
    family: Family,
    table: Table,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    match verb {
        "print" | "getall" => {
            let opts = PrintOpts::parse(req)?;
            let items: Vec<Props> = rows(shared, family, table)
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            Ok(Outcome::Reply(one_shot(shared, &opts, &items, r)))
        }
        "listen" => listen(shared, Source::Rules(family, table), req, r),
        "add" => {
            let mut allowed = RULE_PARAMS.to_vec();
            allowed.push("place-before");
            check_params(req, &allowed)?;
            let attrs = rule_attrs(req);
            let disabled = disabled(req)?;
            let before = attr(req, "place-before")
                .map(|b| parse_id(&b).ok_or_else(Trap::no_such_item))
                .transpose()?;
            let id = shared.with_state(|s| {
                let id = add_rule(s, family, table, attrs, disabled.unwrap_or(false), before)?;
                s.persistent_writes += 1;
                s.gens.rules += 1;
                Ok::<_, Trap>(id)
            })?;
            Ok(Outcome::Reply(vec![r.done_ret(&format_id(id))]))
        }
        "set" => {
            let mut allowed = RULE_PARAMS.to_vec();
            allowed.extend([".id", "numbers"]);
            check_params(req, &allowed)?;
            let ids = ids(req)?;
            let attrs = rule_attrs(req);
            let disabled = disabled(req)?;
            shared.with_state(|s| {
                let idx = positions(s, family, table, &ids)?;
                for i in idx {
                    let rule = &mut s.rules[i];
                    for (k, v) in &attrs {
                        match rule.attrs.iter_mut().find(|(rk, _)| rk == k) {
                            Some(slot) => slot.1 = v.clone(),
                            None => rule.attrs.push((k.clone(), v.clone())),
                        }
                    }
                    rule.attrs.retain(|(_, v)| !v.is_empty());
                    if let Some(d) = disabled {
                        rule.disabled = d;
                    }
                }
                s.persistent_writes += 1;
                s.gens.rules += 1;
                Ok(())
            })?;
            Ok(Outcome::Reply(vec![r.done()]))
        }
        "remove" => {
            check_params(req, &[".id", "numbers"])?;
            let ids = ids(req)?;
            shared.with_state(|s| {
                super::remove_in_order(&ids, |id| {
                    let Some(at) = s
                        .rules
                        .iter()
                        .position(|x| x.id == id && x.family == family && x.table == table)
                    else {
                        return false;
                    };
                    s.rules.remove(at);
                    s.persistent_writes += 1;
                    s.gens.rules += 1;
                    true
                })
            })?;
            Ok(Outcome::Reply(vec![r.done()]))
        }
        "move" => {
            check_params(req, &[".id", "numbers", "destination"])?;
            let ids = ids(req)?;
            let dest = attr(req, "destination")
                .map(|d| parse_id(&d).ok_or_else(Trap::no_such_item))
                .transpose()?;
            shared.with_state(|s| {
                positions(s, family, table, &ids)?;
                if let Some(d) = dest {
                    positions(s, family, table, &[d])?;
                }
                let moved: Vec<StoredRule> = ids
                    .iter()
                    .filter_map(|id| s.rules.iter().find(|x| x.id == *id).cloned())
                    .collect();
                s.rules.retain(|x| !ids.contains(&x.id));
                let at = dest
                    .and_then(|d| s.rules.iter().position(|x| x.id == d))
                    .unwrap_or(s.rules.len());
                for (n, rule) in moved.into_iter().enumerate() {
                    s.rules.insert(at + n, rule);
                }
                s.persistent_writes += 1;
                s.gens.rules += 1;
                Ok(())
            })?;
            Ok(Outcome::Reply(vec![r.done()]))
        }
        "reset-counters" | "reset-counters-all" => {
            let all = verb == "reset-counters-all";
            check_params(req, if all { &[] } else { &[".id", "numbers"] })?;
            let ids = if all { Vec::new() } else { ids(req)? };
            shared.with_state(|s| {
                positions(s, family, table, &ids)?;
                for rule in s.rules.iter_mut() {
                    if rule.family == family
                        && rule.table == table
                        && (all || ids.contains(&rule.id))
                    {
                        rule.bytes = 0;
                        rule.packets = 0;
                    }
                }
                Ok(())
            })?;
            Ok(Outcome::Reply(vec![r.done()]))
        }
        _ => Err(Trap::new(Some(category::MISSING_ITEM), "no such command")),
    }
}

/// The rules of one table as print rows, in order.
pub(crate) fn rows(shared: &Shared, family: Family, table: Table) -> Vec<(u64, Props)> {
    shared.with_state(|s| {
        s.rules
            .iter()
            .filter(|x| x.family == family && x.table == table)
            .map(|x| (x.id, rule_props(x)))
            .collect()
    })
}

/// Inserts a rule (also used by [`Sim::add_rule`](crate::Sim::add_rule)).
pub(crate) fn add_rule(
    s: &mut State,
    family: Family,
    table: Table,
    attrs: Vec<(String, String)>,
    disabled: bool,
    before: Option<u64>,
) -> Result<u64, Trap> {
    let mut attrs = attrs;
    if !attrs.iter().any(|(k, _)| k == "chain") {
        // The router's wording for a missing chain is **unverified**.
        return Err(Trap::new(None, "failure: chain not set"));
    }
    if !attrs.iter().any(|(k, _)| k == "action") {
        attrs.insert(1.min(attrs.len()), ("action".into(), "accept".into()));
    }
    let at = match before {
        Some(b) => positions(s, family, table, &[b])?[0],
        None => s.rules.len(),
    };
    let id = s.alloc_id();
    s.gens.rules += 1;
    s.rules.insert(
        at,
        StoredRule {
            id,
            family,
            table,
            attrs,
            bytes: 0,
            packets: 0,
            disabled,
        },
    );
    Ok(id)
}

fn positions(s: &State, family: Family, table: Table, ids: &[u64]) -> Result<Vec<usize>, Trap> {
    ids.iter()
        .map(|id| {
            s.rules
                .iter()
                .position(|x| x.id == *id && x.family == family && x.table == table)
                .ok_or_else(Trap::no_such_item)
        })
        .collect()
}

fn rule_attrs(req: &Request) -> Vec<(String, String)> {
    req.attributes
        .iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                b".id" | b"numbers" | b"disabled" | b"place-before" | b"destination"
            )
        })
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn disabled(req: &Request) -> Result<Option<bool>, Trap> {
    attr(req, "disabled")
        .map(|d| {
            parse_bool(&d).ok_or_else(|| {
                Trap::new(
                    Some(category::ARGUMENT_VALUE),
                    "value of disabled must be yes or no",
                )
            })
        })
        .transpose()
}
