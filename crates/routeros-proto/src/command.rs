//! Commands: building them safely (client side) and reading them (emulator side).

use std::fmt;

use thiserror::Error;

use crate::reply::Attributes;
use crate::sentence::{Sentence, debug_words, encode_words, lossy};

/// A command that would corrupt the sentence, or that RouterOS would misread.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The path is not `/segment/segment...` with segments of `[A-Za-z0-9_-]`.
    #[error("invalid command path {0:?}: expected /menu/.../verb with letters, digits, '-' or '_'")]
    InvalidPath(String),
    /// An attribute or query name is empty or holds a byte that would change how the word splits.
    #[error(
        "invalid attribute name {0:?}: expected letters, digits, '-', '_' or '.', not starting with '='"
    )]
    InvalidName(String),
    /// A `?#` operator string holds something other than `!&|.` and digits.
    #[error("invalid query operators {0:?}: expected only '!', '&', '|', '.' and digits")]
    InvalidQueryOps(String),
    /// A tag is empty.
    #[error("a .tag must not be empty")]
    EmptyTag,
    /// A value is longer than a word can carry.
    #[error("value of {0} bytes is longer than a word can carry")]
    ValueTooLong(usize),
}

/// One query word for `print` (`docs/reference/routeros-api.md` §2 "Queries").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `?name`: the item has the property.
    Has(String),
    /// `?-name`: the item lacks the property.
    Lacks(String),
    /// `?name=value`: equality.
    Eq(String, Vec<u8>),
    /// `?<name=value`: less than.
    Lt(String, Vec<u8>),
    /// `?>name=value`: greater than.
    Gt(String, Vec<u8>),
    /// `?#ops`: stack operations (`!` negate, `&` and, `|` or, `.` and digits address the stack).
    Ops(String),
}

impl Query {
    fn to_word(&self) -> Result<Vec<u8>, CommandError> {
        Ok(match self {
            Query::Has(k) => [b"?", checked_name(k)?].concat(),
            Query::Lacks(k) => [b"?-", checked_name(k)?].concat(),
            Query::Eq(k, v) => [b"?", checked_name(k)?, b"=", v].concat(),
            Query::Lt(k, v) => [b"?<", checked_name(k)?, b"=", v].concat(),
            Query::Gt(k, v) => [b"?>", checked_name(k)?, b"=", v].concat(),
            Query::Ops(ops) => {
                if ops.is_empty()
                    || !ops
                        .bytes()
                        .all(|b| matches!(b, b'!' | b'&' | b'|' | b'.') || b.is_ascii_digit())
                {
                    return Err(CommandError::InvalidQueryOps(ops.clone()));
                }
                [b"?#", ops.as_bytes()].concat()
            }
        })
    }

    /// Parses a query word (`?...`), as the emulator receives it.
    pub fn parse_word(word: &[u8]) -> Option<Query> {
        let rest = word.strip_prefix(b"?")?;
        let text = |b: &[u8]| lossy(b).into_owned();
        let split = |b: &[u8]| -> (String, Vec<u8>) {
            match b.iter().position(|&c| c == b'=') {
                Some(i) => (text(&b[..i]), b[i + 1..].to_vec()),
                None => (text(b), Vec::new()),
            }
        };
        Some(match rest.first() {
            Some(b'#') => Query::Ops(text(&rest[1..])),
            Some(b'-') => Query::Lacks(text(&rest[1..])),
            Some(b'<') => {
                let (k, v) = split(&rest[1..]);
                Query::Lt(k, v)
            }
            Some(b'>') => {
                let (k, v) = split(&rest[1..]);
                Query::Gt(k, v)
            }
            // `?=name=x` is equality too.
            Some(b'=') => {
                let (k, v) = split(&rest[1..]);
                Query::Eq(k, v)
            }
            _ => match rest.iter().position(|&c| c == b'=') {
                Some(i) => Query::Eq(text(&rest[..i]), rest[i + 1..].to_vec()),
                None => Query::Has(text(rest)),
            },
        })
    }
}

