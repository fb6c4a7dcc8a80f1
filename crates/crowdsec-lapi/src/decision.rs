//! The decision model: LAPI's JSON object (`docs/reference/crowdsec-lapi.md` §5) turned into a canonical,
//! compact [`Decision`].
//!
//! `origin`, `scenario` and `type` repeat across thousands of decisions with a handful of distinct
//! strings, so they are interned as [`Label`]s (a shared `Arc<str>`): one allocation per distinct
//! string, 16 bytes per reference.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::duration::{DurationError, GoDuration};
use crate::value::{Value, ValueError};

/// An interned, cheaply clonable string (origin, scenario, decision type).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(Arc<str>);

impl Label {
    /// Makes a label without interning (tests, config).
    pub fn new(s: &str) -> Self {
        Label(Arc::from(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::borrow::Borrow<str> for Label {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A bounded string interner. Past `max_entries` distinct strings (a hostile or very unusual LAPI)
/// it stops remembering and hands out fresh, uninterned labels, so it cannot grow without bound.
#[derive(Debug)]
pub struct Interner {
    set: HashSet<Label>,
    max_entries: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_capacity_limit(4096)
    }
}

impl Interner {
    /// An interner remembering at most `max_entries` strings.
    pub fn with_capacity_limit(max_entries: usize) -> Self {
        Interner {
            set: HashSet::new(),
            max_entries,
        }
    }

    /// The shared label for `s`.
    pub fn intern(&mut self, s: &str) -> Label {
        if let Some(l) = self.set.get(s) {
            return l.clone();
        }
        let l = Label::new(s);
        if self.set.len() < self.max_entries {
            self.set.insert(l.clone());
        }
        l
    }

    /// Number of distinct strings remembered.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// An active decision from the `new` array, canonicalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// LAPI's decision id (database row id; new ids on every community-list refresh, §6).
    pub id: i64,
    /// The canonical value.
    pub value: Value,
    /// Time left when LAPI answered.
    pub duration: GoDuration,
    /// `origin` (`crowdsec`, `cscli`, `CAPI`, `lists`, …), exact case.
    pub origin: Label,
    /// `scenario` (the list name when `origin` is `lists`).
    pub scenario: Label,
    /// `type` (`ban`, `captcha`, …) as sent.
    pub kind: Label,
}

impl Decision {
    /// The origin label usage metrics and per-origin bookkeeping use: `lists:<scenario>` for
    /// origin `lists`, otherwise the origin (`docs/reference/crowdsec-lapi.md` §7).
    pub fn origin_label(&self, interner: &mut Interner) -> Label {
        if self.origin.as_str() == "lists" {
            interner.intern(&format!("lists:{}", self.scenario))
        } else {
            self.origin.clone()
        }
    }
}

/// A decision from the `deleted` array: only the id and the value matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    /// The decision id to drop.
    pub id: i64,
    /// Its canonical value.
    pub value: Value,
}

/// Why one element of a `new`/`deleted` array was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElementError {
    /// The element is JSON but not a decision object (missing field, wrong type).
    #[error("element is not a decision object: {0}")]
    Shape(String),
    /// The value is not an IP or network.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The duration is not Go duration text.
    #[error(transparent)]
    Duration(#[from] DurationError),
}

/// The wire form, borrowing from the element bytes where no JSON escapes are present. Unknown
/// fields (`uuid`, `simulated`, `until`, `scope`) are ignored: scope is deliberately not used
/// (§5: decide address versus network from the value).
#[derive(Deserialize)]
struct WireDecision<'a> {
    id: i64,
    #[serde(borrow)]
    value: Cow<'a, str>,
    #[serde(borrow, default)]
    duration: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    origin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    scenario: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// Outcome of decoding one element's JSON bytes.
pub(crate) enum Decoded<T> {
    Ok(T),
    /// Valid JSON that is not an acceptable decision: counted and skipped.
    Bad(ElementError),
    /// Not even JSON: the whole response is malformed.
    Malformed(serde_json::Error),
}

fn wire<T>(bytes: &[u8]) -> Result<WireDecision<'_>, Decoded<T>> {
    match serde_json::from_slice::<WireDecision<'_>>(bytes) {
        Ok(w) => Ok(w),
        Err(e) if e.is_data() => Err(Decoded::Bad(ElementError::Shape(e.to_string()))),
        Err(e) => Err(Decoded::Malformed(e)),
    }
}

pub(crate) fn decode_new(bytes: &[u8], interner: &mut Interner) -> Decoded<Decision> {
    let w = match wire(bytes) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let value = match Value::parse(&w.value) {
        Ok(v) => v,
        Err(e) => return Decoded::Bad(e.into()),
    };
    let Some(duration) = w.duration else {
        return Decoded::Bad(ElementError::Shape("missing field `duration`".into()));
    };
    let duration = match GoDuration::parse(&duration) {
        Ok(d) => d,
        Err(e) => return Decoded::Bad(e.into()),
    };
    Decoded::Ok(Decision {
        id: w.id,
        value,
        duration,
        origin: interner.intern(w.origin.as_deref().unwrap_or("")),
        scenario: interner.intern(w.scenario.as_deref().unwrap_or("")),
        kind: interner.intern(w.kind.as_deref().unwrap_or("")),
    })
}

pub(crate) fn decode_deleted(bytes: &[u8]) -> Decoded<Deletion> {
    let w = match wire(bytes) {
        Ok(w) => w,
        Err(e) => return e,
    };
    match Value::parse(&w.value) {
        Ok(value) => Decoded::Ok(Deletion { id: w.id, value }),
        Err(e) => Decoded::Bad(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_1_4_6_element_with_sorted_keys() {
        let mut i = Interner::default();
        let bytes = br#"{"duration":"3h59m58.5s","id":7,"origin":"cscli","scenario":"manual 'ban' from 'm'","scope":"Ip","type":"ban","value":"2001:DB8::1"}"#;
        let Decoded::Ok(d) = decode_new(bytes, &mut i) else {
            panic!("not decoded")
        };
        assert_eq!(d.id, 7);
        assert_eq!(d.value.to_string(), "2001:db8::1");
        assert_eq!(d.duration.ceil_secs(), 3 * 3600 + 59 * 60 + 59);
        assert_eq!(d.origin.as_str(), "cscli");
        assert_eq!(d.kind.as_str(), "ban");
    }

    #[test]
    fn interns_repeated_labels() {
        let mut i = Interner::default();
        let a = i.intern("CAPI");
        let b = i.intern("CAPI");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn interner_stops_growing_at_its_limit() {
        let mut i = Interner::with_capacity_limit(2);
        for n in 0..10 {
            let l = i.intern(&format!("s{n}"));
            assert_eq!(l.as_str(), format!("s{n}"));
        }
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn lists_origin_label_carries_the_scenario() {
        let mut i = Interner::default();
        let bytes = br#"{"duration":"1h","id":1,"origin":"lists","scenario":"firehol_voipbl","type":"ban","value":"1.2.3.4"}"#;
        let Decoded::Ok(d) = decode_new(bytes, &mut i) else {
            panic!("not decoded")
        };
        assert_eq!(d.origin_label(&mut i).as_str(), "lists:firehol_voipbl");
    }

    #[test]
    fn bad_value_duration_or_shape_is_a_skippable_element() {
        let mut i = Interner::default();
        for bytes in [
            &br#"{"duration":"1h","id":1,"value":"bob"}"#[..],
            br#"{"duration":"1d","id":1,"value":"1.2.3.4"}"#,
            br#"{"id":"x","duration":"1h","value":"1.2.3.4"}"#,
            br#"{"duration":"1h","value":"1.2.3.4"}"#,
            br#"{"id":1,"value":"1.2.3.4"}"#,
            br#"42"#,
        ] {
            assert!(
                matches!(decode_new(bytes, &mut i), Decoded::Bad(_)),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(matches!(
            decode_new(br#"{"id":1,"#, &mut i),
            Decoded::Malformed(_)
        ));
    }

    #[test]
    fn deletions_need_only_id_and_value() {
        let Decoded::Ok(d) =
            decode_deleted(br#"{"id":3,"value":"::ffff:192.0.2.55","duration":"garbage"}"#)
        else {
            panic!("not decoded")
        };
        assert_eq!(d.id, 3);
        assert_eq!(d.value.to_string(), "192.0.2.55");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let mut i = Interner::default();
        let bytes =
            br#"{"duration":"1h","id":1,"origin":"c\u0073cli","type":"ban","value":"1.2.3.4"}"#;
        let Decoded::Ok(d) = decode_new(bytes, &mut i) else {
            panic!("not decoded")
        };
        assert_eq!(d.origin.as_str(), "cscli");
    }
}
