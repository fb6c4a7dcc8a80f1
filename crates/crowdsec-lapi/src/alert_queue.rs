//! A bounded in-RAM queue of alerts waiting for LAPI (sans-IO: time is passed in).
//!
//! The guard bans locally at once and [`push`](AlertQueue::push)es the alert here; a sender task
//! asks [`poll`](AlertQueue::poll) for a batch, pushes it with
//! [`Watcher::push_alerts`](crate::Watcher::push_alerts), and reports
//! [`sent`](AlertQueue::sent) or [`failed`](AlertQueue::failed). While LAPI is unreachable the
//! alerts wait, the oldest dropped (and counted) once the queue is full, and retries back off
//! exponentially. Nothing is written to disk: alerts queued at a restart are lost (the local
//! bans are not).
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use crowdsec_lapi::{Alert, AlertQueue, BanAlert, Value};
//!
//! let mut q = AlertQueue::new(100, 10);
//! let now = SystemTime::now();
//! q.push(Alert::ban(&BanAlert {
//!     scenario: "tikban/routeros-login-bf",
//!     scenario_version: "0.1",
//!     source: Value::parse("192.0.2.7").unwrap(),
//!     duration: Duration::from_secs(4 * 3600),
//!     first_seen: now,
//!     last_seen: now,
//!     events_count: 6,
//!     capacity: 5,
//!     leakspeed: Duration::from_secs(10),
//!     message: None,
//! }));
//! let t0 = Instant::now();
//! let batch = q.poll(t0).expect("one alert is ready");
//! assert_eq!(batch.len(), 1);
//! q.failed(t0, true); // LAPI unreachable: retry later
//! assert!(q.poll(t0).is_none());
//! let retry_at = q.next_attempt(t0).expect("a retry is planned");
//! assert!(q.poll(retry_at).is_some());
//! q.sent(retry_at);
//! assert!(q.is_empty());
//! assert_eq!(q.stats().sent, 1);
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::alert::Alert;

/// Counters of an [`AlertQueue`], since it was made. Every alert pushed ends up in exactly one of
/// `sent`, `failed` and `dropped`, or is still queued:
/// `queued == sent + failed + dropped + len()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Alerts pushed.
    pub queued: u64,
    /// Alerts LAPI accepted.
    pub sent: u64,
    /// Alerts given up after a failure that retrying cannot fix (LAPI refused the payload).
    pub failed: u64,
    /// Alerts dropped, oldest first, because the queue was full.
    pub dropped: u64,
    /// Attempts that failed (retryable or not).
    pub failed_attempts: u64,
}

/// A bounded queue of alerts for LAPI, with batching and exponential backoff.
///
/// Memory: a few hundred bytes per alert plus its events (an alert built with
/// [`Alert::ban`] and the maximum events stays under a few KiB), so the default capacity of
/// 1000 costs at most a few MiB.
#[derive(Debug)]
pub struct AlertQueue {
    alerts: VecDeque<Alert>,
    capacity: usize,
    max_batch: usize,
    /// The first `in_flight` alerts were handed out by the last `poll` and not yet reported.
    in_flight: usize,
    /// Consecutive failed attempts (0 after a success).
    failures: u32,
    not_before: Option<Instant>,
    base_delay: Duration,
    max_delay: Duration,
    stats: QueueStats,
}

impl Default for AlertQueue {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY, Self::DEFAULT_MAX_BATCH)
    }
}

impl AlertQueue {
    /// Default capacity.
    pub const DEFAULT_CAPACITY: usize = 1000;
    /// Default largest batch.
    pub const DEFAULT_MAX_BATCH: usize = 50;
    /// Default first retry delay.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(5);
    /// Default longest retry delay.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);

    /// A queue holding at most `capacity` alerts (at least 1) and handing out batches of at most
    /// `max_batch` (at least 1, at most `capacity`). Backoff: 5 s doubling to 5 min.
    pub fn new(capacity: usize, max_batch: usize) -> Self {
        let capacity = capacity.max(1);
        AlertQueue {
            alerts: VecDeque::new(),
            capacity,
            max_batch: max_batch.clamp(1, capacity),
            in_flight: 0,
            failures: 0,
            not_before: None,
            base_delay: Self::DEFAULT_BASE_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            stats: QueueStats::default(),
        }
    }

