//! Command dispatch: one [`Request`] in, an [`Outcome`] (reply sentences) out.
//!
//! One file per menu (mini-redis `cmd/`, docs/reference/style.md #13): [`login`], [`address_list`], [`rules`],
//! [`system`], [`script`], [`log`], [`user`]; [`print`] holds the shared `print` options (`.proplist`,
//! queries, `count-only`, `!empty`) and the streams (`follow`, `follow-only`). Everything here is synchronous and runs under the state lock; the
//! async parts (cost, latency, cancel, streaming) live in `server.rs`.
//!
//! Trap texts and categories: where `docs/reference/routeros-api.md` quotes a message it is used verbatim;
//! others carry an **unverified** note at their definition. Categories follow the §3 table.

pub(crate) mod address_list;
pub(crate) mod log;
pub(crate) mod login;
pub(crate) mod print;
pub(crate) mod rules;
pub(crate) mod script;
pub(crate) mod system;
pub(crate) mod user;

use std::net::IpAddr;
use std::time::Duration;

use routeros_proto::{Request, Sentence, category};

use crate::config::{TrapCodes, User};
use crate::query::Props;
use crate::shared::Shared;
use crate::state::{Family, Table, parse_id};

/// A `!trap`: optional category and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trap {
    pub category: Option<u32>,
    pub message: String,
}

impl Trap {
    pub(crate) fn new(category: Option<u32>, message: impl Into<String>) -> Self {
        Self {
            category,
            message: message.into(),
        }
    }

    /// `!trap =message=no such item` (§9 "Removing a missing `.id`"). Category 0 ("missing item
    /// or command", §3) is inferred, **unverified**.
    pub(crate) fn no_such_item() -> Self {
        Self::new(Some(category::MISSING_ITEM), "no such item")
    }

    /// `failure: already have such entry` (§9). No category is quoted: none is sent.
    pub(crate) fn duplicate() -> Self {
        Self::new(None, "failure: already have such entry")
    }

    /// `unknown parameter <name>`: text and category 0 **unverified**.
    pub(crate) fn unknown_parameter(name: &str) -> Self {
        Self::new(
            Some(category::MISSING_ITEM),
            format!("unknown parameter {name}"),
        )
    }

    /// `not enough permissions (9)` for a policy the user lacks: **unverified** text (the
    /// `(N)` suffix mirrors `invalid user name or password (6)`, §4).
    pub(crate) fn permissions() -> Self {
        Self::new(None, "not enough permissions (9)")
    }

    /// The cancelled command's trap (§5, verbatim).
    pub(crate) fn interrupted() -> Self {
        Self::new(Some(category::INTERRUPTED), "interrupted")
    }
}

/// Builds reply sentences carrying the command's `.tag` (§5: every reply of a tagged command
/// carries it; untagged commands get untagged replies).
///
/// The `.tag` word comes right after the reply word, as routers send it: `!re .tag=10 =.id=*A`,
/// `!trap .tag=10 =category=2 =message=interrupted` (librouteros `docs/api_analysis.rst`),
/// `!empty .tag=19936` (7.19.3 bytes in ferrohd/mikrotik-rs issue 29), `[b'!empty', b'.tag=5']`
/// (socialwifi/RouterOS-api issue 102). Word order carries no meaning (§2); this is fidelity.
#[derive(Debug, Clone)]
pub(crate) struct Replier {
    tag: Option<Vec<u8>>,
    codes: TrapCodes,
}

impl Replier {
    pub(crate) fn new(tag: Option<Vec<u8>>) -> Self {
        Self {
            tag,
            codes: TrapCodes::Recorded,
        }
    }

    /// Writes trap messages in `codes` form ([`TrapCodes`]).
    pub(crate) fn with_codes(mut self, codes: TrapCodes) -> Self {
        self.codes = codes;
        self
    }

    fn sentence(&self, kind: &str, attrs: &[(&str, &str)]) -> Sentence {
        let mut s = Sentence::new(vec![kind.as_bytes().to_vec()]);
        if let Some(tag) = &self.tag {
            s.push([&b".tag="[..], tag].concat());
        }
        for (k, v) in attrs {
            s.push(format!("={k}={v}").into_bytes());
        }
        s
    }

    pub(crate) fn re(&self, props: &Props) -> Sentence {
        let attrs: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.sentence("!re", &attrs)
    }

    pub(crate) fn done(&self) -> Sentence {
        self.sentence("!done", &[])
    }

    pub(crate) fn done_ret(&self, ret: &str) -> Sentence {
        self.sentence("!done", &[("ret", ret)])
    }

    pub(crate) fn empty(&self) -> Sentence {
        self.sentence("!empty", &[])
    }

    /// `!trap` then `!done` (§3: a trap is followed by `!done` for the same command).
    pub(crate) fn trap_done(&self, trap: &Trap) -> Vec<Sentence> {
        vec![self.trap(trap), self.done()]
    }

