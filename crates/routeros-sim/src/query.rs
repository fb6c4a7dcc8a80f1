//! `print` query evaluation: the `?` word stack machine (`docs/reference/routeros-api.md` §2 "Queries").
//!
//! - `?name` pushes true if the item has the property, `?-name` if it lacks it;
//! - `?name=x` / `?=name=x` push equality, `?<name=x` / `?>name=x` compare;
//! - `?#ops` runs `!` (negate top), `&` / `|` (pop two, push AND / OR), digits (address the
//!   stack, top = 0), left to right;
//! - the stack starts with infinitely many `true`; the item matches unless a `false` remains.
//!
//! The digit and `.` rules follow the MikroTik API manual's operation list: an index followed by
//! another character pushes a copy of that value; an index at the end of the word replaces the
//! whole stack with that value; `.` after an index does nothing, elsewhere it pushes a copy of the
//! top.

use routeros_proto::Query;

/// A property list of one item, in print order: `(name, value)`.
pub type Props = Vec<(String, String)>;

/// A query the sim cannot evaluate. The router's wording is **unverified**.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query operation {0:?}")]
pub struct QueryError(pub String);

/// True if `item` passes every query word (an empty query matches everything).
pub fn matches(queries: &[Query], item: &Props) -> Result<bool, QueryError> {
    let mut stack = Stack::default();
    for q in queries {
        match q {
            Query::Has(k) => stack.push(lookup(item, k).is_some()),
            Query::Lacks(k) => stack.push(lookup(item, k).is_none()),
            Query::Eq(k, v) => stack.push(lookup(item, k).is_some_and(|have| equal(have, v))),
            Query::Lt(k, v) => stack.push(
                lookup(item, k).is_some_and(|have| compare(have, v) == std::cmp::Ordering::Less),
            ),
            Query::Gt(k, v) => stack.push(
                lookup(item, k).is_some_and(|have| compare(have, v) == std::cmp::Ordering::Greater),
            ),
            Query::Ops(ops) => stack.run(ops)?,
        }
    }
    Ok(stack.result())
}

/// Checks the operator words once, so a bad query traps even when no item exists.
pub fn validate(queries: &[Query]) -> Result<(), QueryError> {
    let mut stack = Stack::default();
    for q in queries {
        if let Query::Ops(ops) = q {
            stack.run(ops)?;
        }
    }
    Ok(())
}

fn lookup<'a>(item: &'a Props, key: &str) -> Option<&'a str> {
    item.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Equality on text; booleans also match their v6 spelling (`yes`/`no`, §7).
fn equal(have: &str, want: &[u8]) -> bool {
    if have.as_bytes() == want {
        return true;
    }
    matches!(
        (have, want),
        ("true", b"yes") | ("false", b"no") | ("yes", b"true") | ("no", b"false")
    )
}

/// Numbers compare as numbers, `.id`s (`*1A`) as their hex value, anything else as bytes.
fn compare(have: &str, want: &[u8]) -> std::cmp::Ordering {
    let want = String::from_utf8_lossy(want);
    if let (Ok(a), Ok(b)) = (have.parse::<u64>(), want.parse::<u64>()) {
        return a.cmp(&b);
    }
    let id = |s: &str| {
        s.strip_prefix('*')
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    };
    if let (Some(a), Some(b)) = (id(have), id(&want)) {
        return a.cmp(&b);
    }
    have.as_bytes().cmp(want.as_bytes())
}

/// The query stack: explicit values on top of an infinite run of `bottom`.
#[derive(Debug)]
struct Stack {
    vals: Vec<bool>,
    bottom: bool,
}

impl Default for Stack {
    fn default() -> Self {
        Self {
            vals: Vec::new(),
            bottom: true,
        }
    }
}

impl Stack {
    fn push(&mut self, v: bool) {
        self.vals.push(v);
    }

    fn pop(&mut self) -> bool {
        self.vals.pop().unwrap_or(self.bottom)
    }

    fn at(&self, index: usize) -> bool {
        self.vals
            .len()
            .checked_sub(index + 1)
            .map_or(self.bottom, |i| self.vals[i])
    }