    /// Sets the backoff: the first retry after `base`, each next one twice as late, never later
    /// than `max` (`max` is raised to `base` if smaller; both are capped at one day).
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        self.base_delay = base.min(DAY);
        self.max_delay = max.max(base).min(DAY);
        self
    }

    /// Queues an alert. Never blocks and never fails: when the queue is full the oldest alert not
    /// being sent is dropped (or, if all are being sent, the oldest one) and counted in
    /// [`QueueStats::dropped`].
    pub fn push(&mut self, alert: Alert) {
        if self.alerts.len() >= self.capacity {
            if self.alerts.len() > self.in_flight {
                // The oldest waiting alert; the batch being sent stays whole.
                self.alerts.remove(self.in_flight);
            } else {
                self.alerts.pop_front();
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            self.stats.dropped += 1;
        }
        self.alerts.push_back(alert);
        self.stats.queued += 1;
    }

    /// The next batch to send (clones, oldest first, at most `max_batch`), or `None` when the
    /// queue is empty or a retry delay has not passed yet ([`next_attempt`](Self::next_attempt)).
    ///
    /// Report the outcome with [`sent`](Self::sent) or [`failed`](Self::failed). A batch not
    /// reported (its send was cancelled) is handed out again by the next `poll`: delivery is at
    /// least once.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Alert>> {
        if self.alerts.is_empty() || self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        self.in_flight = self.alerts.len().min(self.max_batch);
        Some(self.alerts.iter().take(self.in_flight).cloned().collect())
    }

    /// LAPI accepted the batch from the last [`poll`](Self::poll): it leaves the queue and the
    /// backoff resets.
    pub fn sent(&mut self, _now: Instant) {
        let n = self.in_flight.min(self.alerts.len());
        self.alerts.drain(..n);
        self.stats.sent += n as u64;
        self.in_flight = 0;
        self.failures = 0;
        self.not_before = None;
    }

    /// The batch from the last [`poll`](Self::poll) failed. `retryable` (LAPI unreachable, timed
    /// out, answered 5xx, refused the login: see
    /// [`WatcherError::is_retryable`](crate::WatcherError::is_retryable)) keeps it for a retry
    /// after the backoff delay; otherwise (LAPI refused the payload) it is dropped and counted in
    /// [`QueueStats::failed`], and the next batch may go at once.
    pub fn failed(&mut self, now: Instant, retryable: bool) {
        self.stats.failed_attempts += 1;
        let n = self.in_flight.min(self.alerts.len());
        self.in_flight = 0;
        if retryable {
            self.failures = self.failures.saturating_add(1);
            // The delay is at most a day, so the sum fits any clock; if not, retry at once.
            self.not_before = Some(now.checked_add(self.delay()).unwrap_or(now));
        } else {
            self.alerts.drain(..n);
            self.stats.failed += n as u64;
        }
    }

    /// The delay after the current run of failures: `base × 2^(failures−1)`, at most `max`.
    fn delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// When [`poll`](Self::poll) may next return a batch: `None` when the queue is empty, else
    /// `now` or the end of the retry delay, whichever is later.
    pub fn next_attempt(&self, now: Instant) -> Option<Instant> {
        if self.alerts.is_empty() {
            return None;
        }
        Some(self.not_before.map_or(now, |t| t.max(now)))
    }

    /// Alerts queued, including a batch being sent.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// True when no alert waits.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BanAlert, Value};
    use std::time::SystemTime;

    fn alert(n: u8) -> Alert {
        let now = SystemTime::UNIX_EPOCH;
        Alert::ban(&BanAlert {
            scenario: "tikban/test",
            scenario_version: "0.1",
            source: Value::parse(&format!("192.0.2.{n}")).unwrap(),
            duration: Duration::from_secs(60),
            first_seen: now,
            last_seen: now,
            events_count: 1,
            capacity: 1,
            leakspeed: Duration::from_secs(1),
            message: None,
        })
    }

    fn values(batch: &[Alert]) -> Vec<String> {
        batch.iter().map(|a| a.source.value.clone()).collect()
    }

    fn check_invariant(q: &AlertQueue) {
        let s = q.stats();
        assert_eq!(s.queued, s.sent + s.failed + s.dropped + q.len() as u64);
        assert!(q.len() <= q.capacity);
    }

    #[test]
    fn batches_in_order_and_sent_removes_them() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(10, 2);
        assert!(q.poll(t0).is_none());
        assert_eq!(q.next_attempt(t0), None);
        for n in 1..=3 {
            q.push(alert(n));
        }
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.1", "192.0.2.2"]);
        q.sent(t0);
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.3"]);
        q.sent(t0);
        assert!(q.is_empty());
        assert_eq!(
            q.stats(),
            QueueStats {
                queued: 3,
                sent: 3,
                ..QueueStats::default()
            }
        );
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(3, 3);
        for n in 1..=5 {
            q.push(alert(n));
            check_invariant(&q);
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.stats().dropped, 2);
        assert_eq!(
            values(&q.poll(t0).unwrap()),
            ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
        );
    }

    #[test]
    fn the_batch_being_sent_survives_a_full_queue_when_others_wait() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(3, 2);
        for n in 1..=3 {
            q.push(alert(n));
        }
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.1", "192.0.2.2"]);
        q.push(alert(4)); // drops 192.0.2.3, the oldest waiting
        q.sent(t0);
        check_invariant(&q);
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.4"]);
        // All in flight and full: the oldest in flight goes.
        let mut q = AlertQueue::new(2, 2);
        q.push(alert(1));
        q.push(alert(2));
        q.poll(t0).unwrap();
        q.push(alert(3));
        q.sent(t0);
        check_invariant(&q);
        assert_eq!(q.stats().sent, 1);
        assert_eq!(q.stats().dropped, 1);
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.3"]);
    }

    #[test]
    fn retryable_failures_back_off_exponentially_up_to_the_cap_then_reset() {
        let t0 = Instant::now();
        let mut q =
            AlertQueue::new(10, 5).with_backoff(Duration::from_secs(2), Duration::from_secs(10));
        q.push(alert(1));
        let mut now = t0;
        for expected in [2, 4, 8, 10, 10] {
            assert!(q.poll(now).is_some());
            q.failed(now, true);
            let at = q.next_attempt(now).unwrap();
            assert_eq!(at - now, Duration::from_secs(expected));
            assert!(q.poll(at - Duration::from_millis(1)).is_none(), "too early");
            now = at;
        }
        let batch = q.poll(now).unwrap();
        assert_eq!(values(&batch), ["192.0.2.1"], "the alert was kept");
        q.sent(now);
        q.push(alert(2));
        assert!(q.poll(now).is_some(), "no delay after a success");
        q.failed(now, true);
        assert_eq!(q.next_attempt(now).unwrap() - now, Duration::from_secs(2));
        let s = q.stats();
        assert_eq!((s.sent, s.failed, s.failed_attempts), (1, 0, 6));
        check_invariant(&q);
    }

    #[test]
    fn a_rejected_batch_is_dropped_and_counted_without_delay() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(10, 2);
        for n in 1..=3 {
            q.push(alert(n));
        }
        q.poll(t0).unwrap();
        q.failed(t0, false);
        assert_eq!(q.stats().failed, 2);
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.3"]);
        check_invariant(&q);
    }

    #[test]
    fn an_unreported_batch_is_handed_out_again() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(10, 2);
        q.push(alert(1));
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.1"]);
        q.push(alert(2));
        // The send was cancelled without a report: the next poll covers it again.
        assert_eq!(values(&q.poll(t0).unwrap()), ["192.0.2.1", "192.0.2.2"]);
        q.sent(t0);
        assert!(q.is_empty());
        assert_eq!(q.stats().sent, 2);
    }

    #[test]
    fn reports_without_a_batch_change_nothing_but_counters() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(0, 0);
        assert_eq!((q.capacity, q.max_batch), (1, 1));
        q.sent(t0);
        q.failed(t0, false);
        q.push(alert(1));
        q.failed(t0, false);
        assert_eq!(q.len(), 1, "nothing was in flight");
        check_invariant(&q);
    }

    #[test]
    fn huge_backoff_settings_do_not_overflow() {
        let t0 = Instant::now();
        let mut q = AlertQueue::new(1, 1).with_backoff(Duration::MAX, Duration::MAX);
        q.push(alert(1));
        for _ in 0..40 {
            q.poll(t0);
            q.failed(t0, true);
        }
        assert!(q.poll(t0).is_none());
        assert_eq!(
            q.next_attempt(t0).unwrap() - t0,
            Duration::from_secs(86_400)
        );
    }
}
