//! Tag bookkeeping and reply demultiplexing: the sans-IO core of the client.
//!
//! [`Mux`] knows which tags are in flight and turns each reply sentence into at most one
//! [`Event`] for the command it belongs to. It has no sockets, no channels and no clock, so every
//! routing rule is unit-tested with plain sentences and fuzzed through [`crate::fuzzing`].
//!
//! Call order: [`Mux::register`] each command before its bytes are written; feed every decoded
//! sentence to [`Mux::handle_sentence`]; call [`Mux::cancel`] when a caller abandons a command
//! (timeout, dropped stream) so that its late sentences are dropped; call [`Mux::fail_all`] when
//! the connection dies.
//!
//! Wire rules applied here (`docs/reference/routeros-api.md`):
//! - every reply of a tagged command carries its `.tag`; replies of different tags interleave
//!   (§5), so routing is by tag only;
//! - `!empty` means "no rows" and is **followed by `!done`** (§3): it never completes a command;
//! - `!trap` is **followed by `!done`**, and one command may trap several times before it (§3);
//! - `!fatal` has no tag and means the router is closing the connection (§3);
//! - 2–3 sentences of a cancelled tag still arrive after `/cancel` (§5): they are dropped, like
//!   sentences for tags never issued.

use std::collections::{HashMap, HashSet, VecDeque};

use routeros_proto::{Attributes, Reply, ReplyError, ReplyKind, Sentence, lossy};

/// A command tag. The client numbers commands from a counter and sends the decimal form as
/// `.tag=N`; a tag is never reused on one connection.
pub type Tag = u64;

/// How many abandoned tags are remembered to tell "late" from "unknown" sentences. Older ones
/// are forgotten; their sentences are then counted as unknown, and dropped all the same.
const MAX_REMEMBERED_CANCELLED: usize = 4096;

/// Whether a command counts against the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A caller's command: holds one of the `window` slots.
    Command,
    /// A command the client sends on its own (`/cancel` after a timeout, `/quit`). It must not
    /// wait for a slot, or a window full of stuck commands could never be cancelled.
    Internal,
}

/// One `!trap` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// `=category=` (`docs/reference/routeros-api.md` §3), if present and numeric.
    pub category: Option<u32>,
    /// `=message=`, decoded lossily (messages are for people).
    pub message: String,
}

/// Why a command ended with an error: the traps it received before its `!done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traps {
    /// The first trap.
    pub first: Trap,
    /// How many traps arrived in total (at least 1).
    pub count: usize,
}

/// What a sentence meant for the commands in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `!re` data row for `tag`.
    Row {
        /// The command.
        tag: Tag,
        /// The row's attributes.
        row: Attributes,
    },
    /// `!done` for `tag`: the command is complete and its tag is free.
    Done {
        /// The command.
        tag: Tag,
        /// Whether it was registered as a caller's command or an internal one.
        kind: Kind,
        /// The `!done` attributes (e.g. `=ret=`), or the traps received before it.
        outcome: Result<Attributes, Traps>,
    },
    /// `!fatal`: the router is closing the connection. Every pending command has failed.
    Fatal {
        /// The bare reason word (e.g. `session terminated on request`), lossily decoded.
        reason: String,
        /// The tags that were pending, now failed.
        failed: Vec<Tag>,
    },
}

/// Why [`Mux::register`] refused a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// `window` caller commands are already in flight.
    #[error("window of {window} commands is full")]
    WindowFull {
        /// The window.
        window: usize,
    },
    /// The tag is already in flight.
    #[error("tag {0} is already in flight")]
    DuplicateTag(Tag),
    /// The connection has failed or closed.
    #[error("connection is closed")]
    Closed,
}

