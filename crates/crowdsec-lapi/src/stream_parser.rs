//! Incremental parser for the `GET /v1/decisions/stream` body.
//!
//! A 100k-decision startup snapshot is ~14 MB of JSON (`crowdsec-lapi.md` §6), so the body is
//! never held whole. [`StreamParser`] is a hand-written scanner for the top-level object and its
//! `new`/`deleted` arrays: it is fed byte chunks as they arrive and hands out each array element's
//! bytes as soon as the element is complete. Only one element is buffered at a time, and that
//! buffer is capped ([`StreamParser::DEFAULT_MAX_ELEMENT`]): an oversized element is an error, not
//! an allocation. [`DecisionStream`] sits on top and decodes elements into [`StreamEvent`]s.
//!
//! Accepted shapes (§4): keys in any order, `null`, `[]`, or a missing key; unknown top-level keys
//! are skipped without buffering. 1.4.6 sends `{"deleted":null,"new":null}`; 1.7.8 chunked mode
//! sends `new` before `deleted` (so callers must buffer and apply deletes first).
//!
//! Sans-IO: no sockets, no clock.

use crate::decision::{Decision, Decoded, Deletion, Interner, decode_deleted, decode_new};

/// Which array an element came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `new`: decisions to apply.
    New,
    /// `deleted`: decisions that ended.
    Deleted,
}

