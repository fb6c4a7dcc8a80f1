//! An async client for the MikroTik RouterOS API (binary protocol, ports 8728/8729), for tikban.
//!
//! It connects over TCP or TLS (rustls with the ring provider), logs in, and runs many tagged
//! commands at once on one connection: replies are routed by `.tag`, rows can be streamed, slow
//! commands time out and are cancelled on the router, and a lost connection surfaces as one
//! error kind.
//!
//! # What it must not do
//!
//! - **No retry or reconnect policy.** A lost connection is reported as
//!   [`Error::ConnectionLost`]; the caller decides whether and when to reconnect (and with what
//!   backoff). A router error (`!trap`) is an [`Error::Trap`] and never closes the connection.
//! - **Never log or show secrets.** The password lives in a [`SecretString`] whose `Debug` prints
//!   `[REDACTED]`; login commands redact it too; no error carries it.
//! - **No business logic.** It knows nothing about address lists, CrowdSec or diffs: it moves
//!   [`Command`]s and replies.
//! - No wire-format code: that is `routeros-proto` (re-exported here).
//!
//! # Main types
//!
//! - [`ClientConfig`], [`TlsConfig`], [`TlsTrust`] (CA certificates or SHA-256 pin),
//!   [`SecretString`] (re-exported from `secrecy`).
//! - [`Client`]: cloneable handle. [`Client::connect`], [`Client::execute`] (collects rows),
//!   [`Client::send`] (queue now, await later), [`Client::pipeline`] (many commands, results in
//!   order), [`Client::stream`] → [`RowStream`], [`Client::cancel`], [`Client::quit`].
//! - [`Response`] `{ rows, done }`; [`Error`] and [`ConnectError`].
//! - [`mux::Mux`]: the sans-IO tag/demultiplexer state machine that the driver runs.
//!
//! # Data flow
//!
//! ```text
//!  caller tasks                         driver task (one per connection)
//!  ────────────                         ─────────────────────────────────────────────
//!  execute/send/stream ─ window permit ─▶ Msg queue ─▶ Mux::register(tag) ─▶ encode ─▶ write ─▶ socket
//!        ▲                                                                                 │
//!        │ oneshot (execute)                                                               │
//!        │ bounded mpsc (RowStream)     Mux::handle_sentence ◀── Decoder ◀── read ◀────────┘
//!        └──────────────────────────── Event::{Row, Done, Fatal} (unknown/cancelled tags dropped)
//! ```
//!
//! Wire rules it relies on, from `docs/reference/routeros-api.md`: every command is tagged, so untagged
//! replies other than `!fatal` are dropped (§5); `!empty` is followed by `!done` (§3); `!trap`
//! is followed by `!done` (§3); late sentences arrive after `/cancel` and are dropped (§5).
//!
//! # Example
//!
//! ```no_run
//! use routeros_client::{Client, ClientConfig, Command, Query, TlsConfig, TlsTrust};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ClientConfig::new("192.0.2.1", "tikban", "secret");
//! config.port = 8729;
//! config.tls = Some(TlsConfig::new(TlsTrust::Fingerprint(
//!     routeros_client::parse_fingerprint("ab:cd:...")?,
//! )));
//! let client = Client::connect(config).await?;
//!
//! let add = Command::builder("/ip/firewall/address-list/add")
//!     .attr("list", "crowdsec-banned")
//!     .attr("address", "198.51.100.7")
//!     .attr("timeout", "3600s")
//!     .build()?;
//! match client.execute(add).await {
//!     Ok(response) => println!("new id {:?}", response.ret_str()),
//!     Err(e) if e.is_connection_lost() => return Err(e.into()), // reconnect elsewhere
//!     Err(e) => println!("router said no: {e}"),               // connection still fine
//! }
//!
//! let print = Command::builder("/ip/firewall/address-list/print")
//!     .proplist(&[".id", "address", "timeout"])
//!     .query(Query::Eq("list".into(), b"crowdsec-banned".to_vec()))
//!     .build()?;
//! let mut rows = client.stream(print).await?;
//! while let Some(row) = rows.next().await {
//!     let row = row?;
//!     println!("{:?}", row.get_lossy("address"));
//! }
//! client.quit().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod config;
mod conn;
mod error;
pub mod mux;
mod response;
mod tls;