/// Counters of sentences that reached no command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// Sentences routed to a pending command.
    pub routed: u64,
    /// Sentences whose tag was never issued, is finished, or is not a number.
    pub dropped_unknown_tag: u64,
    /// Late sentences of a command the caller abandoned (`docs/reference/routeros-api.md` §5).
    pub dropped_cancelled: u64,
    /// Sentences without a tag, other than `!fatal`. The client tags every command, so these
    /// are unexpected; they are logged at debug level and dropped.
    pub dropped_untagged: u64,
    /// Sentences that arrived after the connection was declared dead.
    pub dropped_after_close: u64,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    traps: Vec<Trap>,
    saw_empty: bool,
}

/// The demultiplexer: tag → pending command, and the rules that route replies.
#[derive(Debug)]
pub struct Mux {
    window: usize,
    in_flight: usize,
    pending: HashMap<Tag, Pending>,
    cancelled: HashSet<Tag>,
    cancelled_order: VecDeque<Tag>,
    closed: bool,
    stats: MuxStats,
}

// === impl Mux ===

impl Mux {
    /// A demultiplexer that allows `window` caller commands in flight (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            in_flight: 0,
            pending: HashMap::new(),
            cancelled: HashSet::new(),
            cancelled_order: VecDeque::new(),
            closed: false,
            stats: MuxStats::default(),
        }
    }

    /// The window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Caller commands in flight (internal ones excluded).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every command in flight, internal ones included.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// True when `tag` is in flight.
    pub fn is_pending(&self, tag: Tag) -> bool {
        self.pending.contains_key(&tag)
    }

    /// True once [`Mux::fail_all`] ran or a `!fatal` arrived.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Counters of dropped and routed sentences.
    pub fn stats(&self) -> MuxStats {
        self.stats
    }

    /// Records that `tag` is about to be sent.
    pub fn register(&mut self, tag: Tag, kind: Kind) -> Result<(), RegisterError> {
        if self.closed {
            return Err(RegisterError::Closed);
        }
        if self.pending.contains_key(&tag) {
            return Err(RegisterError::DuplicateTag(tag));
        }
        if kind == Kind::Command {
            if self.in_flight >= self.window {
                return Err(RegisterError::WindowFull {
                    window: self.window,
                });
            }
            self.in_flight += 1;
        }
        self.pending.insert(
            tag,
            Pending {
                kind,
                traps: Vec::new(),
                saw_empty: false,
            },
        );
        Ok(())
    }

    /// Abandons `tag`: it leaves the window now, and its late sentences (the router's
    /// `!trap interrupted`, `!empty`, `!done` after `/cancel`, `docs/reference/routeros-api.md` §5) are dropped.
    /// Returns false if `tag` was not in flight (it finished already, or never existed).
    pub fn cancel(&mut self, tag: Tag) -> bool {
        if self.remove(tag).is_none() {
            return false;
        }
        if self.cancelled.insert(tag) {
            self.cancelled_order.push_back(tag);
            if self.cancelled_order.len() > MAX_REMEMBERED_CANCELLED
                && let Some(old) = self.cancelled_order.pop_front()
            {
                self.cancelled.remove(&old);
            }
        }
        true
    }

    /// Declares the connection dead: returns every pending tag (they have all failed) and
    /// refuses further registrations.
    pub fn fail_all(&mut self) -> Vec<Tag> {
        self.closed = true;
        self.in_flight = 0;
        let mut tags: Vec<Tag> = self.pending.drain().map(|(t, _)| t).collect();
        tags.sort_unstable();
        tags
    }

    /// Routes one sentence received from the router.
    ///
    /// `Ok(None)` means the sentence was consumed without completing anything (a dropped
    /// sentence, a `!trap` or `!empty` waiting for its `!done`). An `Err` means the sentence is
    /// not a reply at all; the stream cannot be trusted any more and the caller must close the
    /// connection.
    pub fn handle_sentence(&mut self, sentence: &Sentence) -> Result<Option<Event>, ReplyError> {
        if self.closed {
            self.stats.dropped_after_close += 1;
            return Ok(None);
        }
        let reply = Reply::parse(sentence)?;
        if reply.kind == ReplyKind::Fatal {
            // `!fatal` carries no tag (docs/reference/routeros-api.md §3); a tagged one means the same thing.
            let reason = reply
                .fatal_reason()
                .map(|r| lossy(r).into_owned())
                .unwrap_or_default();
            let failed = self.fail_all();
            return Ok(Some(Event::Fatal { reason, failed }));
        }
        let Some(raw_tag) = reply.tag.as_deref() else {
            self.stats.dropped_untagged += 1;
            tracing::debug!(kind = reply.kind.word(), "dropping untagged reply");
            return Ok(None);
        };
        let Some(tag) = parse_tag(raw_tag) else {
            self.stats.dropped_unknown_tag += 1;
            return Ok(None);
        };
        let Some(pending) = self.pending.get_mut(&tag) else {
            if reply.kind == ReplyKind::Done && self.cancelled.remove(&tag) {
                // The last sentence of an abandoned command: forget it.
                self.cancelled_order.retain(|t| *t != tag);
                self.stats.dropped_cancelled += 1;
            } else if self.cancelled.contains(&tag) {
                self.stats.dropped_cancelled += 1;
            } else {
                self.stats.dropped_unknown_tag += 1;
            }
            return Ok(None);
        };
        self.stats.routed += 1;
        match reply.kind {
            ReplyKind::Re => Ok(Some(Event::Row {
                tag,
                row: reply.attributes,
            })),
            ReplyKind::Empty => {
                // Zero rows; `!done` follows (docs/reference/routeros-api.md §3).
                pending.saw_empty = true;
                Ok(None)
            }
            ReplyKind::Trap => {
                pending.traps.push(Trap {
                    category: reply.category(),
                    message: reply
                        .message()
                        .map(|m| lossy(m).into_owned())
                        .unwrap_or_default(),
                });
                Ok(None)
            }
            ReplyKind::Done => {
                let Some(p) = self.remove(tag) else {
                    return Ok(None);
                };
                let outcome = match p.traps.first() {
                    None => Ok(reply.attributes),
                    Some(first) => Err(Traps {
                        first: first.clone(),
                        count: p.traps.len(),
                    }),
                };
                Ok(Some(Event::Done {
                    tag,
                    kind: p.kind,
                    outcome,
                }))
            }
            // Handled above; kept for exhaustiveness.
            ReplyKind::Fatal => Ok(None),
        }
    }

    fn remove(&mut self, tag: Tag) -> Option<Pending> {
        let p = self.pending.remove(&tag)?;
        if p.kind == Kind::Command {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        Some(p)
    }
}

