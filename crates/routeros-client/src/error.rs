//! Errors: one enum per operation ([`ConnectError`] for connecting, [`Error`] for commands).
//!
//! None of them ever holds the password: login errors carry the router's message only.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use routeros_proto::{CommandError, DecodeError, ReplyError, category};

use crate::mux::Traps;

/// A command failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The router answered `!trap` (then `!done`). The connection is fine: this is a device
    /// error such as `failure: already have such entry` (`docs/reference/routeros-api.md` §9), not a reason to
    /// reconnect.
    #[error("router error{}: {}{}", fmt_category(*.category), Peer(.message), fmt_more(*.count))]
    Trap {
        /// `=category=` (`docs/reference/routeros-api.md` §3): 0 missing item, 1 argument value, 2 interrupted,
        /// 3 scripting, 4 general, 5 API, 6 TTY, 7 `:return`.
        category: Option<u32>,
        /// `=message=` of the first trap, decoded lossily, as the router sent it (match on it
        /// freely; `Display` escapes it).
        message: String,
        /// How many traps the command received before `!done` (at least 1).
        count: usize,
    },
    /// The connection is gone. This is the one error to match on to reconnect: socket EOF, I/O
    /// error, `!fatal`, undecodable bytes, an unparseable reply, `/quit`, or a dropped driver.
    #[error("connection to the router lost: {reason}")]
    ConnectionLost {
        /// What happened.
        reason: LostReason,
    },
    /// The command got no `!done` within [`crate::ClientConfig::command_timeout`]. It was
    /// cancelled on the router with `/cancel`; its late replies are dropped. The connection
    /// stays up.
    #[error("command timed out after {after:?} and was cancelled")]
    Timeout {
        /// The timeout in force.
        after: Duration,
    },
    /// The command could not be tagged (a bug: tags are never empty).
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl Error {
    /// True for [`Error::ConnectionLost`]: the caller should reconnect.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Error::ConnectionLost { .. })
    }

    /// True for a `!trap` of category 2, "execution of command interrupted" (the reply of a
    /// command cancelled with [`crate::Client::cancel`]).
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            Error::Trap {
                category: Some(category::INTERRUPTED),
                ..
            }
        )
    }

    pub(crate) fn from_traps(t: Traps) -> Self {
        Error::Trap {
            category: t.first.category,
            message: t.first.message,
            count: t.count,
        }
    }

    pub(crate) fn lost(reason: LostReason) -> Self {
        Error::ConnectionLost { reason }
    }
}

/// Longest piece of router text an error prints, in characters.
const MAX_PEER_TEXT: usize = 256;

/// Router text (trap messages, `!fatal` reasons) as errors print it: control and invisible
/// characters escaped as with [`char::escape_debug`] (quotes left alone), so a `\n` cannot forge
/// a log line nor an ANSI escape reach a terminal, and at most [`MAX_PEER_TEXT`] characters.
struct Peer<'a>(&'a str);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_PEER_TEXT {
                return f.write_str("…");
            }
            if c == '"' || c == '\'' {
                fmt::Write::write_char(f, c)?;
            } else {
                fmt::Display::fmt(&c.escape_debug(), f)?;
            }
        }
        Ok(())
    }
}

fn fmt_category(c: Option<u32>) -> String {
    c.map(|c| format!(" (category {c})")).unwrap_or_default()
}

fn fmt_more(count: usize) -> String {
    if count > 1 {
        format!(" (and {} more traps)", count - 1)
    } else {
        String::new()
    }
}

/// Why a connection was lost.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LostReason {
    /// The router closed the socket.
    Eof,
    /// A socket read or write failed.
    Io(Arc<io::Error>),
    /// The router sent `!fatal` with this reason.
    Fatal(String),
    /// The byte stream could not be decoded (`docs/reference/routeros-api.md` §1).
    Decode(DecodeError),
    /// A sentence is not a valid reply (unknown reply word, stray bare word).
    Protocol(ReplyError),
    /// The connection was closed by [`crate::Client::quit`], or the last handle was dropped.
    Closed,
    /// The connection task ended without saying why (it panicked, or the runtime shut down).
    DriverGone,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::Eof => f.write_str("the router closed the connection"),
            LostReason::Io(e) => write!(f, "I/O error: {e}"),
            LostReason::Fatal(r) => write!(f, "the router sent !fatal: {}", Peer(r)),
            LostReason::Decode(e) => write!(f, "undecodable bytes from the router: {e}"),
            LostReason::Protocol(e) => write!(f, "invalid reply from the router: {e}"),
            LostReason::Closed => f.write_str("the connection was closed"),
            LostReason::DriverGone => f.write_str("the connection task stopped"),
        }
    }
}

