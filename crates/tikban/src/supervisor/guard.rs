//! Guard's live path in the supervisor (issue 13, `docs/guard.md`): router log rows go through
//! the detectors, a detection becomes a local ban in the same desired state as LAPI's decisions
//! (so the same safety rules, budget and writer apply), and, when machine credentials are set,
//! an alert for LAPI.
//!
//! - **Local bans** are decisions of origin `guard:<scenario>` with negative ids (LAPI's are
//!   positive), lasting `GUARD_BAN_DURATION`. When LAPI later sends the same value (the alert
//!   coming back on the stream), the cache holds both decisions under one value: one router
//!   entry, no second write. A guard ban does not need LAPI: before the first snapshot the router
//!   is reconciled additively (nothing removed), so the ban lands even while LAPI is down.
//! - **Never ourselves**: a detection of an address the safety rules protect (tikban's own
//!   address, the router, the LAPI host, admin sessions, the allowlist, …) is dropped before it
//!   is a ban or an alert. A wrong `MIKROTIK_PASS` makes the router log failed logins from the
//!   container's address: that address is protected.
//! - **Shared only what the router would take**: a detection is checked against the safety rules
//!   as they stand, but the admin sessions they know may be older than the write's own check
//!   (`/user/active` is read again before a write when the last read is older than
//!   [`SESSIONS_FRESH`]). Then the alert is held until that read is answered and checked again:
//!   an admin who logged in since the last read is neither banned on the router nor shared with
//!   every other bouncer of the LAPI. At most [`HOLD_MAX`]: a router that does not answer does
//!   not hold sharing for ever.
//! - **Resume without re-counting**: live rows are counted at their arrival time. After a
//!   (re)connect the follower sends the recent buffer first (`backfill`); rows whose `.id` was
//!   already seen are skipped (a router that rebooted starts its ids again: then every row is
//!   new), and the rows' times of day give their spacing, anchored at the newest one.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crowdsec_lapi::{Alert, AlertQueue, BanAlert, Batch, BatchAdd, GoDuration, Label, Value};

use super::{Action, Failure, FailureKind, JobKind, RouterState, SESSIONS_FRESH, Supervisor};
use crate::guard::{Detection, Guard, Timestamp};
use crate::metrics;
use crate::safety::Verdict;

/// One `/log/print` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// `.id` (`*1A` → 0x1A), when it parsed.
    pub id: Option<u32>,
    /// `time` as the router printed it.
    pub time: String,
    /// `topics`.
    pub topics: String,
    /// `message`.
    pub message: String,
}

/// Alerts waiting for LAPI at most (the oldest goes when full, counted).
pub const ALERT_QUEUE: usize = 1024;
/// Alerts sent in one request at most.
pub const ALERT_BATCH: usize = 32;
/// Guard bans remembered to lift them again when LAPI says their source is allowlisted.
const MAX_RECENT_BANS: usize = 1024;
/// Scenario version sent with alerts.
const SCENARIO_VERSION: &str = "0.1";
/// The longest an alert waits for a fresh read of the admin sessions.
pub const HOLD_MAX: Duration = Duration::from_secs(30);

/// Guard's state in the supervisor.
#[derive(Debug)]
pub(super) struct GuardState {
    guard: Guard,
    /// The highest `.id` counted, to skip rows a backfill sends again.
    last_id: Option<u32>,
    /// Negative decision ids of local bans, counting down.
    next_id: i64,
    /// Alerts for LAPI, when machine credentials are set.
    alerts: Option<AlertQueue>,
    /// Alerts waiting for a fresh read of the admin sessions: (source, detected at, alert).
    held: VecDeque<(Value, Instant, Alert)>,
    /// An alert push is in flight.
    pushing: bool,
    /// Recent local bans (value, decision id), newest last.
    recent: VecDeque<(Value, i64)>,
    bans: [u64; 3],
}

impl GuardState {
    /// Heap bytes of the detectors' source table.
    pub(super) fn heap_bytes(&self) -> usize {
        self.guard.heap_bytes()
    }

    pub(super) fn new(guard: Guard, share: bool) -> Self {
        GuardState {
            guard,
            last_id: None,
            next_id: -1,
            alerts: share.then(|| AlertQueue::new(ALERT_QUEUE, ALERT_BATCH)),
            held: VecDeque::new(),
            pushing: false,
            recent: VecDeque::new(),
            bans: [0; 3],
        }
    }
}

/// The time of day of a RouterOS log `time` (`17:35:45`, `2026-10-02 17:35:45`,
/// `oct/02 17:35:45`), in seconds.
fn time_of_day(text: &str) -> Option<u64> {
    let t = text.rsplit(' ').next()?;
    let mut parts = t.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    (h < 24 && m < 60 && s < 61 && parts.next().is_none()).then_some(h * 3600 + m * 60 + s)
}

