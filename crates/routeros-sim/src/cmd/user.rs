//! `/user/active`: who is logged in ([`crate::sessions`]). `print` and `listen` only: the console's
//! `request-logout` (7.23 and before) and `remove` (7.24) are not modelled.

use routeros_proto::{Request, category};

use super::print::{PrintOpts, Source, Stream, listen, one_shot};
use super::{Outcome, Replier, Trap};
use crate::query::Props;
use crate::sessions::StoredSession;
use crate::shared::Shared;
use crate::state::{bool_text, format_id};
use crate::timefmt;

pub(crate) fn active(
    shared: &Shared,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    if verb == "listen" {
        return listen(shared, Source::UserActive, req, r);
    }
    if !matches!(verb, "print" | "getall") {
        return Err(Trap::new(Some(category::MISSING_ITEM), "no such command"));
    }
    let opts = PrintOpts::parse(req)?;
    if opts.follow || opts.follow_only {
        let snapshot = !opts.follow_only;
        let (stream, first) = Stream::start(shared, Source::UserActive, opts, r.clone(), snapshot);
        return Ok(Outcome::Follow(stream, first));
    }
    let items: Vec<Props> = rows(shared).into_iter().map(|(_, p)| p).collect();
    Ok(Outcome::Reply(one_shot(shared, &opts, &items, r)))
}

/// Current rows, in id order.
pub(crate) fn rows(shared: &Shared) -> Vec<(u64, Props)> {
    shared.with_state(|s| s.active.iter().map(|x| (x.id, props(shared, x))).collect())
}

/// `.id`, `when`, `name`, `address`, `via`, `group`, `radius` (the order of the manual's
/// `when name address via`, then the later properties). `when` is a calendar time in the
/// version's date style (manual 2.6: `when=aug/09/2002 21:46:13`).
fn props(shared: &Shared, x: &StoredSession) -> Props {
    let when = timefmt::format_date_time(shared.clock.wall(x.at), shared.version.date_style());
    vec![
        (".id".into(), format_id(x.id)),
        ("when".into(), when),
        ("name".into(), x.session.name.clone()),
        ("address".into(), x.session.address.clone()),
        ("via".into(), x.session.via.clone()),
        ("group".into(), x.session.group.clone()),
        ("radius".into(), bool_text(x.session.radius).into()),
    ]
}
