//! `/login` (`routeros-api.md` §4).
//!
//! - 6.43+ and v7: `/login =name= =password=` → `!done`; bad credentials → `!trap
//!   =message=invalid user name or password (6)` then `!done` (go-routeros
//!   `TestLoginIncorrectPost643`), then the sim closes the socket after
//!   [`SimConfig::bad_login_close_delay`](crate::SimConfig::bad_login_close_delay) (the real
//!   socket state is **unverified**).
//! - Before 6.43: any `/login` without `=response=` → `!done =ret=<hex challenge>`; then
//!   `=name= =response=` is checked with [`legacy_response`]; a bad one traps `cannot log in`.
//!
//! A user without the `api` policy fails like a bad password (**unverified**).

use rand::RngCore;
use routeros_proto::Request;
use routeros_proto::login::legacy_response;

use super::{Outcome, Replier, Session, Trap, attr};
use crate::config::User;
use crate::shared::Shared;

pub(crate) fn run(shared: &Shared, session: &mut Session, req: &Request, r: &Replier) -> Outcome {
    let name = attr(req, "name");
    if shared.version.legacy_login() {
        let Some(response) = attr(req, "response") else {
            let mut raw = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut raw);
            let challenge = hex::encode(raw);
            session.challenge = Some(challenge.clone());
            return Outcome::Reply(vec![r.done_ret(&challenge)]);
        };
        let user = name.as_deref().and_then(|n| find(shared, n));
        let ok = match (&user, session.challenge.take()) {
            (Some(u), Some(ch)) => {
                legacy_response(ch.as_bytes(), u.password.as_bytes()).ok() == Some(response)
            }
            _ => false,
        };
        return finish(shared, session, user.filter(|_| ok), "cannot log in", r);
    }
    let user = match (name.as_deref(), req.attributes.get("password")) {
        (Some(n), Some(p)) => find(shared, n).filter(|u| u.password.as_bytes() == p),
        _ => None,
    };
    finish(
        shared,
        session,
        user,
        "invalid user name or password (6)",
        r,
    )
}

fn find(shared: &Shared, name: &str) -> Option<User> {
    shared.config.users.iter().find(|u| u.name == name).cloned()
}

fn finish(
    shared: &Shared,
    session: &mut Session,
    user: Option<User>,
    failure: &str,
    r: &Replier,
) -> Outcome {
    match user.filter(|u| u.has("api") || !shared.config.enforce_policies) {
        Some(u) => {
            shared.with_state(|s| s.stats.logins += 1);
            session.user = Some(u);
            Outcome::Reply(vec![r.done()])
        }
        None => {
            shared.with_state(|s| s.stats.failed_logins += 1);
            Outcome::Close(
                r.trap_done(&Trap::new(None, failure)),
                shared.config.bad_login_close_delay,
            )
        }
    }
}