    fn run(&mut self, ops: &str) -> Result<(), QueryError> {
        let bytes = ops.as_bytes();
        let mut i = 0;
        let mut after_index = false;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_digit() {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let index: usize = ops[start..i]
                    .parse()
                    .map_err(|_| QueryError(ops.to_owned()))?;
                let v = self.at(index);
                if i == bytes.len() {
                    self.vals.clear();
                    self.bottom = v;
                } else {
                    self.push(v);
                }
                after_index = true;
                continue;
            }
            match c {
                b'!' => {
                    let v = self.pop();
                    self.push(!v);
                }
                b'&' => {
                    let (a, b) = (self.pop(), self.pop());
                    self.push(a && b);
                }
                b'|' => {
                    let (a, b) = (self.pop(), self.pop());
                    self.push(a || b);
                }
                b'.' if after_index => {}
                b'.' => {
                    let v = self.at(0);
                    self.push(v);
                }
                _ => return Err(QueryError(ops.to_owned())),
            }
            after_index = false;
            i += 1;
        }
        Ok(())
    }

    fn result(&self) -> bool {
        self.bottom && self.vals.iter().all(|&v| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn q(words: &[&str]) -> Vec<Query> {
        words
            .iter()
            .map(|w| Query::parse_word(w.as_bytes()).unwrap())
            .collect()
    }

    fn m(words: &[&str], it: &Props) -> bool {
        matches(&q(words), it).unwrap()
    }

    #[test]
    fn empty_query_matches_everything() {
        assert!(m(&[], &item(&[])));
    }

    #[test]
    fn has_and_lacks() {
        let it = item(&[("comment", "x")]);
        assert!(m(&["?comment"], &it));
        assert!(!m(&["?timeout"], &it));
        assert!(m(&["?-timeout"], &it));
        assert!(!m(&["?-comment"], &it));
    }

    #[test]
    fn equality_in_both_spellings() {
        let it = item(&[("list", "crowdsec")]);
        assert!(m(&["?list=crowdsec"], &it));
        assert!(m(&["?=list=crowdsec"], &it));
        assert!(!m(&["?list=other"], &it));
    }

    #[test]
    fn or_of_two_types() {
        let q = ["?type=ether", "?type=vlan", "?#|"];
        assert!(m(&q, &item(&[("type", "ether")])));
        assert!(m(&q, &item(&[("type", "vlan")])));
        assert!(!m(&q, &item(&[("type", "bridge")])));
    }

    #[test]
    fn not_equal_form_of_librouteros() {
        let q = ["?=list=a", "?#!"];
        assert!(!m(&q, &item(&[("list", "a")])));
        assert!(m(&q, &item(&[("list", "b")])));
    }

    #[test]
    fn in_form_of_librouteros() {
        let q = ["?=list=a", "?=list=b", "?=list=c", "?#|", "?#|"];
        for l in ["a", "b", "c"] {
            assert!(m(&q, &item(&[("list", l)])), "{l}");
        }
        assert!(!m(&q, &item(&[("list", "d")])));
    }

    #[test]
    fn and_and_plain_sequence() {
        let it = item(&[("list", "a"), ("dynamic", "true")]);
        assert!(m(&["?list=a", "?dynamic=true", "?#&"], &it));
        assert!(m(&["?list=a", "?dynamic=yes"], &it));
        assert!(!m(&["?list=a", "?dynamic=false"], &it));
    }

    #[test]
    fn comparisons_are_numeric_where_possible() {
        let it = item(&[("bytes", "100"), (".id", "*1A")]);
        assert!(m(&["?>bytes=99"], &it));
        assert!(m(&["?<bytes=1000"], &it));
        assert!(!m(&["?<bytes=100"], &it));
        assert!(m(&["?>.id=*9"], &it));
    }

    #[test]
    fn digits_copy_and_trailing_index_replaces_stack() {
        let it = item(&[("a", "1")]);
        // false, true; "1" copies the false (index 1) on top: false remains.
        assert!(!m(&["?a=2", "?a=1", "?#1&"], &it));
        // Trailing index replaces the whole stack with the top (true): passes despite a false.
        assert!(m(&["?a=2", "?a=1", "?#0"], &it));
        // `.` pushes a copy of the top.
        assert!(!m(&["?a=2", "?#.|"], &it));
    }

    #[test]
    fn rejects_unknown_operator() {
        assert!(matches(&q(&["?#x"]), &item(&[])).is_err());
        assert!(validate(&q(&["?#&x"])).is_err());
    }
}
