//! Typed replies: `!re`, `!done`, `!trap`, `!fatal`, `!empty` (`docs/reference/routeros-api.md` §3).

use std::fmt;

use thiserror::Error;

use crate::sentence::{Sentence, lossy};

/// Attribute words (`=name=value`) of a sentence, in arrival order.
///
/// A word is split at the first `=` after the leading one; the value may be empty and may itself
/// contain `=` (`docs/reference/routeros-api.md` §2). `=key` with no second `=` is a key with an empty value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the first attribute named `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key` as text, if it is valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `key` decoded lossily (invalid UTF-8 becomes U+FFFD). Meant for comments and
    /// messages shown to people.
    pub fn get_lossy(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get(key).map(lossy)
    }

    /// All pairs, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Adds a pair.
    pub fn push(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Splits an attribute word `=name=value` into `(name, value)`.
    pub fn split_word(word: &[u8]) -> Option<(&[u8], &[u8])> {
        let rest = word.strip_prefix(b"=")?;
        Some(match rest.iter().position(|&b| b == b'=') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        })
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.pairs {
            if k == b"password" || k == b"response" {
                map.entry(&lossy(k), &"<redacted>");
            } else {
                map.entry(&lossy(k), &lossy(v));
            }
        }
        map.finish()
    }
}

/// The kind of a reply, from its first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `!re`: one data row.
    Re,
    /// `!done`: the last reply of every command.
    Done,
    /// `!trap`: an error; `!done` follows.
    Trap,
    /// `!fatal`: the router closes the connection.
    Fatal,
    /// `!empty`: a command with no data (RouterOS 7.18+); `!done` follows.
    Empty,
}

impl ReplyKind {
    /// The reply word, e.g. `!done`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Re => "!re",
            Self::Done => "!done",
            Self::Trap => "!trap",
            Self::Fatal => "!fatal",
            Self::Empty => "!empty",
        }
    }

    fn from_word(word: &[u8]) -> Option<Self> {
        Some(match word {
            b"!re" => Self::Re,
            b"!done" => Self::Done,
            b"!trap" => Self::Trap,
            b"!fatal" => Self::Fatal,
            b"!empty" => Self::Empty,
            _ => return None,
        })
    }
}

/// A reply sentence, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What kind of reply this is.
    pub kind: ReplyKind,
    /// The `.tag` API attribute, routing the reply to its command (`docs/reference/routeros-api.md` §5).
    pub tag: Option<Vec<u8>>,
    /// The attribute words.
    pub attributes: Attributes,
    /// Bare API words other than `.tag`, keyed without their dot. RouterOS sends `.id` and
    /// `.section` as ordinary attributes (`=.id=*1`, `=.section=1`); this keeps any other
    /// dot-word apart.
    pub api_attributes: Attributes,
    /// Bare words without a leading `=` or `.`. Only `!fatal` carries one: its reason
    /// (`docs/reference/routeros-api.md` §3).
    pub bare: Vec<Vec<u8>>,
}

/// A sentence that is not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The sentence had no words.
    #[error("empty reply sentence")]
    Empty,
    /// The first word is not one of `!re`, `!done`, `!trap`, `!fatal`, `!empty`.
    #[error("unknown reply word {:?}", lossy(.0))]
    UnknownReply(Vec<u8>),
    /// A word after the reply word has no `=` or `.` prefix, outside `!fatal`.
    #[error("unexpected bare word {:?} in {} reply", lossy(.word), .kind.word())]
    UnexpectedWord {
        /// The reply kind.
        kind: ReplyKind,
        /// The offending word.
        word: Vec<u8>,
    },
}

