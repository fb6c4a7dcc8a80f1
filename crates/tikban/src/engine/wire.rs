//! The engine's ops on the wire: RouterOS commands for [`Op`]s, [`Outcome`]s from replies, and
//! [`RouterRow`]s from printed attributes. Pure functions: no I/O, no clock.
//!
//! Router knowledge lives here, not in the LAPI crate: how RouterOS prints an address
//! (`docs/reference/routeros-api.md` §9), which traps mean "duplicate" or "gone" (§3, §9), and the time format of
//! `timeout` (§7).

use crowdsec_lapi::Value;
use routeros_client::{Attributes, Command, CommandError, Error as RouterError, Query, Response};

use super::{Family, Op, Outcome, RouterId, RouterRow, comment};
use crate::rostime;

/// RouterOS trap category 0: "missing item or command" (`docs/reference/routeros-api.md` §3).
const CATEGORY_MISSING: u32 = 0;

/// The `address` RouterOS stores and prints for a value (`docs/reference/routeros-api.md` §9): IPv4 hosts bare,
/// networks as `addr/len`, IPv6 hosts with `/128` as `/ipv6` lists print them.
///
/// ```
/// use crowdsec_lapi::Value;
/// use tikban::engine::wire::routeros_address;
/// assert_eq!(routeros_address(&Value::parse("2001:db8::1").unwrap()), "2001:db8::1/128");
/// assert_eq!(routeros_address(&Value::parse("192.0.34.166/32").unwrap()), "192.0.34.166");
/// ```
pub fn routeros_address(value: &Value) -> String {
    if value.is_ipv6() && !value.is_network() {
        format!("{value}/128")
    } else {
        value.to_string()
    }
}

/// The RouterOS command for an op. `lists` are the list names per family.
///
/// Paths and attribute names are constants and values are any bytes, so this fails only on a
/// value longer than 4 GiB; the caller then reports the op as refused ([`build_failed`]), never as
/// done.
pub fn command(op: &Op, prefix: &str, lists: &[String; 2]) -> Result<Command, CommandError> {
    let family = Family::of(op.value());
    let list = &lists[family.index()];
    let menu = family.menu();
    match op {
        Op::Add {
            value,
            timeout,
            origin,
        } => Command::builder(&format!("{menu}/add"))
            .attr("list", list)
            .attr("address", routeros_address(value))
            .attr("timeout", format!("{timeout}s"))
            .attr("comment", comment(prefix, origin.as_str()))
            .build(),
        Op::Remove { id, .. } => Command::builder(&format!("{menu}/remove"))
            .id(id.to_string())
            .build(),
        Op::Refresh { id, timeout, .. } => Command::builder(&format!("{menu}/set"))
            .id(id.to_string())
            .attr("timeout", format!("{timeout}s"))
            .build(),
        Op::Lookup { value } => Command::builder(&format!("{menu}/print"))
            .proplist(&[".id", "address", "timeout", "comment"])
            .query(Query::Eq("list".into(), list.clone().into_bytes()))
            .query(Query::Eq(
                "address".into(),
                routeros_address(value).into_bytes(),
            ))
            .build(),
    }
}

/// The print of one whole list, streamed by a reconcile.
pub fn list_print(family: Family, list: &str) -> Result<Command, CommandError> {
    Command::builder(&format!("{}/print", family.menu()))
        .proplist(&[".id", "address", "timeout", "comment"])
        .query(Query::Eq("list".into(), list.as_bytes().to_vec()))
        .build()
}

/// The outcome of an op whose command could not be built: refused, so the engine keeps what it
/// knows about the entry and tries again later.
pub fn build_failed(err: &CommandError) -> Outcome {
    Outcome::Trap(format!("cannot build the command: {err}"))
}