    /// The `!trap` alone, message in this replier's [`TrapCodes`] form.
    pub(crate) fn trap(&self, trap: &Trap) -> Sentence {
        let cat = trap.category.map(|c| c.to_string());
        let message = self.codes.apply(&trap.message);
        let mut attrs = Vec::new();
        if let Some(c) = &cat {
            attrs.push(("category", c.as_str()));
        }
        attrs.push(("message", message.as_str()));
        self.sentence("!trap", &attrs)
    }

    /// `!fatal` with a bare reason word and no `.tag` (§3).
    pub(crate) fn fatal(reason: &str) -> Sentence {
        Sentence::new(vec![b"!fatal".to_vec(), reason.as_bytes().to_vec()])
    }
}

/// What the connection does with a command's result.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send these sentences; the command is finished.
    Reply(Vec<Sentence>),
    /// Send these sentences, wait `delay`, then close the connection.
    Close(Vec<Sentence>, Duration),
    /// Send these sentences, then stream changes until `/cancel` (`print =follow=`).
    Follow(print::Stream, Vec<Sentence>),
    /// Send these sentences (the real rows), then invented rows until `/cancel`, never `!done`
    /// ([`crate::Faults::hostile_print`]).
    Hostile(print::Hostile, Vec<Sentence>),
}

/// Per-connection login state.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// The client's address, for the log lines of logins and logouts.
    pub peer: Option<IpAddr>,
    pub user: Option<User>,
    /// Set at login: the connection logs a logout when it ends.
    pub login: Option<login::LoginRecord>,
    /// Challenge of a legacy (< 6.43) login in progress (§4).
    pub challenge: Option<String>,
    /// Commands refused with `not logged in`.
    pub refused: u32,
}

impl Session {
    pub(crate) fn logged_in(&self) -> bool {
        self.user.is_some()
    }
}

/// The menus the sim models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Menu {
    AddressList(Family),
    Rules(Family, Table),
    Resource,
    Identity,
    Script,
    File,
    Log,
    UserActive,
}

const MENUS: &[(&str, Menu)] = &[
    ("/ip/firewall/address-list", Menu::AddressList(Family::V4)),
    ("/ipv6/firewall/address-list", Menu::AddressList(Family::V6)),
    (
        "/ip/firewall/filter",
        Menu::Rules(Family::V4, Table::Filter),
    ),
    ("/ip/firewall/raw", Menu::Rules(Family::V4, Table::Raw)),
    (
        "/ipv6/firewall/filter",
        Menu::Rules(Family::V6, Table::Filter),
    ),
    ("/ipv6/firewall/raw", Menu::Rules(Family::V6, Table::Raw)),
    ("/system/resource", Menu::Resource),
    ("/system/identity", Menu::Identity),
    ("/system/script", Menu::Script),
    ("/file", Menu::File),
    ("/log", Menu::Log),
    ("/user/active", Menu::UserActive),
];

/// Verbs that change configuration or state: they need the `write` policy and pay the
/// per-write cost.
const WRITE_VERBS: &[&str] = &[
    "add",
    "set",
    "remove",
    "move",
    "unset",
    "enable",
    "disable",
    "reset-counters",
    "reset-counters-all",
];

/// Splits `/menu/.../verb`.
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// True for commands that pay the per-write cost.
pub(crate) fn is_write(path: &[u8]) -> bool {
    let path = String::from_utf8_lossy(path);
    let (menu, verb) = split(&path);
    MENUS.iter().any(|(m, _)| *m == menu) && WRITE_VERBS.contains(&verb)
}

/// Runs one command. Called in arrival order per connection.
pub(crate) fn execute(shared: &Shared, session: &mut Session, req: &Request) -> Outcome {
    let path = String::from_utf8_lossy(&req.path).into_owned();
    let r = Replier::new(req.tag.clone()).with_codes(shared.config.trap_codes);
    shared.with_state(|s| *s.stats.commands.entry(path.clone()).or_default() += 1);

    match path.as_str() {
        "/login" => return login::run(shared, session, req, &r),
        // §3: `/quit` → `!fatal` and the bare reason, then the router closes.
        "/quit" => {
            return Outcome::Close(
                vec![Replier::fatal("session terminated on request")],
                Duration::ZERO,
            );
        }
        _ => {}
    }
    if !session.logged_in() {
        session.refused += 1;
        // §1/§3: the number of commands before login is limited; past it the router sends
        // `!fatal`. The limit and the reason text are **unverified**.
        if session.refused > shared.config.max_commands_before_login {
            return Outcome::Close(vec![Replier::fatal("not logged in")], Duration::ZERO);
        }
        return Outcome::Reply(r.trap_done(&Trap::new(None, "not logged in")));
    }
    if path == "/cancel" {
        // Reached only when the reader could not handle it (login still queued): nothing runs.
        return Outcome::Reply(vec![r.done()]);
    }
    let (menu_path, verb) = split(&path);
    let Some(menu) = MENUS.iter().find(|(m, _)| *m == menu_path).map(|(_, m)| *m) else {
        return Outcome::Reply(r.trap_done(&unknown_command(&path)));
    };
    let write = WRITE_VERBS.contains(&verb);
    if write {
        shared.with_state(|s| s.stats.write_commands += 1);
    }
    if let Some(user) = &session.user
        && shared.config.enforce_policies
    {
        let needed = if write { "write" } else { "read" };
        if !user.has(needed) {
            return Outcome::Reply(r.trap_done(&Trap::permissions()));
        }
    }
    let result = match menu {
        Menu::AddressList(fam) => address_list::run(shared, fam, verb, req, &r),
        Menu::Rules(fam, table) => rules::run(shared, fam, table, verb, req, &r),
        Menu::Resource => system::resource(shared, verb, req, &r),
        Menu::Identity => system::identity(shared, verb, req, &r),
        Menu::Script => script::script(shared, verb, req, &r),
        Menu::File => script::file(shared, verb, req, &r),
        Menu::Log => log::run(shared, verb, req, &r),
        Menu::UserActive => user::active(shared, verb, req, &r),
    };
    match result {
        Ok(outcome) => outcome,
        Err(trap) => Outcome::Reply(r.trap_done(&trap)),
    }
}