impl Reply {
    /// Parses a sentence received from the router.
    pub fn parse(sentence: &Sentence) -> Result<Self, ReplyError> {
        let words = sentence.words();
        let first = words.first().ok_or(ReplyError::Empty)?;
        let kind =
            ReplyKind::from_word(first).ok_or_else(|| ReplyError::UnknownReply(first.clone()))?;
        let mut reply = Reply {
            kind,
            tag: None,
            attributes: Attributes::new(),
            api_attributes: Attributes::new(),
            bare: Vec::new(),
        };
        for word in &words[1..] {
            if let Some((k, v)) = Attributes::split_word(word) {
                reply.attributes.push(k, v);
            } else if let Some(tag) = word.strip_prefix(b".tag=") {
                reply.tag = Some(tag.to_vec());
            } else if let Some(api) = word.strip_prefix(b".") {
                // Other bare API words: none is documented beyond `.tag`
                // (`docs/reference/routeros-api.md` §2; `.section` comes as `=.section=N`); keep
                // any apart from `=.id=`-style attributes.
                let (k, v) = match api.iter().position(|&b| b == b'=') {
                    Some(i) => (&api[..i], &api[i + 1..]),
                    None => (api, &[][..]),
                };
                reply.api_attributes.push(k, v);
            } else if kind == ReplyKind::Fatal {
                reply.bare.push(word.clone());
            } else {
                return Err(ReplyError::UnexpectedWord {
                    kind,
                    word: word.clone(),
                });
            }
        }
        Ok(reply)
    }

    /// `=ret=` of a `!done` (the new `.id` after `add`, the challenge in legacy login, the count
    /// after `count-only`).
    pub fn ret(&self) -> Option<&[u8]> {
        self.attributes.get("ret")
    }

    /// `=message=` of a `!trap`.
    pub fn message(&self) -> Option<&[u8]> {
        self.attributes.get("message")
    }

    /// `=category=` of a `!trap`, when present and numeric (`docs/reference/routeros-api.md` §3).
    pub fn category(&self) -> Option<u32> {
        self.attributes.get_str("category")?.parse().ok()
    }

    /// The reason of a `!fatal`: its bare word, or `=message=` if a router ever sends one.
    pub fn fatal_reason(&self) -> Option<&[u8]> {
        self.bare
            .first()
            .map(Vec::as_slice)
            .or_else(|| self.message())
    }

    /// The tag as text, if present and UTF-8.
    pub fn tag_str(&self) -> Option<&str> {
        self.tag
            .as_deref()
            .and_then(|t| std::str::from_utf8(t).ok())
    }

    /// Builds the wire sentence of this reply (used by the emulator and tests).
    pub fn to_sentence(&self) -> Sentence {
        let mut s = Sentence::new(vec![self.kind.word().as_bytes().to_vec()]);
        for bare in &self.bare {
            s.push(bare.clone());
        }
        for (k, v) in self.attributes.iter() {
            s.push([b"=", k, b"=", v].concat());
        }
        for (k, v) in self.api_attributes.iter() {
            s.push([b".", k, b"=", v].concat());
        }
        if let Some(tag) = &self.tag {
            s.push([&b".tag="[..], tag].concat());
        }
        s
    }
}