fn checked_name(name: &str) -> Result<&[u8], CommandError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name.as_bytes())
    } else {
        Err(CommandError::InvalidName(name.to_owned()))
    }
}

fn checked_path(path: &str) -> Result<(), CommandError> {
    let ok = path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
    });
    if ok {
        Ok(())
    } else {
        Err(CommandError::InvalidPath(path.to_owned()))
    }
}

/// A validated command, ready to encode.
///
/// Built with [`Command::builder`]; every name and path is checked so that no value can change
/// where a word splits or which command runs.
///
/// ```
/// use routeros_proto::{Command, Query};
///
/// let cmd = Command::builder("/ip/firewall/address-list/print")
///     .proplist(&[".id", "address", "timeout", "comment"])
///     .query(Query::Eq("list".into(), b"crowdsec-banned".to_vec()))
///     .tag("7")
///     .build()
///     .unwrap();
/// assert_eq!(cmd.words()[1], b"=.proplist=.id,address,timeout,comment");
/// assert!(Command::builder("/ip/firewall/address-list/add")
///     .attr("list=x", "y")
///     .build()
///     .is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    words: Vec<Vec<u8>>,
    tag: Option<String>,
}

impl Command {
    /// Starts a command at `path`, e.g. `/ip/firewall/address-list/add`.
    pub fn builder(path: &str) -> CommandBuilder {
        let mut b = CommandBuilder {
            words: vec![path.as_bytes().to_vec()],
            tag: None,
            error: None,
        };
        if let Err(e) = checked_path(path) {
            b.error = Some(e);
        }
        b
    }

    /// The command path.
    pub fn path(&self) -> &[u8] {
        &self.words[0]
    }

    /// The words, without the `.tag` word.
    pub fn words(&self) -> &[Vec<u8>] {
        &self.words
    }

    /// The tag, if set.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Replaces the tag (the client assigns tags when it sends).
    pub fn set_tag(&mut self, tag: impl Into<String>) -> Result<(), CommandError> {
        let tag = tag.into();
        if tag.is_empty() {
            return Err(CommandError::EmptyTag);
        }
        self.tag = Some(tag);
        Ok(())
    }

    /// Appends the wire form, with `.tag=` last if set.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let tag_word = self.tag.as_ref().map(|t| format!(".tag={t}").into_bytes());
        encode_words(
            self.words
                .iter()
                .map(Vec::as_slice)
                .chain(tag_word.as_deref()),
            out,
        );
    }

    /// The wire form as a [`Sentence`].
    pub fn to_sentence(&self) -> Sentence {
        let mut words = self.words.clone();
        if let Some(t) = &self.tag {
            words.push(format!(".tag={t}").into_bytes());
        }
        Sentence::new(words)
    }
}

impl fmt::Debug for Command {
    /// Prints the words with secret values (`=password=`, `=response=`) replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Command")?;
        debug_words(f, self.words.iter().map(Vec::as_slice))?;
        if let Some(t) = &self.tag {
            write!(f, " .tag={t}")?;
        }
        Ok(())
    }
}

/// Builds a [`Command`]. The first invalid part is reported by [`CommandBuilder::build`].
#[derive(Debug)]
#[must_use = "call build() to get the command"]
pub struct CommandBuilder {
    words: Vec<Vec<u8>>,
    tag: Option<String>,
    error: Option<CommandError>,
}

