//! A sans-IO codec for the MikroTik RouterOS API (the binary protocol on ports 8728/8729).
//!
//! This crate turns bytes into typed replies and typed commands into bytes. It does **no I/O**:
//! no sockets, no tokio, no clock. The caller reads from its transport, feeds the bytes in and
//! writes out what the encoders append to its own buffers. That keeps every framing rule testable
//! with plain byte vectors, fuzzable, and shared by the async client and the router emulator.
//! It must never panic on bytes from the network, and never allocate beyond the configured
//! [`Limits`] whatever a peer claims.
//!
//! # The model: words → sentences → replies
//!
//! ```text
//!  bytes ──feed──▶ Decoder ──poll_sentence──▶ Sentence ──Reply::parse──▶ Reply { kind, tag, attributes }
//!                   (length prefixes,           (Vec of                   (!re !done !trap
//!                    limits, any chunking)       byte words)               !fatal !empty)
//!
//!  Command::builder(path).attr(..).query(..).tag(..).build()? ──encode──▶ bytes
//! ```
//!
//! - A **word** is a length prefix (1 to 5 bytes, [`length`]) and that many bytes. Words are bytes,
//!   never `String`: RouterOS declares no charset (`docs/reference/routeros-api.md` §7). [`lossy`] decodes for
//!   display only.
//! - A **sentence** is words ended by a zero-length word ([`Sentence`]). [`Decoder`] assembles them
//!   from arbitrary chunks and enforces [`Limits`].
//! - A **reply** is a sentence from the router, typed by its first word ([`Reply`],
//!   [`ReplyKind`]). Unknown first words are a [`ReplyError`], not a panic.
//! - A **command** is built with [`Command::builder`], which rejects paths and names that would
//!   corrupt the sentence. [`Request`] reads one back (what the emulator does).
//! - [`login`] holds the login sentences and the legacy MD5 challenge response.
//!
//! # Example
//!
//! ```
//! use routeros_proto::{Command, Decoder, Limits, Reply, ReplyKind};
//!
//! // Encode a tagged add.
//! let add = Command::builder("/ip/firewall/address-list/add")
//!     .attr("list", "crowdsec-banned")
//!     .attr("address", "192.0.2.1")
//!     .attr("timeout", "3600s")
//!     .tag("1")
//!     .build()?;
//! let mut wire = Vec::new();
//! add.encode(&mut wire);
//!
//! // Decode the router's answer, however it was chunked.
//! let mut decoder = Decoder::new(Limits::default());
//! decoder.feed(b"\x05!done\x08=ret=*1A");
//! assert!(decoder.poll_sentence()?.is_none()); // needs more bytes
//! decoder.feed(b"\x06.tag=1\x00");
//! let reply = Reply::parse(&decoder.poll_sentence()?.unwrap())?;
//! assert_eq!(reply.kind, ReplyKind::Done);
//! assert_eq!(reply.ret(), Some(&b"*1A"[..]));
//! assert_eq!(reply.tag_str(), Some("1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod command;
mod decoder;
pub mod length;
pub mod login;
mod reply;
mod sentence;

pub use command::{Command, CommandBuilder, CommandError, Query, Request, RequestError};
pub use decoder::{DecodeError, Decoder, Limits};
pub use length::LengthError;
pub use reply::{Attributes, Reply, ReplyError, ReplyKind, category};
pub use sentence::{Sentence, encode_words, lossy};

/// Entry points for fuzz targets. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{Decoder, Limits, Reply, Sentence};

    /// Feeds `data` to a decoder in chunks whose sizes come from the data itself, parses every
    /// sentence as a reply, and checks the invariants: no panic, bounded buffering, and that
    /// re-encoding a decoded sentence decodes to the same sentence.
    pub fn decode(data: &[u8]) {
        let limits = Limits {
            max_word: 4096,
            max_sentence: 16 * 1024,
            max_words: 256,
        };
        let (split, body) = match data.split_first() {
            Some((s, b)) => (usize::from(*s % 16) + 1, b),
            None => return,
        };
        let mut dec = Decoder::new(limits);
        for chunk in body.chunks(split) {
            dec.feed(chunk);
            loop {
                match dec.poll_sentence() {
                    Ok(Some(sentence)) => check(&sentence, limits),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            assert!(dec.buffered() <= body.len());
        }
    }

    fn check(sentence: &Sentence, limits: Limits) {
        assert!(!sentence.is_empty());
        let _ = Reply::parse(sentence);
        let mut again = Decoder::new(limits);
        again.feed(&sentence.to_bytes());
        assert_eq!(again.poll_sentence(), Ok(Some(sentence.clone())));
    }
}