/// Trap categories (`docs/reference/routeros-api.md` §3).
pub mod category {
    /// Missing item or command.
    pub const MISSING_ITEM: u32 = 0;
    /// Argument value failure.
    pub const ARGUMENT_VALUE: u32 = 1;
    /// Execution of command interrupted (e.g. by `/cancel`).
    pub const INTERRUPTED: u32 = 2;
    /// Scripting failure.
    pub const SCRIPTING: u32 = 3;
    /// General failure.
    pub const GENERAL: u32 = 4;
    /// API failure.
    pub const API: u32 = 5;
    /// TTY failure.
    pub const TTY: u32 = 6;
    /// Value generated with `:return`.
    pub const RETURN: u32 = 7;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &[&[u8]]) -> Sentence {
        Sentence::new(words.iter().map(|w| w.to_vec()).collect())
    }

    #[test]
    fn parses_re_with_values_containing_equals_and_empty_values() {
        let r = Reply::parse(&s(&[
            b"!re",
            b"=.id=*1A",
            b"=comment=a=b=c",
            b"=timeout=",
            b"=flag",
            b".tag=42",
        ]))
        .unwrap();
        assert_eq!(r.kind, ReplyKind::Re);
        assert_eq!(r.attributes.get(".id"), Some(&b"*1A"[..]));
        assert_eq!(r.attributes.get("comment"), Some(&b"a=b=c"[..]));
        assert_eq!(r.attributes.get("timeout"), Some(&b""[..]));
        assert_eq!(r.attributes.get("flag"), Some(&b""[..]));
        assert_eq!(r.attributes.get("missing"), None);
        assert_eq!(r.tag_str(), Some("42"));
    }

    #[test]
    fn parses_done_with_ret() {
        let r = Reply::parse(&s(&[b"!done", b"=ret=*1A", b".tag=7"])).unwrap();
        assert_eq!(r.kind, ReplyKind::Done);
        assert_eq!(r.ret(), Some(&b"*1A"[..]));
        assert_eq!(r.tag.as_deref(), Some(&b"7"[..]));
    }

    #[test]
    fn parses_trap_category_and_message() {
        let r = Reply::parse(&s(&[
            b"!trap",
            b"=category=1",
            b"=message=failure: already have such entry",
        ]))
        .unwrap();
        assert_eq!(r.kind, ReplyKind::Trap);
        assert_eq!(r.category(), Some(category::ARGUMENT_VALUE));
        assert_eq!(r.message(), Some(&b"failure: already have such entry"[..]));
        assert_eq!(r.tag, None);
    }

    #[test]
    fn parses_fatal_bare_reason() {
        let r = Reply::parse(&s(&[b"!fatal", b"session terminated on request"])).unwrap();
        assert_eq!(r.kind, ReplyKind::Fatal);
        assert_eq!(
            r.fatal_reason(),
            Some(&b"session terminated on request"[..])
        );
    }

    #[test]
    fn parses_empty() {
        let r = Reply::parse(&s(&[b"!empty", b".tag=3"])).unwrap();
        assert_eq!(r.kind, ReplyKind::Empty);
        assert_eq!(r.tag_str(), Some("3"));
    }

    #[test]
    fn unknown_reply_word_is_a_typed_error() {
        assert_eq!(
            Reply::parse(&s(&[b"!weird", b"=a=b"])),
            Err(ReplyError::UnknownReply(b"!weird".to_vec()))
        );
        assert_eq!(Reply::parse(&Sentence::default()), Err(ReplyError::Empty));
    }

    #[test]
    fn bare_word_outside_fatal_is_an_error() {
        assert!(matches!(
            Reply::parse(&s(&[b"!re", b"oops"])),
            Err(ReplyError::UnexpectedWord {
                kind: ReplyKind::Re,
                ..
            })
        ));
    }

    #[test]
    fn non_utf8_values_stay_bytes_and_decode_lossily_on_request() {
        let r = Reply::parse(&s(&[b"!re", b"=comment=caf\xe9"])).unwrap();
        assert_eq!(r.attributes.get("comment"), Some(&b"caf\xe9"[..]));
        assert_eq!(r.attributes.get_str("comment"), None);
        assert_eq!(r.attributes.get_lossy("comment").unwrap(), "caf\u{FFFD}");
    }

    #[test]
    fn to_sentence_round_trips() {
        for words in [
            &[&b"!re"[..], b"=.id=*1", b"=address=1.2.3.4", b".tag=9"][..],
            &[b"!fatal", b"session terminated on request"],
            &[b"!trap", b"=category=2", b"=message=interrupted", b".tag=a"],
            &[b"!re", b"=.id=*2", b".section=1", b".tag=b"],
        ] {
            let sentence = s(words);
            let reply = Reply::parse(&sentence).unwrap();
            assert_eq!(reply.to_sentence(), sentence);
        }
    }
}
