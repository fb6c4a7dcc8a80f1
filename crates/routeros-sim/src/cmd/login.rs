//! `/login` (`docs/reference/routeros-api.md` §4).
//!
//! - 6.43+ and v7: `/login =name= =password=` → `!done`; bad credentials → `!trap
//!   =message=invalid user name or password (6)` then `!done` (go-routeros
//!   `TestLoginIncorrectPost643`), then the sim closes the socket after
//!   [`SimConfig::bad_login_close_delay`](crate::SimConfig::bad_login_close_delay) (the real
//!   socket state is **unverified**).
//! - Before 6.43: any `/login` without `=response=` → `!done =ret=<hex challenge>`; then
//!   `=name= =response=` is checked with [`legacy_response`]; a bad one traps `cannot log in`.
//! - 6.43 and later still answer a bare `/login` (no name, password or response) with a
//!   challenge; the answer logs in before 6.45.1 and fails with `invalid user name or password
//!   (6)` from 6.45.1 (see [`run`] for the sources).
//!
//! A user without the `api` policy fails like a bad password (**unverified**).
//!
//! Every attempt is logged as a router logs it (docs/reference/routeros-api.md §4; librouteros issue 38): a
//! failure as `login failure for user <name> from <address> via api` (topics
//! `system,error,critical`), a success as `user <name> logged in from <address> via api`, and the
//! end of a logged-in connection as `user <name> logged out from <address> via api` (topics
//! `system,info,account`). The name is the one the client sent, spaces and all.

use std::net::IpAddr;

use rand::RngCore;
use routeros_proto::Request;
use routeros_proto::login::legacy_response;

use super::{Outcome, Replier, Session, Trap, attr};
use crate::config::User;
use crate::memlog::NewLogEntry;
use crate::sessions::NewActiveSession;
use crate::shared::Shared;

/// The `via` of API sessions in log lines. A login over api-ssl may say otherwise on a router:
/// **unverified**.
pub(crate) const VIA: &str = "api";

/// A logged-in API session, remembered until its connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginRecord {
    pub user: String,
    pub peer: IpAddr,
    /// [`State::boot_epoch`](crate::state::State) at login.
    pub epoch: u64,
    /// Its `/user/active` row (`None` if that table was full).
    pub active: Option<u64>,
}

/// The connection of `rec` ended: drop its `/user/active` row and log the logout, unless the
/// router rebooted since (the reboot ended the session and emptied the log).
pub(crate) fn logout(shared: &Shared, rec: &LoginRecord) {
    if shared.with_state(|s| s.boot_epoch) != rec.epoch {
        return;
    }
    if let Some(id) = rec.active {
        shared.close_session(id);
    }
    shared.log(NewLogEntry::logged_out(&rec.user, rec.peer, VIA));
}

pub(crate) fn run(shared: &Shared, session: &mut Session, req: &Request, r: &Replier) -> Outcome {
    let name = attr(req, "name");
    let response = attr(req, "response");
    let version = shared.version;
    if version.legacy_login() {
        // Before 6.43 every `/login` without `=response=` gets a challenge, whatever else it
        // carries ("older versions simply ignore the additional arguments and send back the
        // challenge", astounding/mtik PR 9).
        let Some(response) = response else {
            return challenge(session, r);
        };
        let user = name.as_deref().and_then(|n| find(shared, n));
        let ok = response_matches(session, user.as_ref(), &response);
        let name = name.unwrap_or_default();
        return finish(
            shared,
            session,
            &name,
            user.filter(|_| ok),
            "cannot log in",
            r,
        );
    }
    let failure = "invalid user name or password (6)";
    let password = req.attributes.get("password");
    // 6.43+ still answers a bare `/login` with a challenge: `!done =ret=<32 hex>` on 6.47.6
    // (BenMenking/routeros-api issue 52) and 6.49.14 (akpw/mktxp issue 131). v7 is assumed to do
    // the same (**unverified**).
    if name.is_none() && password.is_none() && response.is_none() {
        return challenge(session, r);
    }
    let user = name.as_deref().and_then(|n| find(shared, n));
    let user = match (response, password) {
        // The challenge answer keeps working on 6.43 release candidates (6.43rc32:
        // socialwifi/RouterOS-api issue 29; 6.43rc56: astounding/mtik PR 9) until 6.45.1
        // "removed insecure password storage" (changelog quoted in nshttpd/mikrotik-exporter
        // issue 36); from then on it fails like a bad password (6.47.6 and 6.49.14 traces above).
        (Some(response), _) => {
            let ok = response_matches(session, user.as_ref(), &response)
                && version.accepts_challenge_response();
            user.filter(|_| ok)
        }
        (None, Some(p)) => user.filter(|u| u.password.as_bytes() == p),
        (None, None) => None,
    };
    finish(
        shared,
        session,
        name.as_deref().unwrap_or_default(),
        user,
        failure,
        r,
    )
}

/// `!done =ret=<challenge>`: 16 random bytes as 32 lower-case hex digits (librouteros
/// `docs/api_analysis.rst`; `=ret=ee8d06ab50d811c5585b85ed6680f813` in the 6.47.6 trace).
fn challenge(session: &mut Session, r: &Replier) -> Outcome {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let challenge = hex::encode(raw);
    session.challenge = Some(challenge.clone());
    Outcome::Reply(vec![r.done_ret(&challenge)])
}

/// True if `response` answers this session's challenge for `user` (§4). The challenge is used
/// up either way: it is good for one answer.
fn response_matches(session: &mut Session, user: Option<&User>, response: &str) -> bool {
    match (session.challenge.take(), user) {
        (Some(ch), Some(u)) => {
            legacy_response(ch.as_bytes(), u.password.as_bytes())
                .ok()
                .as_deref()
                == Some(response)
        }
        _ => false,
    }
}

fn find(shared: &Shared, name: &str) -> Option<User> {
    shared.config.users.iter().find(|u| u.name == name).cloned()
}

/// Ends a login attempt by `name` (as the client sent it). Both outcomes are logged like a router
/// does (`cmd::login` module doc; [`NewLogEntry::login_failure`], [`NewLogEntry::logged_in`]).
fn finish(
    shared: &Shared,
    session: &mut Session,
    name: &str,
    user: Option<User>,
    failure: &str,
    r: &Replier,
) -> Outcome {
    let peer = session.peer;
    match user.filter(|u| u.has("api") || !shared.config.enforce_policies) {
        Some(u) => {
            let epoch = shared.with_state(|s| {
                s.stats.logins += 1;
                s.boot_epoch
            });
            if let Some(peer) = peer {
                shared.log(NewLogEntry::logged_in(&u.name, peer, VIA));
                let row =
                    NewActiveSession::new(&u.name, &peer.to_string(), VIA).with_group(&u.group);
                session.login = Some(LoginRecord {
                    user: u.name.clone(),
                    peer,
                    epoch,
                    active: shared.open_session(row),
                });
            }
            session.user = Some(u);
            Outcome::Reply(vec![r.done()])
        }
        None => {
            shared.with_state(|s| s.stats.failed_logins += 1);
            if let Some(peer) = peer {
                shared.log(NewLogEntry::login_failure(name, peer, VIA));
            }
            Outcome::Close(
                r.trap_done(&Trap::new(None, failure)),
                shared.config.bad_login_close_delay,
            )
        }
    }
}