/// The body is not a well-formed stream response. The caller must keep its previous state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A byte arrived that the grammar does not allow here.
    #[error("malformed stream body at byte {offset}: expected {expected}, found {found:?}")]
    UnexpectedByte {
        /// What the scanner expected.
        expected: &'static str,
        /// The byte that arrived, as a char for readability.
        found: char,
        /// Offset in the body.
        offset: u64,
    },
    /// The body ended before the top-level object closed (a truncated response).
    #[error("stream body truncated at byte {offset}: expected {expected}")]
    UnexpectedEof {
        /// What the scanner expected next.
        expected: &'static str,
        /// Body length.
        offset: u64,
    },
    /// One array element exceeded the per-element cap.
    #[error("decision element at byte {offset} is larger than the {max}-byte limit")]
    ElementTooLarge {
        /// The cap.
        max: usize,
        /// Offset where the element started.
        offset: u64,
    },
    /// Nesting deeper than any decision needs.
    #[error("nesting deeper than {max} at byte {offset}")]
    TooDeep {
        /// The limit.
        max: u32,
        /// Offset of the opening bracket.
        offset: u64,
    },
    /// An element's bytes are not JSON at all (as opposed to a JSON value that is not a valid
    /// decision, which is only skipped).
    #[error("malformed JSON in decision element at byte {offset}: {message}")]
    MalformedElement {
        /// Offset where the element started.
        offset: u64,
        /// serde_json's description.
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,` in the object: a key.
    Key,
    /// Inside a key string.
    InKey,
    /// After a key: `:`.
    Colon,
    /// After `:`: the value.
    Value,
    /// Matching the literal `null` of a section value; the index of the next byte.
    Null(u8),
    /// After `[`: an element or `]`.
    FirstElement,
    /// After `,` in an array: an element.
    Element,
    /// Inside a value being scanned (an element, or a skipped unknown value).
    InValue,
    /// After an element: `,` or `]`.
    AfterElement,
    /// After an object value: `,` or `}`.
    AfterValue,
    /// After the closing `}`: only whitespace.
    Done,
}

/// What the key currently being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Section(Section),
    Other,
}

const MAX_DEPTH: u32 = 64;
const MAX_KEY: usize = 16;

/// The incremental scanner. Feed chunks with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) at end of body.
#[derive(Debug)]
pub struct StreamParser {
    state: State,
    max_element: usize,
    offset: u64,
    key: Vec<u8>,
    key_overflow: bool,
    key_escape: bool,
    current_key: KeyKind,
    /// The array being read, if any.
    section: Option<Section>,
    /// Element (or skipped value) scanning.
    buf: Vec<u8>,
    capture: bool,
    value_start: u64,
    depth: u32,
    in_string: bool,
    escape: bool,
    scalar: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Default for StreamParser {
    fn default() -> Self {
        StreamParser::new(Self::DEFAULT_MAX_ELEMENT)
    }
}

impl StreamParser {
    /// Default per-element cap. A 1.7 decision with `uuid` is ~185 bytes (§6), so 16 KiB is
    /// generous while still bounding memory.
    pub const DEFAULT_MAX_ELEMENT: usize = 16 * 1024;

    /// A parser whose element buffer never exceeds `max_element` bytes.
    pub fn new(max_element: usize) -> Self {
        StreamParser {
            state: State::Start,
            max_element,
            offset: 0,
            key: Vec::with_capacity(MAX_KEY),
            key_overflow: false,
            key_escape: false,
            current_key: KeyKind::Other,
            section: None,
            buf: Vec::new(),
            capture: false,
            value_start: 0,
            depth: 0,
            in_string: false,
            escape: false,
            scalar: false,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Scans `chunk`, calling `on_element(section, element_bytes, element_offset)` for each
    /// complete array element. An error from the callback stops the scan and is returned.
    pub fn feed<F>(&mut self, chunk: &[u8], mut on_element: F) -> Result<(), ParseError>
    where
        F: FnMut(Section, &[u8], u64) -> Result<(), ParseError>,
    {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            let at = self.offset + i as u64;
            let unexpected = |expected: &'static str| ParseError::UnexpectedByte {
                expected,
                found: char::from(b),
                offset: at,
            };
            match self.state {
                State::Start => {
                    if b == b'{' {
                        self.state = State::FirstKey;
                    } else if !is_ws(b) {
                        return Err(unexpected("'{' opening the response object"));
                    }
                }
                State::FirstKey | State::Key => {
                    if b == b'"' {
                        self.key.clear();
                        self.key_overflow = false;
                        self.key_escape = false;
                        self.state = State::InKey;
                    } else if b == b'}' && self.state == State::FirstKey {
                        self.state = State::Done;
                    } else if !is_ws(b) {
                        return Err(unexpected("a key string"));
                    }
                }
                State::InKey => {
                    if self.key_escape {
                        self.key_escape = false;
                        self.key_overflow = true; // escaped keys are never ours
                    } else if b == b'\\' {
                        self.key_escape = true;
                    } else if b == b'"' {
                        self.current_key = match (&self.key[..], self.key_overflow) {
                            (b"new", false) => KeyKind::Section(Section::New),
                            (b"deleted", false) => KeyKind::Section(Section::Deleted),
                            _ => KeyKind::Other,
                        };
                        self.state = State::Colon;
                    } else if self.key.len() < MAX_KEY {
                        self.key.push(b);
                    } else {
                        self.key_overflow = true;
                    }
                }
                State::Colon => {
                    if b == b':' {
                        self.state = State::Value;
                    } else if !is_ws(b) {
                        return Err(unexpected("':' after a key"));
                    }
                }
                State::Value => {
                    if is_ws(b) {
                    } else if let KeyKind::Section(section) = self.current_key {
                        match b {
                            b'[' => {
                                self.section = Some(section);
                                self.state = State::FirstElement;
                            }
                            b'n' => self.state = State::Null(1),
                            _ => return Err(unexpected("'[' or null for a decision list")),
                        }
                    } else {
                        // Unknown key: skip its value without buffering.
                        self.begin_value(b, at, false)?;
                        self.state = State::InValue;
                    }
                }
                State::Null(n) => {
                    let lit = b"null";
                    if lit.get(usize::from(n)) == Some(&b) {
                        if usize::from(n) + 1 == lit.len() {
                            self.state = State::AfterValue;
                        } else {
                            self.state = State::Null(n + 1);
                        }
                    } else {
                        return Err(unexpected("the literal null"));
                    }
                }
                State::FirstElement | State::Element => {
                    if is_ws(b) {
                    } else if b == b']' && self.state == State::FirstElement {
                        self.section = None;
                        self.state = State::AfterValue;
                    } else if b == b']' || b == b',' {
                        return Err(unexpected("an array element"));
                    } else {
                        self.buf.clear();
                        self.begin_value(b, at, true)?;
                        self.state = State::InValue;
                    }
                }
                State::InValue => {
                    if self.scalar {
                        if is_ws(b) || matches!(b, b',' | b']' | b'}') {
                            // End of a scalar; reprocess this byte in the next state.
                            self.end_value(&mut on_element)?;
                            continue;
                        }
                        self.push(b)?;
                    } else {
                        self.push(b)?;
                        if self.in_string {
                            if self.escape {
                                self.escape = false;
                            } else if b == b'\\' {
                                self.escape = true;
                            } else if b == b'"' {
                                self.in_string = false;
                                if self.depth == 0 {
                                    self.end_value(&mut on_element)?;
                                }
                            }
                        } else {
                            match b {
                                b'"' => self.in_string = true,
                                b'{' | b'[' => {
                                    self.depth += 1;
                                    if self.depth > MAX_DEPTH {
                                        return Err(ParseError::TooDeep {
                                            max: MAX_DEPTH,
                                            offset: at,
                                        });
                                    }
                                }
                                b'}' | b']' => {
                                    self.depth = self.depth.saturating_sub(1);
                                    if self.depth == 0 {
                                        self.end_value(&mut on_element)?;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                State::AfterElement => {
                    if b == b',' {
                        self.state = State::Element;
                    } else if b == b']' {
                        self.section = None;
                        self.state = State::AfterValue;
                    } else if !is_ws(b) {
                        return Err(unexpected("',' or ']' after an element"));
                    }
                }
                State::AfterValue => {
                    if b == b',' {
                        self.state = State::Key;
                    } else if b == b'}' {
                        self.state = State::Done;
                    } else if !is_ws(b) {
                        return Err(unexpected("',' or '}' after a value"));
                    }
                }
                State::Done => {
                    if !is_ws(b) {
                        return Err(unexpected("end of body after the closing '}'"));
                    }
                }
            }
            i += 1;
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Starts scanning a value whose first byte is `b`.
    fn begin_value(&mut self, b: u8, at: u64, capture: bool) -> Result<(), ParseError> {
        self.capture = capture;
        self.value_start = at;
        self.in_string = false;
        self.escape = false;
        self.scalar = false;
        self.depth = 0;
        match b {
            b'{' | b'[' => self.depth = 1,
            b'"' => self.in_string = true,
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.scalar = true,
            _ => {
                return Err(ParseError::UnexpectedByte {
                    expected: "a JSON value",
                    found: char::from(b),
                    offset: at,
                });
            }
        }
        self.push(b)
    }

    fn push(&mut self, b: u8) -> Result<(), ParseError> {
        if self.capture {
            if self.buf.len() >= self.max_element {
                return Err(ParseError::ElementTooLarge {
                    max: self.max_element,
                    offset: self.value_start,
                });
            }
            self.buf.push(b);
        }
        Ok(())
    }

    fn end_value<F>(&mut self, on_element: &mut F) -> Result<(), ParseError>
    where
        F: FnMut(Section, &[u8], u64) -> Result<(), ParseError>,
    {
        self.scalar = false;
        match (self.capture, self.section) {
            (true, Some(section)) => {
                self.state = State::AfterElement;
                let r = on_element(section, &self.buf, self.value_start);
                self.buf.clear();
                if self.buf.capacity() > 4 * 1024 {
                    // One unusually large element must not pin its buffer for the whole body.
                    self.buf.shrink_to(1024);
                }
                r
            }
            _ => {
                self.state = State::AfterValue;
                Ok(())
            }
        }
    }

    /// Declares the end of the body: errors unless the top-level object closed.
    pub fn finish(&self) -> Result<(), ParseError> {
        let expected = match self.state {
            State::Done => return Ok(()),
            State::Start => "'{' (empty body)",
            State::FirstKey | State::Key | State::InKey => "a key",
            State::Colon | State::Value | State::Null(_) => "a value",
            State::FirstElement | State::Element | State::InValue | State::AfterElement => {
                "the rest of a decision list"
            }
            State::AfterValue => "'}' closing the response",
        };
        Err(ParseError::UnexpectedEof {
            expected,
            offset: self.offset,
        })
    }
}

/// One decoded element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// From `new`.
    New(Decision),
    /// From `deleted`.
    Deleted(Deletion),
}

/// Counters for one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Valid `new` elements.
    pub new: u64,
    /// Valid `deleted` elements.
    pub deleted: u64,
    /// Elements skipped because they were not valid decisions (bad value, bad duration, …).
    pub skipped: u64,
    /// Body bytes.
    pub bytes: u64,
}

/// How many bad elements are logged one by one per response before only the total is logged.
const WARN_LIMIT: u64 = 10;

/// [`StreamParser`] plus element decoding: yields [`StreamEvent`]s, counts and skips bad
/// elements, and fails only on malformed JSON.
///
/// ```
/// use crowdsec_lapi::{DecisionStream, Interner, StreamEvent};
/// let mut interner = Interner::default();
/// let mut s = DecisionStream::new(&mut interner);
/// let mut events = Vec::new();
/// let body = br#"{"deleted":null,"new":[{"duration":"4h","id":1,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"192.0.2.1"}]}"#;
/// for chunk in body.chunks(7) {
///     s.feed(chunk, &mut |e| events.push(e)).unwrap();
/// }
/// let stats = s.finish().unwrap();
/// assert_eq!(stats.new, 1);
/// assert!(matches!(&events[0], StreamEvent::New(d) if d.value.to_string() == "192.0.2.1"));
/// ```
#[derive(Debug)]
pub struct DecisionStream<'a> {
    parser: StreamParser,
    interner: &'a mut Interner,
    stats: StreamStats,
}