/// Connecting (TCP, TLS, login) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Connect, handshake and login did not finish within
    /// [`crate::ClientConfig::connect_timeout`].
    #[error("connecting to the router timed out after {after:?}")]
    Timeout {
        /// The timeout in force.
        after: Duration,
    },
    /// The TLS settings are unusable (unreadable CA file, no certificate in the PEM, bad server
    /// name).
    #[error("invalid TLS configuration: {0}")]
    TlsConfig(String),
    /// The TLS handshake failed for another reason (certificate not trusted, name mismatch,
    /// connection closed during the handshake).
    #[error("TLS handshake with the router failed: {0}")]
    Tls(String),
    /// The router's api-ssl service speaks only anonymous Diffie-Hellman (`docs/reference/routeros-api.md` §8).
    #[error(
        "the router's api-ssl service has no certificate (anonymous DH), which rustls cannot \
         speak; give the api-ssl service a certificate (/ip service set api-ssl \
         certificate=...) or use plain API on port 8728 over the container veth \
         (TLS error: {detail})"
    )]
    AnonymousDhNotSupported {
        /// The TLS error that revealed it.
        detail: String,
    },
    /// The router's certificate does not match the pinned SHA-256 fingerprint.
    #[error(
        "the router's certificate fingerprint (SHA-256 {got}) does not match the pinned {expected}; \
         check /certificate print on the router, or update the pin if the certificate was renewed"
    )]
    FingerprintMismatch {
        /// The pin, lowercase hex.
        expected: String,
        /// SHA-256 of the certificate the router presented, lowercase hex.
        got: String,
    },
    /// The router refused the credentials (`!trap` to `/login`).
    #[error("login refused by the router: {}", Peer(.message))]
    LoginFailed {
        /// The router's message, e.g. `invalid user name or password (6)`.
        message: String,
    },
    /// The router answered `/login` with something that is not a login reply.
    #[error("unexpected login reply: {}", Peer(.0))]
    Protocol(String),
    /// The connection broke during login.
    #[error("connection lost during login: {reason}")]
    ConnectionLost {
        /// What happened.
        reason: LostReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_display_keeps_category_message_and_count() {
        let e = Error::Trap {
            category: Some(1),
            message: "failure: already have such entry".into(),
            count: 1,
        };
        assert_eq!(
            e.to_string(),
            "router error (category 1): failure: already have such entry"
        );
        let e = Error::Trap {
            category: None,
            message: "x".into(),
            count: 3,
        };
        assert_eq!(e.to_string(), "router error: x (and 2 more traps)");
        assert!(!e.is_connection_lost());
    }

    #[test]
    fn router_text_is_escaped_and_bounded_in_every_error() {
        let hostile = format!("bad\nINFO forged line\u{1b}[31m{}", "x".repeat(1000));
        let texts = [
            Error::Trap {
                category: Some(1),
                message: hostile.clone(),
                count: 1,
            }
            .to_string(),
            Error::lost(LostReason::Fatal(hostile.clone())).to_string(),
            ConnectError::LoginFailed {
                message: hostile.clone(),
            }
            .to_string(),
            ConnectError::Protocol(hostile.clone()).to_string(),
        ];
        for t in texts {
            assert!(!t.contains('\n') && !t.contains('\u{1b}'), "{t:?}");
            assert!(t.contains("bad\\nINFO forged line\\u{1b}[31m"), "{t}");
            assert!(t.chars().count() < 400, "{} chars", t.chars().count());
        }
    }

    #[test]
    fn anonymous_dh_message_names_the_fix() {
        let e = ConnectError::AnonymousDhNotSupported {
            detail: "received fatal alert: HandshakeFailure".into(),
        };
        let text = e.to_string();
        assert!(text.contains("anonymous DH"), "{text}");
        assert!(
            text.contains("/ip service set api-ssl certificate="),
            "{text}"
        );
        assert!(text.contains("8728"), "{text}");
    }
}