/// What a trap means for the engine. RouterOS sends `=category=` on most traps
/// (`docs/reference/routeros-api.md` §3); category 0 is "missing item". The text is the fallback, matched on
/// its stable start only: v7 may append a numeric code such as `no such item (4)`.
pub fn classify_trap(category: Option<u32>, message: &str) -> Outcome {
    let text = message.trim_start();
    if text.contains("already have such entry") {
        Outcome::Duplicate
    } else if category == Some(CATEGORY_MISSING) || text.starts_with("no such item") {
        Outcome::NoSuchItem
    } else {
        Outcome::Trap(message.to_owned())
    }
}

/// Maps a router reply to the engine's view of it.
pub fn outcome(op: &Op, result: Result<Response, RouterError>) -> Outcome {
    match result {
        Ok(resp) => match op {
            Op::Lookup { .. } => Outcome::Rows(resp.rows.iter().map(row).collect()),
            Op::Add { .. } => Outcome::Done(resp.ret_str().and_then(RouterId::parse)),
            _ => Outcome::Done(None),
        },
        // docs/reference/routeros-api.md §9: a duplicate and a missing id are device errors, not transport
        // errors; the connection stays.
        Err(RouterError::Trap {
            category, message, ..
        }) => classify_trap(category, &message),
        Err(RouterError::Timeout { .. }) => Outcome::Timeout,
        Err(e) if e.is_connection_lost() => Outcome::Lost,
        Err(e) => Outcome::Trap(e.to_string()),
    }
}

/// One printed address-list row.
pub fn row(attrs: &Attributes) -> RouterRow {
    RouterRow {
        id: attrs.get_lossy(".id").unwrap_or_default().into_owned(),
        address: attrs.get_lossy("address").unwrap_or_default().into_owned(),
        timeout: attrs.get_str("timeout").and_then(rostime::parse),
        comment: attrs.get_lossy("comment").map(|c| c.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_are_classified_by_category_then_by_stable_text() {
        assert_eq!(classify_trap(Some(0), "whatever text"), Outcome::NoSuchItem);
        assert_eq!(classify_trap(None, "no such item (4)"), Outcome::NoSuchItem);
        assert_eq!(classify_trap(None, "no such item"), Outcome::NoSuchItem);
        assert_eq!(
            classify_trap(Some(1), "failure: already have such entry (7)"),
            Outcome::Duplicate
        );
        assert_eq!(
            classify_trap(Some(5), "not enough permissions (9)"),
            Outcome::Trap("not enough permissions (9)".into())
        );
    }

    #[test]
    fn addresses_match_the_router_print_table() {
        // docs/reference/routeros-api.md §9 normalisation table.
        let r = |s: &str| routeros_address(&Value::parse(s).unwrap());
        assert_eq!(r("192.0.34.166/32"), "192.0.34.166");
        assert_eq!(r("203.0.113.77/24"), "203.0.113.0/24");
        assert_eq!(r("2001:db8::1"), "2001:db8::1/128");
        assert_eq!(r("2001:db8::/48"), "2001:db8::/48");
    }

    #[test]
    fn a_refused_build_is_a_trap_not_a_success() {
        let err = CommandError::ValueTooLong(usize::MAX);
        assert!(matches!(build_failed(&err), Outcome::Trap(m) if m.contains("cannot build")));
    }

    #[test]
    fn commands_carry_list_address_timeout_and_comment() {
        let lists = ["v4".to_owned(), "v6".to_owned()];
        let op = Op::Add {
            value: Value::parse("2001:DB8::1").unwrap(),
            timeout: 60,
            origin: crowdsec_lapi::Label::new("lists:fire hol"),
        };
        let words: Vec<String> = command(&op, "tikban", &lists)
            .unwrap()
            .words()
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        assert_eq!(
            words,
            [
                "/ipv6/firewall/address-list/add",
                "=list=v6",
                "=address=2001:db8::1/128",
                "=timeout=60s",
                "=comment=tikban lists:fire_hol"
            ]
        );
    }
}