impl<'a> DecisionStream<'a> {
    /// A stream with the default element cap, interning labels into `interner`.
    pub fn new(interner: &'a mut Interner) -> Self {
        DecisionStream::with_parser(StreamParser::default(), interner)
    }

    /// A stream around a configured parser.
    pub fn with_parser(parser: StreamParser, interner: &'a mut Interner) -> Self {
        DecisionStream {
            parser,
            interner,
            stats: StreamStats::default(),
        }
    }

    /// Feeds a chunk; `sink` gets each decoded element in body order.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        sink: &mut impl FnMut(StreamEvent),
    ) -> Result<(), ParseError> {
        let interner = &mut *self.interner;
        let stats = &mut self.stats;
        self.parser.feed(chunk, |section, bytes, offset| {
            let bad = |stats: &mut StreamStats, err: &dyn std::fmt::Display| {
                stats.skipped += 1;
                if stats.skipped <= WARN_LIMIT {
                    tracing::warn!(offset, section = ?section, cause = %err, "skipping bad decision element");
                }
            };
            let malformed = |e: serde_json::Error| ParseError::MalformedElement { offset, message: e.to_string() };
            match section {
                Section::New => match decode_new(bytes, interner) {
                    Decoded::Ok(d) => {
                        stats.new += 1;
                        sink(StreamEvent::New(d));
                    }
                    Decoded::Bad(e) => bad(stats, &e),
                    Decoded::Malformed(e) => return Err(malformed(e)),
                },
                Section::Deleted => match decode_deleted(bytes) {
                    Decoded::Ok(d) => {
                        stats.deleted += 1;
                        sink(StreamEvent::Deleted(d));
                    }
                    Decoded::Bad(e) => bad(stats, &e),
                    Decoded::Malformed(e) => return Err(malformed(e)),
                },
            }
            Ok(())
        })
    }

    /// Ends the body: `Ok` only if the whole response was well formed.
    pub fn finish(mut self) -> Result<StreamStats, ParseError> {
        self.parser.finish()?;
        self.stats.bytes = self.parser.offset();
        if self.stats.skipped > WARN_LIMIT {
            tracing::warn!(
                skipped = self.stats.skipped,
                "skipped bad decision elements in this response"
            );
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn elements(body: &[u8], chunk: usize) -> Result<Vec<(Section, String)>, ParseError> {
        let mut p = StreamParser::new(1024);
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            p.feed(c, |s, b, _| {
                out.push((s, String::from_utf8_lossy(b).into_owned()));
                Ok(())
            })?;
        }
        p.finish()?;
        Ok(out)
    }

    fn events(body: &[u8]) -> Result<(Vec<StreamEvent>, StreamStats), ParseError> {
        let mut i = Interner::default();
        let mut s = DecisionStream::new(&mut i);
        let mut ev = Vec::new();
        s.feed(body, &mut |e| ev.push(e))?;
        Ok((ev, s.finish()?))
    }

    const DEC: &str = r#"{"duration":"1h","id":1,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"1.2.3.4"}"#;

    #[test]
    fn parses_the_1_4_6_empty_delta() {
        assert_eq!(
            elements(br#"{"deleted":null,"new":null}"#, 1).unwrap(),
            vec![]
        );
    }

    #[test]
    fn accepts_missing_empty_and_reordered_sections() {
        assert_eq!(elements(b"{}", 1).unwrap(), vec![]);
        assert_eq!(
            elements(b" { \"new\" : [ ] , \"deleted\":[] } \n", 1).unwrap(),
            vec![]
        );
        let body = format!(r#"{{"new":[{DEC}],"deleted":[{DEC},{DEC}]}}"#);
        let got = elements(body.as_bytes(), 3).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, Section::New);
        assert_eq!(got[1].0, Section::Deleted);
        assert_eq!(got[2].1, DEC);
    }

    #[test]
    fn skips_unknown_top_level_values_of_any_shape() {
        let body = format!(
            r#"{{"x":{{"a":[1,{{"b":"]}}\""}}]}},"n":-1.5e3,"t":true,"s":"new","new":[{DEC}],"z":null}}"#
        );
        let got = elements(body.as_bytes(), 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, DEC);
    }

    #[test]
    fn strings_with_brackets_and_escapes_do_not_confuse_element_boundaries() {
        let el =
            r#"{"duration":"1h","id":2,"scenario":"a}]\"[{\\","type":"ban","value":"1.2.3.4"}"#;
        let body = format!(r#"{{"new":[{el},{DEC}]}}"#);
        for chunk in [1, 2, 5, 1000] {
            let got = elements(body.as_bytes(), chunk).unwrap();
            assert_eq!(
                got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
                vec![el, DEC]
            );
        }
    }

    #[test]
    fn truncated_bodies_are_errors_at_every_cut() {
        let body = format!(r#"{{"deleted":[{DEC}],"new":[{DEC}]}}"#);
        for cut in 0..body.len() {
            assert!(
                elements(&body.as_bytes()[..cut], 4).is_err(),
                "cut at {cut} accepted"
            );
        }
        assert!(elements(body.as_bytes(), 4).is_ok());
    }

    #[test]
    fn structural_garbage_is_an_error() {
        for bad in [
            &b"[]"[..],
            b"null",
            b"{\"new\":5}",
            b"{\"new\":nul}",
            b"{\"new\":nulll}",
            b"{\"new\":[1,]}",
            b"{\"new\":[,1]}",
            b"{\"new\":[{}]]}",
            b"{\"new\":[]}x",
            b"{\"new\":[]}{}",
            b"{new:[]}",
            b"{\"new\" []}",
            b"{\"a\":}",
            b"{,}",
        ] {
            assert!(
                elements(bad, 3).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_element_is_an_error_not_an_allocation() {
        let big = format!(r#"{{"new":[{{"scenario":"{}"}}]}}"#, "a".repeat(5000));
        let mut p = StreamParser::new(1024);
        let err = p.feed(big.as_bytes(), |_, _, _| Ok(())).unwrap_err();
        assert!(
            matches!(
                err,
                ParseError::ElementTooLarge {
                    max: 1024,
                    offset: 8
                }
            ),
            "{err:?}"
        );
        assert!(p.buf.capacity() <= 2048);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let body = format!(r#"{{"x":{}"#, "[".repeat(100));
        let mut p = StreamParser::default();
        assert!(matches!(
            p.feed(body.as_bytes(), |_, _, _| Ok(())),
            Err(ParseError::TooDeep { .. })
        ));
    }

    #[test]
    fn bad_elements_are_counted_and_skipped_without_failing_the_batch() {
        let body = format!(
            r#"{{"deleted":[{{"id":9,"value":"nope"}}],"new":[{{"duration":"1d","id":1,"value":"1.2.3.4"}},{DEC},{{"duration":"1h","id":3,"value":"bob"}},7,"x",null]}}"#
        );
        let (ev, stats) = events(body.as_bytes()).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            stats,
            StreamStats {
                new: 1,
                deleted: 0,
                skipped: 6,
                bytes: body.len() as u64
            }
        );
    }

    #[test]
    fn malformed_json_inside_an_element_fails_the_response() {
        let body = br#"{"new":[{"id":1,"value":"1.2.3.4",}]}"#;
        assert!(matches!(
            events(body),
            Err(ParseError::MalformedElement { .. })
        ));
        let body = br#"{"new":[{"id":1 "value":"1.2.3.4"}]}"#;
        assert!(matches!(
            events(body),
            Err(ParseError::MalformedElement { .. })
        ));
        let body = br#"{"new":[tru]}"#;
        assert!(matches!(
            events(body),
            Err(ParseError::MalformedElement { .. })
        ));
    }

    #[test]
    fn escaped_key_is_not_mistaken_for_a_section() {
        let body = format!(r#"{{"n\u0065w":[{DEC}]}}"#);
        assert_eq!(elements(body.as_bytes(), 2).unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_result(split in 1usize..64, n in 0usize..5, m in 0usize..5) {
            let news = vec![DEC; n].join(",");
            let dels = vec![DEC; m].join(" , ");
            let body = format!("{{ \"deleted\" : [{dels}] ,\n\"new\":[{news}]}}");
            let got = elements(body.as_bytes(), split).unwrap();
            prop_assert_eq!(got.len(), n + m);
        }

        #[test]
        fn never_panics_on_hostile_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), split in 1usize..17) {
            let _ = elements(&bytes, split);
            let mut i = Interner::default();
            let mut s = DecisionStream::new(&mut i);
            for c in bytes.chunks(split) {
                if s.feed(c, &mut |_| {}).is_err() { break; }
            }
        }

        #[test]
        fn never_panics_on_json_like_bytes(s in r#"[{}\[\]",:0-9a-z\\ ]{0,200}"#) {
            let body = format!(r#"{{"new":[{s}"#);
            let _ = elements(body.as_bytes(), 3);
            let _ = events(body.as_bytes());
        }
    }
}