/// §2 names no text for unknown commands; RouterOS says `no such command` for an unknown verb
/// in a known menu and `no such command prefix` for an unknown menu (**unverified**; category 0
/// "missing item or command" inferred from §3).
fn unknown_command(path: &str) -> Trap {
    let (menu, _) = split(path);
    let known_prefix = MENUS.iter().any(|(m, _)| {
        *m == menu || m.starts_with(menu) && m.as_bytes().get(menu.len()) == Some(&b'/')
    });
    if known_prefix && !menu.is_empty() {
        Trap::new(Some(category::MISSING_ITEM), "no such command")
    } else {
        Trap::new(Some(category::MISSING_ITEM), "no such command prefix")
    }
}

/// Refuses attributes outside `allowed` and stray words (§2: unknown parameters trap).
pub(crate) fn check_params(req: &Request, allowed: &[&str]) -> Result<(), Trap> {
    for (k, _) in req.attributes.iter() {
        let k = String::from_utf8_lossy(k);
        if !allowed.contains(&k.as_ref()) {
            return Err(Trap::unknown_parameter(&k));
        }
    }
    if let Some(w) = req.unknown.first() {
        return Err(Trap::unknown_parameter(&String::from_utf8_lossy(w)));
    }
    Ok(())
}

/// Options `print` accepts on every menu (§6).
pub(crate) const PRINT_PARAMS: &[&str] = &[
    ".proplist",
    "count-only",
    "follow",
    "follow-only",
    "detail",
    "without-paging",
    "terse",
];

/// Ids of `=.id=` or `=numbers=`, comma-separated (§5 "Batch remove").
pub(crate) fn ids(req: &Request) -> Result<Vec<u64>, Trap> {
    let raw = req
        .attributes
        .get(".id")
        .or_else(|| req.attributes.get("numbers"))
        .ok_or_else(|| Trap::new(Some(category::ARGUMENT_VALUE), "failure: no .id given"))?;
    let text = String::from_utf8_lossy(raw);
    text.split(',')
        .map(|t| parse_id(t.trim()).ok_or_else(Trap::no_such_item))
        .collect()
}

/// Removes `ids` in the order given with `remove_one` (false: no such item) until one is
/// missing; that one traps `no such item`, and the items before it stay removed. "Removes up to
/// the missing one, then traps" is the MikroTik manual's account of a multi-item `remove` as
/// cited for this project (`docs/reference/routeros-sim-calibration.md` §3; §5 of
/// `docs/reference/routeros-api.md` had it **unverified**, and no recording shows it yet).
pub(crate) fn remove_in_order(
    ids: &[u64],
    mut remove_one: impl FnMut(u64) -> bool,
) -> Result<(), Trap> {
    for id in ids {
        if !remove_one(*id) {
            return Err(Trap::no_such_item());
        }
    }
    Ok(())
}

/// Attribute as text (lossy: words are bytes, §7).
pub(crate) fn attr(req: &Request, key: &str) -> Option<String> {
    req.attributes
        .get(key)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_commands_distinguish_verb_and_prefix() {
        assert_eq!(
            unknown_command("/ip/firewall/address-list/frobnicate").message,
            "no such command"
        );
        assert_eq!(
            unknown_command("/ip/firewall/print").message,
            "no such command"
        );
        assert_eq!(
            unknown_command("/nope/print").message,
            "no such command prefix"
        );
        assert_eq!(
            unknown_command("/ip/fire/print").message,
            "no such command prefix"
        );
    }

    #[test]
    fn writes_are_recognised() {
        assert!(is_write(b"/ip/firewall/address-list/add"));
        assert!(is_write(b"/ipv6/firewall/raw/set"));
        assert!(!is_write(b"/ip/firewall/address-list/print"));
        assert!(!is_write(b"/login"));
    }
}
