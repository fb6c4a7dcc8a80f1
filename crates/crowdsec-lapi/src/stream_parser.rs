//! Incremental parser for the `GET /v1/decisions/stream` body.
//!
//! A 100k-decision startup snapshot is ~14 MB of JSON (`docs/reference/crowdsec-lapi.md` §6), so the body is
//! never held whole. [`StreamParser`] is a hand-written scanner for the top-level object and its
//! `new`/`deleted` arrays: it is fed byte chunks as they arrive and hands out each array element
//! as soon as the element is complete. [`DecisionStream`] sits on top and decodes elements into
//! [`StreamEvent`]s.
//!
//! # Memory
//!
//! Only one element is buffered at a time, and only the fields tikban uses: `id` and `value`,
//! plus `duration`, `origin`, `scenario` and `type` in `new`. The contents of every other field
//! (`uuid`, `scope`, `until`, `simulated`, anything a future LAPI adds) are scanned and dropped
//! as they stream by, so they never count toward the per-element cap
//! ([`StreamParser::DEFAULT_MAX_ELEMENT`]). An element whose kept fields still exceed the cap
//! (LAPI 1.4.6 accepts `cscli decisions add --reason <17 KB>`, and the reason becomes the
//! decision's `scenario`) is **skipped**: its bytes are discarded while they stream, it is
//! counted in [`StreamStats::oversized`] (with its id and value in
//! [`StreamStats::first_oversized`] when they were seen), and the rest of the body applies. A
//! field name that is escaped or longer than any tikban uses is treated as unused.
//!
//! Two caps bound a whole response: body bytes ([`StreamParser::with_max_body`]) and elements
//! ([`StreamParser::with_max_elements`]). Past either the response is an error and nothing of it
//! may be applied.
//!
//! Accepted shapes (§4): keys in any order, `null`, `[]`, or a missing key; unknown top-level keys
//! are skipped without buffering. 1.4.6 sends `{"deleted":null,"new":null}`; 1.7.8 chunked mode
//! sends `new` before `deleted` (so callers must buffer and apply deletes first). Brackets must
//! match; the values of dropped fields are checked for structure (strings, brackets, literal
//! characters) but not decoded.
//!
//! Sans-IO: no sockets, no clock.

use crate::decision::{Decision, Decoded, Deletion, Interner, decode_deleted, decode_new};
use crate::text::{MAX_PEER_TEXT, peer_text};
use crate::value::Value;

/// Which array an element came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `new`: decisions to apply.
    New,
    /// `deleted`: decisions that ended.
    Deleted,
}

/// The body is not a well-formed stream response, or breaks a cap. The caller must keep its
/// previous state.
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
        /// What is wrong (escaped and bounded: it may quote the body).
        message: String,
    },
    /// The body is larger than [`StreamParser::with_max_body`] allows.
    #[error("stream body exceeds the {max}-byte limit; nothing of it was applied")]
    BodyTooLarge {
        /// The cap.
        max: u64,
    },
    /// The body holds more elements than [`StreamParser::with_max_elements`] allows.
    #[error("stream body holds more than {max} decisions; nothing of it was applied")]
    TooManyDecisions {
        /// The cap.
        max: u64,
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

/// Where the scanner is inside an element that is an object: its own fields, at depth 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// After `{`: a field name or `}`.
    FirstKey,
    /// After `,`: a field name.
    Key,
    /// Inside a field name.
    InKey,
    /// After a field name: `:`.
    Colon,
    /// After `:`: the first byte of the value.
    ValueStart,
    /// Inside the value.
    InValue,
    /// After a value: `,` or `}`.
    AfterValue,
}

/// Which small side buffer a field value also goes to (for reporting a skipped element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    None,
    Id,
    Value,
}

/// What one structural byte did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Other,
    StringEnd,
    Close,
}

const MAX_DEPTH: u32 = 64;
const MAX_KEY: usize = 16;
/// Longest field name tikban uses (`scenario`, `duration`).
const MAX_FIELD_KEY: usize = 8;
/// Bytes of `id` and `value` remembered for an oversized element's report.
const MAX_SIDE: usize = 64;