/// Arrival times for backfilled rows (oldest first): the newest row is `now_ms`, each earlier
/// row is earlier by the difference of their times of day (across midnight when needed). A row
/// whose time does not parse gets its successor's time.
pub fn backfill_times(rows: &[LogRow], now_ms: u64) -> Vec<u64> {
    let mut out = vec![now_ms; rows.len()];
    let mut next: Option<(u64, u64)> = None; // (time of day, assigned ms) of the row after
    for (i, row) in rows.iter().enumerate().rev() {
        let tod = time_of_day(&row.time);
        let at = match (tod, next) {
            (Some(t), Some((nt, nms))) => {
                let delta = (nt + 86_400 - t) % 86_400;
                nms.saturating_sub(delta * 1000)
            }
            (_, Some((_, nms))) => nms,
            (_, None) => now_ms,
        };
        out[i] = at;
        if let Some(t) = tod {
            next = Some((t, at));
        } else if let Some((nt, _)) = next {
            next = Some((nt, at));
        }
    }
    out
}

impl Supervisor {
    /// Rows of the router log: counted by the detectors; detections become bans.
    pub(super) fn on_log(&mut self, now: Instant, rows: Vec<LogRow>, backfill: bool, now_ms: u64) {
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let times = if backfill {
            // A router that rebooted numbers its log again: every backfilled row is new then.
            if let (Some(last), Some(max)) = (g.last_id, rows.iter().filter_map(|r| r.id).max())
                && max < last
            {
                g.last_id = None;
            }
            backfill_times(&rows, now_ms)
        } else {
            vec![now_ms; rows.len()]
        };
        for (row, ms) in rows.iter().zip(times) {
            if let Some(id) = row.id {
                if backfill && g.last_id.is_some_and(|last| id <= last) {
                    continue;
                }
                g.last_id = Some(g.last_id.map_or(id, |l| l.max(id)));
            }
            g.guard
                .handle_log(Timestamp::from_millis(ms), &row.topics, &row.message);
        }
        let mut detections = Vec::new();
        while let Some(d) = g.guard.poll_detection() {
            detections.push(d);
        }
        for d in detections {
            self.on_detection(now, d);
        }
    }