impl CommandBuilder {
    fn push(mut self, word: Result<Vec<u8>, CommandError>) -> Self {
        match word {
            Ok(w) if self.error.is_none() => {
                if u32::try_from(w.len()).is_err() {
                    self.error = Some(CommandError::ValueTooLong(w.len()));
                } else {
                    self.words.push(w);
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// `=name=value`. The value is any bytes; the name is checked.
    pub fn attr(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let word = checked_name(name).map(|n| [b"=", n, b"=", value.as_ref()].concat());
        self.push(word)
    }

    /// `=.id=id`.
    pub fn id(self, id: impl AsRef<[u8]>) -> Self {
        self.attr(".id", id)
    }

    /// `=.proplist=a,b,c`.
    pub fn proplist(self, names: &[&str]) -> Self {
        let word = names
            .iter()
            .map(|n| checked_name(n))
            .collect::<Result<Vec<_>, _>>()
            .map(|ns| [&b"=.proplist="[..], &ns.join(&b","[..])].concat());
        self.push(word)
    }

    /// A flag such as `=count-only=` (an attribute with an empty value).
    pub fn flag(self, name: &str) -> Self {
        self.attr(name, b"")
    }

    /// One query word.
    pub fn query(self, q: Query) -> Self {
        let word = q.to_word();
        self.push(word)
    }

    /// `.tag=tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        if tag.is_empty() {
            self.error.get_or_insert(CommandError::EmptyTag);
        } else {
            self.tag = Some(tag);
        }
        self
    }

    /// The command, or the first problem found.
    pub fn build(self) -> Result<Command, CommandError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Command {
                words: self.words,
                tag: self.tag,
            }),
        }
    }
}

/// A command as the router receives it: path, attributes, queries and API attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command word, e.g. `/ip/firewall/address-list/add`.
    pub path: Vec<u8>,
    /// `=name=value` words.
    pub attributes: Attributes,
    /// `?...` words, in order (order matters for queries).
    pub queries: Vec<Query>,
    /// `.tag=`.
    pub tag: Option<Vec<u8>>,
    /// Words that are none of the above (the router traps on them).
    pub unknown: Vec<Vec<u8>>,
}

/// A sentence that cannot be read as a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The sentence had no words.
    #[error("empty command sentence")]
    Empty,
    /// The first word does not start with `/`.
    #[error("command word {:?} does not start with '/'", lossy(.0))]
    NotACommand(Vec<u8>),
}