/// An element skipped because its kept fields exceed the per-element cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OversizedElement {
    /// The array it was in.
    pub section: Section,
    /// Offset where it started in the body.
    pub offset: u64,
    /// Its `id`, when the field was seen and is a number.
    pub id: Option<i64>,
    /// Its `value`, when the field was seen and is an IP address or network.
    pub value: Option<Value>,
}

/// The incremental scanner. Feed chunks with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) at end of body.
#[derive(Debug)]
pub struct StreamParser {
    state: State,
    max_element: usize,
    max_body: u64,
    max_elements: u64,
    offset: u64,
    key: Vec<u8>,
    key_overflow: bool,
    key_escape: bool,
    current_key: KeyKind,
    /// The array being read, if any.
    section: Option<Section>,
    /// Elements seen (complete or oversized).
    elements: u64,
    // --- value scanning (an element, or a skipped top-level value)
    capture: bool,
    value_start: u64,
    depth: u32,
    /// Bit `i` set: the container at depth `i + 1` is an object (brackets must match).
    stack: u64,
    in_string: bool,
    escape: bool,
    scalar: bool,
    // --- the element being kept
    /// The kept fields of the current element, as compact JSON.
    buf: Vec<u8>,
    /// The current element exceeded `max_element`: nothing more is kept.
    over: bool,
    /// `Some` while inside an element that is an object.
    field: Option<Field>,
    field_key: [u8; MAX_FIELD_KEY],
    field_key_len: usize,
    field_key_plain: bool,
    field_scalar: bool,
    keep: bool,
    kept_fields: u32,
    side: Side,
    side_id: Vec<u8>,
    side_value: Vec<u8>,
    // --- counters
    oversized: u64,
    first_oversized: Option<OversizedElement>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes a JSON number or literal (`true`, `false`, `null`) is made of.
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn malformed(offset: u64, message: &str) -> ParseError {
    ParseError::MalformedElement {
        offset,
        message: message.to_owned(),
    }
}

impl Default for StreamParser {
    fn default() -> Self {
        StreamParser::new(Self::DEFAULT_MAX_ELEMENT)
    }
}

impl StreamParser {
    /// Default per-element cap, on the kept fields only. A 1.7 decision with `uuid` is ~185 bytes
    /// (§6), so 16 KiB is generous while still bounding memory.
    pub const DEFAULT_MAX_ELEMENT: usize = 16 * 1024;

    /// A parser whose element buffer never holds more than `max_element` bytes, with no cap on
    /// the body or the number of elements.
    pub fn new(max_element: usize) -> Self {
        StreamParser {
            state: State::Start,
            max_element,
            max_body: u64::MAX,
            max_elements: u64::MAX,
            offset: 0,
            key: Vec::with_capacity(MAX_KEY),
            key_overflow: false,
            key_escape: false,
            current_key: KeyKind::Other,
            section: None,
            elements: 0,
            capture: false,
            value_start: 0,
            depth: 0,
            stack: 0,
            in_string: false,
            escape: false,
            scalar: false,
            buf: Vec::new(),
            over: false,
            field: None,
            field_key: [0; MAX_FIELD_KEY],
            field_key_len: 0,
            field_key_plain: true,
            field_scalar: false,
            keep: false,
            kept_fields: 0,
            side: Side::None,
            side_id: Vec::new(),
            side_value: Vec::new(),
            oversized: 0,
            first_oversized: None,
        }
    }

    /// Caps the body: past `max` bytes [`feed`](Self::feed) fails with
    /// [`ParseError::BodyTooLarge`].
    pub fn with_max_body(mut self, max: u64) -> Self {
        self.max_body = max;
        self
    }

    /// Caps the elements of `new` and `deleted` together: past `max`
    /// [`feed`](Self::feed) fails with [`ParseError::TooManyDecisions`].
    pub fn with_max_elements(mut self, max: u64) -> Self {
        self.max_elements = max;
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Elements skipped so far because their kept fields exceed the per-element cap.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// The first of them, with its id and value when they were seen.
    pub fn first_oversized(&self) -> Option<OversizedElement> {
        self.first_oversized
    }

    /// Bytes currently reserved for the element buffer (for memory tests).
    #[doc(hidden)]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity() + self.side_id.capacity() + self.side_value.capacity()
    }

