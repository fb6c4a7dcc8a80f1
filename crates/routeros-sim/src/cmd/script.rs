//! `/system/script` and `/file`: modelled only far enough to count persistent (flash) writes.
//! csrb bulk-adds through temporary scripts (`docs/reference/routeros-api.md` §11); each one is a config write.

use routeros_proto::{Request, category};

use super::print::{PrintOpts, Source, listen, one_shot};
use super::{Outcome, Replier, Trap, attr, check_params, ids};
use crate::query::Props;
use crate::shared::Shared;
use crate::state::{Script, format_id};

pub(crate) fn script(
    shared: &Shared,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    match verb {
        "add" => {
            check_params(
                req,
                &[
                    "name",
                    "source",
                    "policy",
                    "comment",
                    "dont-require-permissions",
                ],
            )?;
            let source = attr(req, "source").unwrap_or_default();
            let id = shared.with_state(|s| {
                let id = s.alloc_id();
                let name = attr(req, "name").unwrap_or_else(|| format!("script{id}"));
                s.scripts.push(Script { id, name, source });
                s.persistent_writes += 1;
                s.gens.scripts += 1;
                id
            });
            Ok(Outcome::Reply(vec![r.done_ret(&format_id(id))]))
        }
        "remove" => {
            check_params(req, &[".id", "numbers"])?;
            let ids = ids(req)?;
            shared.with_state(|s| {
                super::remove_in_order(&ids, |id| {
                    let Some(at) = s.scripts.iter().position(|x| x.id == id) else {
                        return false;
                    };
                    s.scripts.remove(at);
                    s.persistent_writes += 1;
                    s.gens.scripts += 1;
                    true
                })
            })?;
            Ok(Outcome::Reply(vec![r.done()]))
        }
        "print" | "getall" => {
            let opts = PrintOpts::parse(req)?;
            let items: Vec<Props> = rows(shared).into_iter().map(|(_, p)| p).collect();
            Ok(Outcome::Reply(one_shot(shared, &opts, &items, r)))
        }
        "listen" => listen(shared, Source::Scripts, req, r),
        _ => Err(Trap::new(Some(category::MISSING_ITEM), "no such command")),
    }
}

/// `/system/script` entries as print rows.
pub(crate) fn rows(shared: &Shared) -> Vec<(u64, Props)> {
    shared.with_state(|s| {
        s.scripts
            .iter()
            .map(|x| {
                let props = vec![
                    (".id".into(), format_id(x.id)),
                    ("name".into(), x.name.clone()),
                    ("source".into(), x.source.clone()),
                ];
                (x.id, props)
            })
            .collect()
    })
}

pub(crate) fn file(
    shared: &Shared,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    match verb {
        "add" => {
            check_params(req, &["name", "contents", "type"])?;
            let id = shared.with_state(|s| {
                s.persistent_writes += 1;
                s.alloc_id()
            });
            Ok(Outcome::Reply(vec![r.done_ret(&format_id(id))]))
        }
        "print" | "getall" => {
            let opts = PrintOpts::parse(req)?;
            Ok(Outcome::Reply(one_shot(shared, &opts, &[], r)))
        }
        _ => Err(Trap::new(Some(category::MISSING_ITEM), "no such command")),
    }
}