impl Request {
    /// Reads a received sentence as a command.
    pub fn parse(sentence: &Sentence) -> Result<Self, RequestError> {
        let words = sentence.words();
        let first = words.first().ok_or(RequestError::Empty)?;
        if !first.starts_with(b"/") {
            return Err(RequestError::NotACommand(first.clone()));
        }
        let mut req = Request {
            path: first.clone(),
            attributes: Attributes::new(),
            queries: Vec::new(),
            tag: None,
            unknown: Vec::new(),
        };
        for word in &words[1..] {
            if let Some((k, v)) = Attributes::split_word(word) {
                req.attributes.push(k, v);
            } else if let Some(q) = Query::parse_word(word) {
                req.queries.push(q);
            } else if let Some(tag) = word.strip_prefix(b".tag=") {
                req.tag = Some(tag.to_vec());
            } else {
                req.unknown.push(word.clone());
            }
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_add_with_all_word_kinds() {
        let cmd = Command::builder("/ip/firewall/address-list/add")
            .attr("list", "crowdsec-banned")
            .attr("address", "192.0.2.1")
            .attr("timeout", "3600s")
            .attr("comment", "tikban a=b")
            .tag("12")
            .build()
            .unwrap();
        let bytes = {
            let mut v = Vec::new();
            cmd.encode(&mut v);
            v
        };
        let s = crate::Decoder::default();
        let mut d = s;
        d.feed(&bytes);
        let sent = d.poll_sentence().unwrap().unwrap();
        assert_eq!(
            sent.words(),
            [
                b"/ip/firewall/address-list/add".to_vec(),
                b"=list=crowdsec-banned".to_vec(),
                b"=address=192.0.2.1".to_vec(),
                b"=timeout=3600s".to_vec(),
                b"=comment=tikban a=b".to_vec(),
                b".tag=12".to_vec(),
            ]
        );
        assert_eq!(cmd.to_sentence(), sent);
    }

    #[test]
    fn builds_every_query_form() {
        let cmd = Command::builder("/interface/print")
            .query(Query::Has("name".into()))
            .query(Query::Lacks("comment".into()))
            .query(Query::Eq("type".into(), b"ether".to_vec()))
            .query(Query::Lt("mtu".into(), b"1500".to_vec()))
            .query(Query::Gt("mtu".into(), b"1000".to_vec()))
            .query(Query::Ops("|!".into()))
            .id("*1")
            .flag("count-only")
            .build()
            .unwrap();
        let words: Vec<&[u8]> = cmd.words().iter().map(Vec::as_slice).collect();
        assert_eq!(
            words,
            [
                &b"/interface/print"[..],
                b"?name",
                b"?-comment",
                b"?type=ether",
                b"?<mtu=1500",
                b"?>mtu=1000",
                b"?#|!",
                b"=.id=*1",
                b"=count-only=",
            ]
        );
    }

    #[test]
    fn rejects_names_that_would_corrupt_the_sentence() {
        for bad in ["", "list=x", "a b", "=x", "a\0", "ä"] {
            let r = Command::builder("/x/add").attr(bad, "v").build();
            assert!(matches!(r, Err(CommandError::InvalidName(_))), "{bad:?}");
            let r = Command::builder("/x/print")
                .query(Query::Eq(bad.into(), vec![]))
                .build();
            assert!(matches!(r, Err(CommandError::InvalidName(_))), "{bad:?}");
        }
        let r = Command::builder("/x/print").proplist(&["a", "b,c"]).build();
        assert!(matches!(r, Err(CommandError::InvalidName(_))));
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "",
            "ip/address",
            "/",
            "/ip//address",
            "/ip/address/",
            "/ip address",
            "/a=b",
        ] {
            assert!(
                matches!(
                    Command::builder(bad).build(),
                    Err(CommandError::InvalidPath(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_query_ops_and_empty_tags() {
        assert!(
            Command::builder("/x/print")
                .query(Query::Ops("|x".into()))
                .build()
                .is_err()
        );
        assert!(
            Command::builder("/x/print")
                .query(Query::Ops(String::new()))
                .build()
                .is_err()
        );
        assert_eq!(
            Command::builder("/x/print").tag("").build(),
            Err(CommandError::EmptyTag)
        );
    }

    #[test]
    fn values_may_hold_any_bytes() {
        let cmd = Command::builder("/x/set")
            .attr("comment", b"\x00=\xff?!")
            .build()
            .unwrap();
        assert_eq!(cmd.words()[1], b"=comment=\x00=\xff?!");
    }

    #[test]
    fn request_parse_reads_every_word_kind() {
        let s = Sentence::new(vec![
            b"/ip/firewall/address-list/print".to_vec(),
            b"=.proplist=.id,address".to_vec(),
            b"?list=x".to_vec(),
            b"?=address=1.2.3.4".to_vec(),
            b"?#|".to_vec(),
            b".tag=5".to_vec(),
            b"junk".to_vec(),
        ]);
        let r = Request::parse(&s).unwrap();
        assert_eq!(r.path, b"/ip/firewall/address-list/print");
        assert_eq!(r.attributes.get(".proplist"), Some(&b".id,address"[..]));
        assert_eq!(
            r.queries,
            [
                Query::Eq("list".into(), b"x".to_vec()),
                Query::Eq("address".into(), b"1.2.3.4".to_vec()),
                Query::Ops("|".into()),
            ]
        );
        assert_eq!(r.tag.as_deref(), Some(&b"5"[..]));
        assert_eq!(r.unknown, [b"junk".to_vec()]);
        assert_eq!(
            Request::parse(&Sentence::new(vec![b"!done".to_vec()])),
            Err(RequestError::NotACommand(b"!done".to_vec()))
        );
    }

    #[test]
    fn query_words_round_trip_through_parse() {
        for q in [
            Query::Has("a".into()),
            Query::Lacks("b".into()),
            Query::Eq("c".into(), b"1=2".to_vec()),
            Query::Lt("d".into(), b"3".to_vec()),
            Query::Gt("e".into(), b"".to_vec()),
            Query::Ops("0!&".into()),
        ] {
            assert_eq!(Query::parse_word(&q.to_word().unwrap()), Some(q));
        }
    }
}