pub use client::{Client, PendingResponse, RowStream};
pub use config::{
    ClientConfig, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PORT,
    DEFAULT_STREAM_BUFFER, DEFAULT_TLS_PORT, DEFAULT_WINDOW, FingerprintError, TlsConfig, TlsTrust,
    format_fingerprint, parse_fingerprint,
};
pub use error::{ConnectError, Error, LostReason};
pub use mux::{MuxStats, Tag};
pub use response::Response;
pub use secrecy::SecretString;

pub use routeros_proto::{
    self as proto, Attributes, Command, CommandBuilder, CommandError, Limits, Query, category,
};

/// Entry points for fuzz targets. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use routeros_proto::{Decoder, Limits};

    use crate::mux::{Event, Kind, Mux};

    /// Drives a [`Mux`] with operations and sentences taken from `data`, checking that it never
    /// panics and that its accounting stays consistent.
    ///
    /// Layout: byte 0 is the window; then each op byte picks register / cancel / feed. Fed bytes
    /// go through a [`Decoder`], and every sentence it yields is routed.
    pub fn mux(data: &[u8]) {
        let Some((&window, mut rest)) = data.split_first() else {
            return;
        };
        let window = usize::from(window % 8) + 1;
        let mut mux = Mux::new(window);
        let limits = Limits {
            max_word: 1024,
            max_sentence: 4096,
            max_words: 64,
        };
        let mut decoder = Decoder::new(limits);
        while let Some((&op, tail)) = rest.split_first() {
            rest = tail;
            match op % 4 {
                0 => {
                    let kind = if op & 0x80 != 0 {
                        Kind::Internal
                    } else {
                        Kind::Command
                    };
                    let _ = mux.register(u64::from(op >> 2), kind);
                }
                1 => {
                    mux.cancel(u64::from(op >> 2));
                }
                _ => {
                    let n = usize::from(op >> 2).min(rest.len());
                    let (chunk, tail) = rest.split_at(n);
                    rest = tail;
                    decoder.feed(chunk);
                    while let Ok(Some(sentence)) = decoder.poll_sentence() {
                        let before = mux.pending();
                        match mux.handle_sentence(&sentence) {
                            Ok(Some(Event::Done { tag, .. })) => {
                                assert!(!mux.is_pending(tag));
                                assert_eq!(mux.pending() + 1, before);
                            }
                            Ok(Some(Event::Fatal { failed, .. })) => {
                                assert_eq!(failed.len(), before);
                                assert!(mux.is_closed());
                            }
                            Ok(_) | Err(_) => assert_eq!(mux.pending(), before),
                        }
                    }
                }
            }
            assert!(mux.in_flight() <= mux.window());
            assert!(mux.in_flight() <= mux.pending());
        }
    }
}

#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn mux_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::fuzzing::mux(&data);
        }

        /// Sentences built from reply-like words exercise the routing paths more than random
        /// bytes do.
        #[test]
        fn mux_never_panics_on_reply_shaped_input(
            ops in proptest::collection::vec((0u8..6, 0u64..6, 0u8..4), 0..64)
        ) {
            let mut data = vec![2u8];
            for (kind, tag, extra) in ops {
                let words: Vec<Vec<u8>> = match kind {
                    0 => { data.push((tag as u8) << 2); continue; }
                    1 => { data.push(((tag as u8) << 2) | 1); continue; }
                    2 => vec![b"!re".to_vec(), b"=a=b".to_vec(), format!(".tag={tag}").into_bytes()],
                    3 => vec![b"!trap".to_vec(), format!("=category={extra}").into_bytes(), format!(".tag={tag}").into_bytes()],
                    4 => vec![if extra == 0 { b"!empty".to_vec() } else { b"!done".to_vec() }, format!(".tag={tag}").into_bytes()],
                    _ => vec![b"!fatal".to_vec(), b"bye".to_vec()],
                };
                let bytes = routeros_proto::Sentence::new(words).to_bytes();
                for chunk in bytes.chunks(63) {
                    data.push(((chunk.len() as u8) << 2) | 2);
                    data.extend_from_slice(chunk);
                }
            }
            super::fuzzing::mux(&data);
        }
    }
}