/// Parses a `.tag` value the client issued: plain decimal, no sign, no leading `+`.
fn parse_tag(raw: &[u8]) -> Option<Tag> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &[&str]) -> Sentence {
        Sentence::new(words.iter().map(|w| w.as_bytes().to_vec()).collect())
    }

    fn done_ok(ev: Option<Event>) -> (Tag, Attributes) {
        match ev {
            Some(Event::Done {
                tag,
                outcome: Ok(a),
                ..
            }) => (tag, a),
            other => panic!("expected ok done, got {other:?}"),
        }
    }

    #[test]
    fn routes_interleaved_replies_by_tag() {
        let mut m = Mux::new(4);
        m.register(1, Kind::Command).unwrap();
        m.register(2, Kind::Command).unwrap();
        let ev = m.handle_sentence(&s(&["!re", "=a=1", ".tag=2"])).unwrap();
        assert!(matches!(ev, Some(Event::Row { tag: 2, .. })));
        let ev = m.handle_sentence(&s(&["!re", "=a=2", ".tag=1"])).unwrap();
        match ev {
            Some(Event::Row { tag: 1, row }) => assert_eq!(row.get_str("a"), Some("2")),
            other => panic!("{other:?}"),
        }
        let (tag, done) = done_ok(
            m.handle_sentence(&s(&["!done", "=ret=*1A", ".tag=1"]))
                .unwrap(),
        );
        assert_eq!((tag, done.get_str("ret")), (1, Some("*1A")));
        assert_eq!(m.in_flight(), 1);
        done_ok(m.handle_sentence(&s(&["!done", ".tag=2"])).unwrap());
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.stats().routed, 4);
    }

    #[test]
    fn drops_unknown_and_malformed_tags() {
        let mut m = Mux::new(2);
        m.register(1, Kind::Command).unwrap();
        for words in [
            &["!re", "=a=1", ".tag=99"][..],
            &["!done", ".tag=99"],
            &["!done", ".tag=x1"],
            &["!done", ".tag=-1"],
            &["!done", ".tag="],
            &["!done", ".tag=999999999999999999999999"],
        ] {
            assert_eq!(m.handle_sentence(&s(words)).unwrap(), None, "{words:?}");
        }
        assert_eq!(m.stats().dropped_unknown_tag, 6);
        assert!(m.is_pending(1));
    }

    #[test]
    fn drops_untagged_replies_other_than_fatal() {
        let mut m = Mux::new(2);
        m.register(1, Kind::Command).unwrap();
        assert_eq!(m.handle_sentence(&s(&["!done"])).unwrap(), None);
        assert_eq!(m.handle_sentence(&s(&["!re", "=a=b"])).unwrap(), None);
        assert_eq!(m.stats().dropped_untagged, 2);
        assert!(m.is_pending(1));
    }

    #[test]
    fn trap_then_done_completes_with_error_keeping_category_and_message() {
        let mut m = Mux::new(2);
        m.register(5, Kind::Command).unwrap();
        let trap = s(&[
            "!trap",
            "=category=1",
            "=message=failure: already have such entry",
            ".tag=5",
        ]);
        assert_eq!(m.handle_sentence(&trap).unwrap(), None);
        assert!(
            m.is_pending(5),
            "a trap alone must not complete the command"
        );
        match m.handle_sentence(&s(&["!done", ".tag=5"])).unwrap() {
            Some(Event::Done {
                tag: 5,
                outcome: Err(traps),
                ..
            }) => {
                assert_eq!(traps.count, 1);
                assert_eq!(traps.first.category, Some(1));
                assert_eq!(traps.first.message, "failure: already have such entry");
            }
            other => panic!("{other:?}"),
        }
        assert!(!m.is_closed());
    }

    #[test]
    fn several_traps_keep_the_first_and_count() {
        let mut m = Mux::new(1);
        m.register(1, Kind::Command).unwrap();
        m.handle_sentence(&s(&["!trap", "=message=first", ".tag=1"]))
            .unwrap();
        m.handle_sentence(&s(&["!trap", "=category=4", "=message=second", ".tag=1"]))
            .unwrap();
        match m.handle_sentence(&s(&["!done", ".tag=1"])).unwrap() {
            Some(Event::Done {
                outcome: Err(t), ..
            }) => {
                assert_eq!(t.count, 2);
                assert_eq!(t.first.message, "first");
                assert_eq!(t.first.category, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_means_zero_rows_and_waits_for_done() {
        let mut m = Mux::new(1);
        m.register(3, Kind::Command).unwrap();
        assert_eq!(m.handle_sentence(&s(&["!empty", ".tag=3"])).unwrap(), None);
        assert!(m.is_pending(3), "!empty must not complete the command");
        assert_eq!(m.in_flight(), 1);
        let (tag, done) = done_ok(m.handle_sentence(&s(&["!done", ".tag=3"])).unwrap());
        assert_eq!(tag, 3);
        assert!(done.is_empty());
    }

    #[test]
    fn fatal_fails_every_pending_command_and_closes() {
        let mut m = Mux::new(4);
        m.register(1, Kind::Command).unwrap();
        m.register(2, Kind::Command).unwrap();
        m.register(3, Kind::Internal).unwrap();
        match m
            .handle_sentence(&s(&["!fatal", "session terminated on request"]))
            .unwrap()
        {
            Some(Event::Fatal { reason, failed }) => {
                assert_eq!(reason, "session terminated on request");
                assert_eq!(failed, vec![1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
        assert!(m.is_closed());
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.register(4, Kind::Command), Err(RegisterError::Closed));
        assert_eq!(m.handle_sentence(&s(&["!done", ".tag=1"])).unwrap(), None);
        assert_eq!(m.stats().dropped_after_close, 1);
    }

    #[test]
    fn cancelled_tag_late_sentences_are_dropped() {
        let mut m = Mux::new(2);
        m.register(7, Kind::Command).unwrap();
        m.handle_sentence(&s(&["!re", "=a=1", ".tag=7"])).unwrap();
        assert!(m.cancel(7));
        assert_eq!(
            m.in_flight(),
            0,
            "an abandoned command leaves the window at once"
        );
        // What the router sends after `/cancel` (docs/reference/routeros-api.md §5), plus a late row.
        for words in [
            &["!re", "=a=2", ".tag=7"][..],
            &["!trap", "=category=2", "=message=interrupted", ".tag=7"],
            &["!empty", ".tag=7"],
            &["!done", ".tag=7"],
        ] {
            assert_eq!(m.handle_sentence(&s(words)).unwrap(), None);
        }
        assert_eq!(m.stats().dropped_cancelled, 4);
        // Once its `!done` is seen, the tag is forgotten: anything more is just unknown.
        assert_eq!(m.handle_sentence(&s(&["!done", ".tag=7"])).unwrap(), None);
        assert_eq!(m.stats().dropped_unknown_tag, 1);
        assert!(!m.cancel(7), "cancelling twice is a no-op");
    }

    #[test]
    fn window_accounting_counts_only_caller_commands() {
        let mut m = Mux::new(2);
        m.register(1, Kind::Command).unwrap();
        m.register(2, Kind::Command).unwrap();
        assert_eq!(
            m.register(3, Kind::Command),
            Err(RegisterError::WindowFull { window: 2 })
        );
        // Internal commands (`/cancel`) never wait for a slot.
        m.register(4, Kind::Internal).unwrap();
        assert_eq!(m.in_flight(), 2);
        assert_eq!(m.pending(), 3);
        assert_eq!(
            m.register(4, Kind::Internal),
            Err(RegisterError::DuplicateTag(4))
        );
        done_ok(m.handle_sentence(&s(&["!done", ".tag=1"])).unwrap());
        assert_eq!(m.in_flight(), 1);
        m.register(3, Kind::Command).unwrap();
        match m.handle_sentence(&s(&["!done", ".tag=4"])).unwrap() {
            Some(Event::Done {
                kind: Kind::Internal,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(m.in_flight(), 2);
        assert_eq!(Mux::new(0).window(), 1);
    }

    #[test]
    fn unparseable_reply_is_an_error() {
        let mut m = Mux::new(1);
        m.register(1, Kind::Command).unwrap();
        assert!(m.handle_sentence(&s(&["!bogus", ".tag=1"])).is_err());
        assert!(m.handle_sentence(&s(&["!re", "bare", ".tag=1"])).is_err());
    }

    #[test]
    fn remembered_cancelled_tags_are_bounded() {
        let mut m = Mux::new(1);
        for t in 0..(MAX_REMEMBERED_CANCELLED as u64 + 10) {
            m.register(t, Kind::Command).unwrap();
            assert!(m.cancel(t));
        }
        assert_eq!(m.cancelled.len(), MAX_REMEMBERED_CANCELLED);
        assert_eq!(m.cancelled_order.len(), MAX_REMEMBERED_CANCELLED);
    }
}