    /// Scans `chunk`, calling `on_element(section, element_bytes, element_offset)` for each
    /// complete array element that fits the cap. The bytes are the element's kept fields as a
    /// compact JSON object (or the whole element when it is not an object). An error from the
    /// callback stops the scan and is returned.
    pub fn feed<F>(&mut self, chunk: &[u8], mut on_element: F) -> Result<(), ParseError>
    where
        F: FnMut(Section, &[u8], u64) -> Result<(), ParseError>,
    {
        if self.offset.saturating_add(chunk.len() as u64) > self.max_body {
            return Err(ParseError::BodyTooLarge { max: self.max_body });
        }
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
                        self.elements += 1;
                        if self.elements > self.max_elements {
                            return Err(ParseError::TooManyDecisions {
                                max: self.max_elements,
                            });
                        }
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
                        if !self.capture && !is_literal_byte(b) {
                            return Err(unexpected("a number or literal"));
                        }
                        self.emit(&[b]);
                    } else if self.field.is_some() {
                        // The plain bytes of a string inside a field value, up to the next
                        // quote or backslash, in one step: they change no state, and they are
                        // most of the body.
                        let run = self.plain_string_run(&chunk[i..]);
                        if run > 0 {
                            self.field_emit_run(&chunk[i..i + run]);
                            i += run;
                            continue;
                        }
                        match self.field_byte(b, at)? {
                            Flow::Continue => {}
                            Flow::Reprocess => continue,
                            Flow::End => self.end_value(&mut on_element)?,
                        }
                    } else {
                        self.emit(&[b]);
                        self.track(b, at)?;
                        if self.value_done() {
                            self.end_value(&mut on_element)?;
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

    /// True when a container or string value has just closed.
    fn value_done(&self) -> bool {
        !self.scalar && !self.in_string && self.depth == 0
    }

    /// Starts scanning a value whose first byte is `b`.
    fn begin_value(&mut self, b: u8, at: u64, capture: bool) -> Result<(), ParseError> {
        self.capture = capture;
        self.value_start = at;
        self.in_string = false;
        self.escape = false;
        self.scalar = false;
        self.depth = 0;
        self.stack = 0;
        self.field = None;
        match b {
            b'{' | b'[' | b'"' => {
                self.track(b, at)?;
                if b == b'{' && capture {
                    self.field = Some(Field::FirstKey);
                }
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.scalar = true,
            _ => {
                return Err(ParseError::UnexpectedByte {
                    expected: "a JSON value",
                    found: char::from(b),
                    offset: at,
                });
            }
        }
        self.emit(&[b]);
        Ok(())
    }

    /// Follows strings and brackets (which must match) for one byte.
    fn track(&mut self, b: u8, at: u64) -> Result<Track, ParseError> {
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
                return Ok(Track::StringEnd);
            }
            return Ok(Track::Other);
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => {
                if self.depth >= MAX_DEPTH {
                    return Err(ParseError::TooDeep {
                        max: MAX_DEPTH,
                        offset: at,
                    });
                }
                if b == b'{' {
                    self.stack |= 1 << self.depth;
                } else {
                    self.stack &= !(1 << self.depth);
                }
                self.depth += 1;
            }
            b'}' | b']' => {
                let object = self.depth > 0 && self.stack & (1 << (self.depth - 1)) != 0;
                if self.depth == 0 || object != (b == b'}') {
                    return Err(ParseError::UnexpectedByte {
                        expected: "a matching bracket",
                        found: char::from(b),
                        offset: at,
                    });
                }
                self.depth -= 1;
                return Ok(Track::Close);
            }
            _ => {}
        }
        Ok(Track::Other)
    }

    /// One byte at the field level of an element that is an object.
    fn field_byte(&mut self, b: u8, at: u64) -> Result<Flow, ParseError> {
        let Some(field) = self.field else {
            return Ok(Flow::Continue);
        };
        let offset = self.value_start;
        match field {
            Field::FirstKey | Field::Key => {
                if b == b'"' {
                    self.field_key_len = 0;
                    self.field_key_plain = true;
                    self.escape = false;
                    self.field = Some(Field::InKey);
                } else if b == b'}' && field == Field::FirstKey {
                    return self.close_element(b, at);
                } else if !is_ws(b) {
                    return Err(malformed(offset, "expected a field name"));
                }
            }
            Field::InKey => {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    // Escaped names are never tikban's (LAPI does not escape them).
                    self.escape = true;
                    self.field_key_plain = false;
                } else if b == b'"' {
                    self.field = Some(Field::Colon);
                } else if self.field_key_len < MAX_FIELD_KEY {
                    self.field_key[self.field_key_len] = b;
                    self.field_key_len += 1;
                } else {
                    self.field_key_plain = false;
                }
            }
            Field::Colon => {
                if b == b':' {
                    self.start_field();
                    self.field = Some(Field::ValueStart);
                } else if !is_ws(b) {
                    return Err(malformed(offset, "expected ':' after a field name"));
                }
            }
            Field::ValueStart => {
                if is_ws(b) {
                    return Ok(Flow::Continue);
                }
                match b {
                    b'{' | b'[' | b'"' => {
                        self.track(b, at)?;
                    }
                    b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.field_scalar = true,
                    _ => return Err(malformed(offset, "expected a field value")),
                }
                self.field_emit(b);
                self.field = Some(Field::InValue);
            }
            Field::InValue => {
                if self.field_scalar {
                    if is_ws(b) || matches!(b, b',' | b'}' | b']') {
                        self.field_scalar = false;
                        self.field = Some(Field::AfterValue);
                        return Ok(Flow::Reprocess);
                    }
                    if !is_literal_byte(b) {
                        return Err(malformed(
                            offset,
                            "invalid character in a number or literal",
                        ));
                    }
                    self.field_emit(b);
                } else {
                    self.field_emit(b);
                    let t = self.track(b, at)?;
                    if self.depth == 1 && matches!(t, Track::Close | Track::StringEnd) {
                        self.field = Some(Field::AfterValue);
                    }
                }
            }
            Field::AfterValue => {
                if b == b',' {
                    self.field = Some(Field::Key);
                } else if b == b'}' {
                    return self.close_element(b, at);
                } else if !is_ws(b) {
                    return Err(malformed(offset, "expected ',' or '}' after a field"));
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// The `}` that closes an element object.
    fn close_element(&mut self, b: u8, at: u64) -> Result<Flow, ParseError> {
        self.track(b, at)?;
        self.emit(b"}");
        Ok(Flow::End)
    }

    /// After `name:` in an element: keep the field or drop its value as it streams.
    fn start_field(&mut self) {
        let mut name = [0u8; MAX_FIELD_KEY];
        let len = self.field_key_len;
        name[..len].copy_from_slice(&self.field_key[..len]);
        let name = if self.field_key_plain {
            &name[..len]
        } else {
            &[][..]
        };
        let new = self.section == Some(Section::New);
        (self.keep, self.side) = match name {
            b"id" => (true, Side::Id),
            b"value" => (true, Side::Value),
            b"duration" | b"origin" | b"scenario" | b"type" if new => (true, Side::None),
            _ => (false, Side::None),
        };
        if self.keep {
            if self.kept_fields > 0 {
                self.emit(b",");
            }
            self.kept_fields += 1;
            self.emit(b"\"");
            self.emit(name);
            self.emit(b"\":");
        }
    }

    /// How many bytes at the start of `rest` are plain string content of the current field
    /// value (inside a string, not after a backslash, neither `"` nor `\\`); 0 outside one.
    fn plain_string_run(&self, rest: &[u8]) -> usize {
        if self.field != Some(Field::InValue) || self.field_scalar || !self.in_string || self.escape
        {
            return 0;
        }
        rest.iter()
            .position(|&c| c == b'"' || c == b'\\')
            .unwrap_or(rest.len())
    }

    /// [`field_emit`](Self::field_emit) for a run of bytes: the same buffers, the same caps.
    fn field_emit_run(&mut self, run: &[u8]) {
        if self.keep {
            self.emit(run);
        }
        let side = match self.side {
            Side::None => return,
            Side::Id => &mut self.side_id,
            Side::Value => &mut self.side_value,
        };
        let room = MAX_SIDE.saturating_sub(side.len()).min(run.len());
        side.extend_from_slice(&run[..room]);
    }

    /// A byte of a field value: kept, and copied to the side buffer of `id` or `value`.
    fn field_emit(&mut self, b: u8) {
        if self.keep {
            self.emit(&[b]);
        }
        let side = match self.side {
            Side::None => return,
            Side::Id => &mut self.side_id,
            Side::Value => &mut self.side_value,
        };
        if side.len() < MAX_SIDE {
            side.push(b);
        }
    }

    /// Appends to the element buffer; past the cap the element is marked oversized and its
    /// buffer freed.
    fn emit(&mut self, bytes: &[u8]) {
        if !self.capture || self.over {
            return;
        }
        if self.buf.len() + bytes.len() > self.max_element {
            self.over = true;
            self.buf.clear();
            self.buf.shrink_to(1024);
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn end_value<F>(&mut self, on_element: &mut F) -> Result<(), ParseError>
    where
        F: FnMut(Section, &[u8], u64) -> Result<(), ParseError>,
    {
        self.scalar = false;
        match (self.capture, self.section) {
            (true, Some(section)) => {
                self.state = State::AfterElement;
                let r = if self.over {
                    self.record_oversized(section);
                    Ok(())
                } else {
                    on_element(section, &self.buf, self.value_start)
                };
                self.buf.clear();
                if self.buf.capacity() > 4 * 1024 {
                    // One unusually large element must not pin its buffer for the whole body.
                    self.buf.shrink_to(1024);
                }
                self.over = false;
                self.field = None;
                self.field_scalar = false;
                self.keep = false;
                self.kept_fields = 0;
                self.side = Side::None;
                self.side_id.clear();
                self.side_value.clear();
                r
            }
            _ => {
                self.state = State::AfterValue;
                Ok(())
            }
        }
    }

    fn record_oversized(&mut self, section: Section) {
        self.oversized += 1;
        if self.first_oversized.is_some() {
            return;
        }
        let id = (self.side_id.len() < MAX_SIDE)
            .then(|| std::str::from_utf8(&self.side_id).ok()?.parse::<i64>().ok())
            .flatten();
        let value = (self.side_value.len() < MAX_SIDE)
            .then(|| {
                let text = self.side_value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
                let text = std::str::from_utf8(text).ok()?;
                Value::parse(text).ok()
            })
            .flatten();
        self.first_oversized = Some(OversizedElement {
            section,
            offset: self.value_start,
            id,
            value,
        });
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

/// What [`StreamParser::field_byte`] wants next.
enum Flow {
    Continue,
    /// The byte ended a scalar: process it again at the field level.
    Reprocess,
    /// The element closed.
    End,
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
    /// Elements skipped because their kept fields exceed the per-element cap (a poison pill
    /// such as a 17 KB `--reason`); the caller should warn about them.
    pub oversized: u64,
    /// The first oversized element, with its id and value when they were seen.
    pub first_oversized: Option<OversizedElement>,
    /// Body bytes.
    pub bytes: u64,
}

/// How many bad elements are logged one by one per response before only the total is logged.
const WARN_LIMIT: u64 = 10;

/// [`StreamParser`] plus element decoding: yields [`StreamEvent`]s, counts and skips bad and
/// oversized elements, and fails only on malformed JSON or a broken cap.
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
                    let cause = peer_text(&err.to_string(), None, MAX_PEER_TEXT);
                    tracing::warn!(offset, section = ?section, cause = %cause, "skipping bad decision element");
                }
            };
            let malformed = |e: serde_json::Error| ParseError::MalformedElement {
                offset,
                message: peer_text(&e.to_string(), None, MAX_PEER_TEXT),
            };
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
        self.stats.oversized = self.parser.oversized();
        self.stats.first_oversized = self.parser.first_oversized();
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
    /// What the parser keeps of [`DEC`] in `new`: the unused `scope` is dropped.
    const DEC_NEW: &str = r#"{"duration":"1h","id":1,"origin":"cscli","scenario":"s","type":"ban","value":"1.2.3.4"}"#;
    /// What it keeps of [`DEC`] in `deleted`: only the id and the value.
    const DEC_DELETED: &str = r#"{"id":1,"value":"1.2.3.4"}"#;

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
        assert_eq!(got[0].1, DEC_NEW);
        assert_eq!(got[2].1, DEC_DELETED);
    }

    #[test]
    fn skips_unknown_top_level_values_of_any_shape() {
        let body = format!(
            r#"{{"x":{{"a":[1,{{"b":"]}}\""}}]}},"n":-1.5e3,"t":true,"s":"new","new":[{DEC}],"z":null}}"#
        );
        let got = elements(body.as_bytes(), 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, DEC_NEW);
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
                vec![el, DEC_NEW]
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
    fn oversized_element_is_skipped_and_counted_not_buffered() {
        // The 1.4.6 poison pill: `--reason` becomes the scenario, which tikban keeps.
        let big = format!(
            r#"{{"deleted":null,"new":[{DEC},{{"duration":"1h","id":77,"origin":"cscli","scenario":"{}","scope":"Ip","type":"ban","value":"192.0.2.32"}},{DEC}]}}"#,
            "a".repeat(5000)
        );
        for chunk in [1, 7, 4096, big.len()] {
            let mut p = StreamParser::new(1024);
            let mut got = Vec::new();
            let mut peak = 0;
            for c in big.as_bytes().chunks(chunk) {
                p.feed(c, |_, b, _| {
                    got.push(b.len());
                    Ok(())
                })
                .unwrap();
                peak = peak.max(p.buffer_capacity());
            }
            p.finish().unwrap();
            assert_eq!(got.len(), 2, "the two normal elements apply");
            assert_eq!(p.oversized(), 1);
            let first = p.first_oversized().unwrap();
            assert_eq!(first.section, Section::New);
            assert_eq!(first.id, Some(77));
            assert_eq!(
                first.value.map(|v| v.to_string()).as_deref(),
                Some("192.0.2.32")
            );
            assert!(peak <= 2 * 1024 + 2 * MAX_SIDE, "peak buffer {peak}");
        }
    }

    #[test]
    fn unused_fields_never_count_toward_the_element_cap() {
        let huge = "u".repeat(100_000);
        let body = format!(
            r#"{{"new":[{{"uuid":"{huge}","duration":"1h","id":5,"reason":{{"x":["{huge}",{{"y":"]"}}]}},"origin":"cscli","scenario":"s","scope":"{huge}","type":"ban","simulated":false,"until":null,"value":"192.0.2.5","n":-1.5e3}}],
            "deleted":[{{"id":6,"scenario":"{huge}","duration":"{huge}","value":"192.0.2.6"}}]}}"#
        );
        let mut i = Interner::default();
        let mut s = DecisionStream::with_parser(StreamParser::new(256), &mut i);
        let mut ev = Vec::new();
        for c in body.as_bytes().chunks(333) {
            s.feed(c, &mut |e| ev.push(e)).unwrap();
            assert!(s.parser.buffer_capacity() <= 2 * 256 + 2 * MAX_SIDE);
        }
        let stats = s.finish().unwrap();
        assert_eq!(
            (stats.new, stats.deleted, stats.oversized, stats.skipped),
            (1, 1, 0, 0)
        );
        assert!(
            matches!(&ev[0], StreamEvent::New(d) if d.id == 5 && d.value.to_string() == "192.0.2.5")
        );
        assert!(matches!(&ev[1], StreamEvent::Deleted(d) if d.id == 6));
    }

    #[test]
    fn oversized_elements_are_a_separate_counter_from_bad_ones() {
        let body = format!(
            r#"{{"new":[{{"id":1,"duration":"1h","value":"bob"}},{{"id":2,"duration":"1h","scenario":"{}","value":"192.0.2.2"}},{DEC}]}}"#,
            "s".repeat(2000)
        );
        let mut i = Interner::default();
        let mut s = DecisionStream::with_parser(StreamParser::new(512), &mut i);
        let mut ev = Vec::new();
        s.feed(body.as_bytes(), &mut |e| ev.push(e)).unwrap();
        let stats = s.finish().unwrap();
        assert_eq!((stats.new, stats.skipped, stats.oversized), (1, 1, 1));
        assert_eq!(stats.first_oversized.and_then(|o| o.id), Some(2));
    }

    #[test]
    fn body_and_element_count_caps_fail_the_response() {
        let body = format!(r#"{{"deleted":[{DEC},{DEC}],"new":[{DEC}]}}"#);
        let mut p = StreamParser::new(1024).with_max_elements(2);
        let err = p.feed(body.as_bytes(), |_, _, _| Ok(())).unwrap_err();
        assert_eq!(err, ParseError::TooManyDecisions { max: 2 });
        let mut p = StreamParser::new(1024).with_max_elements(3);
        p.feed(body.as_bytes(), |_, _, _| Ok(())).unwrap();
        p.finish().unwrap();

        let mut p = StreamParser::new(1024).with_max_body(100);
        let mut fed = 0;
        let err = body
            .as_bytes()
            .chunks(10)
            .find_map(|c| {
                fed += c.len();
                p.feed(c, |_, _, _| Ok(())).err()
            })
            .unwrap();
        assert_eq!(err, ParseError::BodyTooLarge { max: 100 });
        assert!(fed > 100 && fed <= 110, "stopped at {fed}");
    }

    #[test]
    fn mismatched_brackets_are_errors() {
        for bad in [
            &br#"{"x":[1}}"#[..],
            br#"{"x":{"a":1]}"#,
            br#"{"new":[[1}]}"#,
            br#"{"new":[{"id":1,"reason":[2}}]}"#,
            br#"{"new":[{"id":1,"reason":tr"ue}]}"#,
            br#"{"new":[{"id":1,}]}"#,
            br#"{"new":[{"id" 1}]}"#,
            br#"{"new":[{"id":}]}"#,
            br#"{"new":[{,}]}"#,
        ] {
            assert!(
                elements(bad, 2).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
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
                oversized: 0,
                first_oversized: None,
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
            prop_assert_eq!(got, elements(body.as_bytes(), body.len()).unwrap());
        }

        /// Strings with escapes, nested values and hostile bytes: any split gives what the whole
        /// body gives, elements and errors alike (the plain-string fast path stops at each chunk
        /// end, quote and backslash).
        #[test]
        fn chunking_never_changes_elements_or_errors(
            fields in proptest::collection::vec(r#"[a-z"\\{}\[\],: 0-9]{0,24}"#, 0..4),
            split in 1usize..40,
        ) {
            let extra: String = fields
                .iter()
                .enumerate()
                .map(|(k, f)| format!(r#","f{k}":"{f}","scenario":"{f}","#))
                .collect();
            let body = format!(
                r#"{{"new":[{{"id":1{extra}"value":"192.0.2.1","duration":"1h"}},{DEC}]}}"#
            );
            let whole = elements(body.as_bytes(), body.len());
            prop_assert_eq!(elements(body.as_bytes(), split), whole);
        }

        /// Memory stays bounded whatever the sizes of kept and unused fields and the chunking.
        #[test]
        fn element_memory_is_bounded(
            unused in 0usize..50_000,
            scenario in 0usize..3_000,
            split in 1usize..5_000,
        ) {
            let body = format!(
                r#"{{"new":[{{"uuid":"{}","duration":"1h","id":9,"scenario":"{}","type":"ban","value":"192.0.2.9"}},{DEC}]}}"#,
                "u".repeat(unused),
                "s".repeat(scenario)
            );
            let max = 1024;
            let mut p = StreamParser::new(max);
            let mut kept = 0;
            for c in body.as_bytes().chunks(split) {
                p.feed(c, |_, b, _| {
                    kept += 1;
                    assert!(b.len() <= max);
                    Ok(())
                }).unwrap();
                prop_assert!(p.buffer_capacity() <= 2 * max + 2 * MAX_SIDE);
            }
            p.finish().unwrap();
            let compact = format!(
                r#"{{"duration":"1h","id":9,"scenario":"{}","type":"ban","value":"192.0.2.9"}}"#,
                "s".repeat(scenario)
            );
            let oversized = u64::from(compact.len() > max);
            prop_assert_eq!(p.oversized(), oversized);
            prop_assert_eq!(kept, 2 - oversized);
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