    /// One detection: a local ban (unless the address is protected) and an alert.
    fn on_detection(&mut self, now: Instant, d: Detection) {
        let value = Value::from_ip(d.source);
        if let Verdict::Skip(reason) = self.policy.verdict(&value) {
            tracing::info!(source = %value, scenario = d.scenario.name(), reason = reason.label(), "guard detection not banned: {}", reason.why());
            return;
        }
        // Whether the admin sessions the verdict used are as fresh as the write's own check
        // wants them; if not, the alert waits for that check (module docs).
        let fresh_sessions = !self.sessions_stale(now);
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let duration = g.guard.settings().ban_duration;
        let id = g.next_id;
        g.next_id -= 1;
        g.bans[d.scenario.index()] += 1;
        if g.recent.len() == MAX_RECENT_BANS {
            g.recent.pop_front();
        }
        g.recent.push_back((value, id));
        let origin = Label::new(&format!("guard:{}", d.scenario.label()));
        tracing::info!(source = %value, scenario = d.scenario.name(), ban = ?duration, "guard ban: {}", d.summary());
        if let Some(q) = g.alerts.as_mut() {
            let settings = g.guard.settings();
            let bucket = match d.scenario {
                crate::guard::Scenario::LoginBf => &settings.login,
                crate::guard::Scenario::UserEnum => &settings.user_enum,
                crate::guard::Scenario::PortScan => &settings.portscan,
            };
            let summary = d.summary();
            let mut alert = Alert::ban(&BanAlert {
                scenario: d.scenario.name(),
                scenario_version: SCENARIO_VERSION,
                source: value,
                duration,
                first_seen: system_time(d.first),
                last_seen: system_time(d.last),
                events_count: d.events,
                capacity: bucket.capacity,
                leakspeed: bucket.leakspeed,
                message: None,
            });
            alert.add_event(
                system_time(d.last),
                &[
                    ("summary", summary.as_str()),
                    ("source_ip", &d.source.to_string()),
                ],
            );
            if fresh_sessions {
                q.push(alert);
            } else {
                if g.held.len() == ALERT_QUEUE
                    && let Some((_, _, oldest)) = g.held.pop_front()
                {
                    q.push(oldest);
                }
                g.held.push_back((value, now, alert));
            }
        }
        let mut batch = Batch::new(false);
        batch.push_add(BatchAdd {
            value,
            id,
            duration: GoDuration::from_secs(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)),
            origin,
        });
        self.apply(now, batch);
    }

    /// True when a write would read `/user/active` first: admin sessions are protected and
    /// readable, and the last read is older than [`SESSIONS_FRESH`] or still being answered.
    fn sessions_stale(&self, now: Instant) -> bool {
        if !self.settings.safety.protections.admin_sessions || self.sessions_unreadable {
            return false;
        }
        self.sessions_reading()
            || self
                .sessions_at
                .is_none_or(|t| now.saturating_duration_since(t) >= SESSIONS_FRESH)
    }

    fn sessions_reading(&self) -> bool {
        matches!(
            &self.router,
            RouterState::Connected { job: Some(j), .. } if j.kind == JobKind::Sessions
        )
    }

    /// Held alerts whose sessions were read since (or that waited [`HOLD_MAX`]) are checked
    /// again: queued, or dropped when their source is protected now.
    fn release_held(&mut self, now: Instant) {
        let reading = self.sessions_reading();
        let unheld = !self.settings.safety.protections.admin_sessions || self.sessions_unreadable;
        let read_at = self.sessions_at;
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        while let Some((value, at, _)) = g.held.front() {
            let read_since = !reading && read_at.is_some_and(|r| r > *at);
            if !(unheld || read_since || now.saturating_duration_since(*at) >= HOLD_MAX) {
                break;
            }
            let value = *value;
            let Some((_, _, alert)) = g.held.pop_front() else {
                break;
            };
            if let Verdict::Skip(reason) = self.policy.verdict(&value) {
                tracing::info!(source = %value, reason = reason.label(), "guard alert not shared: {}", reason.why());
            } else if let Some(q) = g.alerts.as_mut() {
                q.push(alert);
            }
        }
    }

    /// The next alert push, when one is due.
    pub(super) fn alert_action(&mut self, now: Instant) -> Option<Action> {
        self.release_held(now);
        let g = self.guard.as_mut()?;
        if g.pushing {
            return None;
        }
        let batch = g.alerts.as_mut()?.poll(now)?;
        g.pushing = true;
        Some(Action::PushAlerts(batch))
    }

    /// When the next alert push may start, or a held alert's wait ends.
    pub(super) fn alert_timeout(&self, now: Instant) -> Option<Instant> {
        let g = self.guard.as_ref()?;
        let held = g.held.front().map(|(_, at, _)| *at + HOLD_MAX);
        if g.pushing {
            return held;
        }
        let next = g.alerts.as_ref().and_then(|q| q.next_attempt(now));
        match (next, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The answer to [`Action::PushAlerts`].
    pub(super) fn on_alerts_pushed(&mut self, now: Instant, result: Result<(), Failure>) {
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        g.pushing = false;
        let Some(q) = g.alerts.as_mut() else {
            return;
        };
        match result {
            Ok(()) => q.sent(now),
            Err(f) => {
                let retryable = f.kind != FailureKind::Refused;
                tracing::debug!(cause = %f.message, retryable, "guard alert push failed");
                q.failed(now, retryable);
            }
        }
    }

    /// LAPI allowlists `value` (1.6.6+): its local guard bans are lifted.
    pub(super) fn on_lapi_allowlisted(&mut self, now: Instant, value: Value, reason: &str) {
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let ids: Vec<i64> = g
            .recent
            .iter()
            .filter(|(v, _)| *v == value)
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        g.recent.retain(|(v, _)| *v != value);
        tracing::info!(source = %value, reason = %crate::safety::peer_text(reason), "LAPI allowlists a guard ban's source; the ban is lifted");
        let mut batch = Batch::new(false);
        for id in ids {
            batch.push_deleted(crowdsec_lapi::Deletion { value, id });
        }
        self.apply(now, batch);
    }

    /// Guard's gauges and counters.
    pub(super) fn publish_guard(&self) {
        let Some(g) = self.guard.as_ref() else {
            return;
        };
        let m = &self.metrics;
        let c = g.guard.counters();
        for (service, outcome, n) in c.event_counts() {
            m.set(
                metrics::GUARD_EVENTS,
                &[("service", service.label()), ("outcome", outcome.label())],
                n as f64,
            );
        }
        for s in crate::guard::Scenario::ALL {
            m.set(
                metrics::GUARD_DETECTIONS,
                &[("scenario", s.name())],
                c.detections[s.index()] as f64,
            );
            m.set(
                metrics::GUARD_BANS,
                &[("scenario", s.name())],
                g.bans[s.index()] as f64,
            );
        }
        m.set(metrics::GUARD_TRACKED, &[], c.tracked_sources as f64);
        m.set(metrics::GUARD_EVICTIONS, &[], c.evictions as f64);
        m.set(metrics::GUARD_LINES, &[], c.lines as f64);
        if let Some(q) = g.alerts.as_ref() {
            let s = q.stats();
            for (result, n) in [
                ("sent", s.sent),
                ("failed", s.failed),
                ("dropped", s.dropped),
            ] {
                m.set(metrics::GUARD_ALERTS, &[("result", result)], n as f64);
            }
        }
    }

    /// True when guard holds bans the router should have even without LAPI.
    pub(super) fn has_local_bans(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.next_id < -1)
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, time: &str) -> LogRow {
        LogRow {
            id: Some(id),
            time: time.into(),
            topics: String::new(),
            message: String::new(),
        }
    }

    #[test]
    fn backfilled_rows_keep_their_spacing_anchored_at_the_newest() {
        let rows = [
            row(1, "2026-10-02 23:59:50"),
            row(2, "23:59:58"),
            row(3, "oct/03 00:00:05"),
            row(4, "garbage"),
        ];
        let now = 1_000_000_000;
        assert_eq!(
            backfill_times(&rows, now),
            [now - 15_000, now - 7_000, now, now]
        );
    }
}
