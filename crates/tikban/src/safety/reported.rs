//! [`Reported`]: which skipped values were already logged, so each is logged once.

use std::collections::{HashMap, VecDeque};

use crowdsec_lapi::Value;

/// A sensible [`Reported`] capacity: skips are rare (allowlisted or protected addresses, the
/// odd over-wide range), so 1024 distinct values cover them; about 200 KiB at most.
pub const DEFAULT_REPORTED: usize = 1024;
/// Characters of peer text (origin, scenario) kept by [`peer_text`] before escaping.
const PEER_CHARS: usize = 64;

/// A bounded memory of values already logged as skipped.
///
/// The caller logs a skip at info only when [`Reported::first_time`] returns true, so a
/// decision that LAPI re-inserts every two hours, or that every reconcile meets again, is
/// logged once. When a decision ends, [`Reported::forget`] lets a later decision for the same
/// value be logged again.
///
/// Bounded: at most `capacity` values are remembered; past that the oldest remembered value is
/// forgotten first (so it may be logged once more, after `capacity` other values were). Memory
/// is at most `capacity` map entries plus `2 × capacity + 1` queue entries of 32 bytes.
///
/// ```
/// use crowdsec_lapi::Value;
/// use tikban::safety::Reported;
///
/// let mut reported = Reported::new(2);
/// let v = |s: &str| Value::parse(s).unwrap();
/// assert!(reported.first_time(v("192.0.2.1")));
/// assert!(!reported.first_time(v("192.0.2.1")));
/// reported.forget(&v("192.0.2.1"));
/// assert!(reported.first_time(v("192.0.2.1")));
/// ```
#[derive(Debug, Clone)]
pub struct Reported {
    capacity: usize,
    /// Value → the sequence number of its entry in `order`.
    seen: HashMap<Value, u64>,
    /// Insertion order; entries whose sequence number no longer matches `seen` are stale.
    order: VecDeque<(Value, u64)>,
    next: u64,
}

impl Reported {
    /// An empty memory of at most `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Reported {
        Reported {
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// True the first time `value` is seen (log it now), false while it is remembered.
    pub fn first_time(&mut self, value: Value) -> bool {
        if self.seen.contains_key(&value) {
            return false;
        }
        let seq = self.next;
        self.next += 1;
        self.seen.insert(value, seq);
        self.order.push_back((value, seq));
        while self.seen.len() > self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&old) == Some(&old_seq) {
                self.seen.remove(&old);
            }
        }
        if self.order.len() > 2 * self.capacity {
            let seen = &self.seen;
            self.order.retain(|(v, s)| seen.get(v) == Some(s));
        }
        true
    }

    /// Forgets `value`: its next skip is logged again. For a decision that ended, or whose
    /// verdict flipped.
    pub fn forget(&mut self, value: &Value) {
        self.seen.remove(value);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }

    /// Values remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The most values remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Peer text (a decision's origin or scenario, from LAPI) made safe for a log line: at most 64
/// characters, quotes, backslashes and control characters escaped ([`crate::guard::escape`]).
pub fn peer_text(text: &str) -> String {
    crate::guard::escape(text, PEER_CHARS)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn host(i: u32) -> Value {
        Value::from_ip(Ipv4Addr::from(i).into())
    }

    #[test]
    fn logs_once_until_forgotten() {
        let mut r = Reported::new(DEFAULT_REPORTED);
        assert!(r.first_time(host(1)));
        assert!(!r.first_time(host(1)));
        assert!(r.first_time(host(2)));
        assert_eq!(r.len(), 2);
        r.forget(&host(1));
        assert_eq!(r.len(), 1);
        assert!(r.first_time(host(1)));
        assert!(!r.first_time(host(1)));
        r.clear();
        assert!(r.is_empty());
        assert!(r.first_time(host(2)));
    }

    #[test]
    fn the_oldest_is_forgotten_first_when_full() {
        let mut r = Reported::new(3);
        for i in 0..3 {
            assert!(r.first_time(host(i)));
        }
        assert!(r.first_time(host(3)), "a fourth value evicts the first");
        assert_eq!(r.len(), 3);
        assert!(!r.first_time(host(1)));
        assert!(!r.first_time(host(3)));
        assert!(r.first_time(host(0)), "the first was forgotten");
    }

    #[test]
    fn forget_and_reinsert_does_not_evict_the_new_entry_early() {
        let mut r = Reported::new(2);
        assert!(r.first_time(host(1)));
        r.forget(&host(1));
        assert!(r.first_time(host(1)), "new sequence number");
        assert!(r.first_time(host(2)));
        // The stale first entry of host 1 is popped without removing the live one.
        assert!(!r.first_time(host(1)));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn memory_stays_bounded_under_churn() {
        let mut r = Reported::new(8);
        for i in 0..10_000 {
            r.first_time(host(i % 50));
            if i % 3 == 0 {
                r.forget(&host((i + 7) % 50));
            }
            assert!(r.len() <= 8);
            assert!(r.order.len() <= 2 * 8 + 1, "{}", r.order.len());
        }
        assert_eq!(Reported::new(0).capacity(), 1);
    }

    #[test]
    fn peer_text_is_escaped_and_cut() {
        assert_eq!(peer_text("crowdsec"), "crowdsec");
        assert_eq!(peer_text("a\"b\\c\nd"), "a\\\"b\\\\c\\x0ad");
        let long = "x".repeat(100);
        assert_eq!(peer_text(&long), format!("{}...", "x".repeat(64)));
    }
}
