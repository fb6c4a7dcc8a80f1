//! `print` (alias `getall`, §2) on any menu: queries, `.proplist`, `count-only`, `!empty` (§6).

use std::collections::HashMap;

use routeros_proto::{Query, Request, Sentence, category};

use super::{PRINT_PARAMS, Replier, Trap, check_params};
use crate::query::{self, Props};
use crate::shared::Shared;
use crate::state::Family;

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
        check_params(req, PRINT_PARAMS)?;
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

/// A running `print =follow=` / `=follow-only=` on an address list: what it has sent so far.
#[derive(Debug)]
pub(crate) struct FollowSpec {
    pub family: Family,
    pub opts: PrintOpts,
    pub replier: Replier,
    /// id → properties last sent.
    pub seen: HashMap<u64, Props>,
}

impl FollowSpec {
    /// Rows for what changed since the last call: new or changed items as `!re`, vanished ones
    /// as `!re =.id=X =.dead=true` (§2). Expiry is noticed on the next change (lazy expiry).
    pub(crate) fn poll(&mut self, current: Vec<(u64, Props)>) -> Vec<Sentence> {
        let mut out = Vec::new();
        let mut now_seen = HashMap::with_capacity(current.len());
        for (id, props) in current {
            if !self.opts.matches(&props) {
                continue;
            }
            if self.seen.get(&id) != Some(&props) {
                out.push(self.replier.re(&self.opts.project(&props)));
            }
            now_seen.insert(id, props);
        }
        let mut dead: Vec<u64> = self
            .seen
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
            out.push(self.replier.re(&props));
        }
        self.seen = now_seen;
        out
    }
}
