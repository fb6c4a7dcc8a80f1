//! The sim's clock: monotonic time since the sim was created, plus a manual offset.
//!
//! By default it follows real (tokio) time, so timeouts count down as on a router, and tests add
//! jumps with [`SimClock::advance`] instead of sleeping. In [`ClockMode::Manual`] it moves only
//! when advanced, which makes printed timeouts exact. Under `tokio::time::pause()` the
//! real-time mode follows tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

/// How the clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Real (tokio) monotonic time plus manual advances.
    #[default]
    Realtime,
    /// Only manual advances.
    Manual,
}

/// A cheap, cloneable handle on the sim clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    mode: ClockMode,
    start: Instant,
    wall_start: SystemTime,
    offset: Mutex<Duration>,
    /// Bumped by every [`SimClock::advance`]: streams re-check what expired.
    advanced: watch::Sender<u64>,
}

impl SimClock {
    /// A clock starting now.
    pub fn new(mode: ClockMode) -> Self {
        Self {
            inner: Arc::new(ClockInner {
                mode,
                start: Instant::now(),
                wall_start: SystemTime::now(),
                offset: Mutex::new(Duration::ZERO),
                advanced: watch::channel(0).0,
            }),
        }
    }

    /// Time since the clock was created (sim time). Never goes backwards.
    pub fn now(&self) -> Duration {
        let offset = *lock(&self.inner.offset);
        match self.inner.mode {
            ClockMode::Realtime => self.inner.start.elapsed() + offset,
            ClockMode::Manual => offset,
        }
    }

    /// Moves sim time forward by `by`: timeouts run down and expired entries vanish.
    pub fn advance(&self, by: Duration) {
        *lock(&self.inner.offset) += by;
        self.inner.advanced.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes on every [`SimClock::advance`].
    pub(crate) fn advances(&self) -> watch::Receiver<u64> {
        self.inner.advanced.subscribe()
    }

    /// How long, in tokio time, until sim time reaches `at`; `None` if the clock only moves when
    /// advanced (then [`SimClock::advances`] is the signal).
    pub(crate) fn until(&self, at: Duration) -> Option<Duration> {
        match self.inner.mode {
            ClockMode::Realtime => Some(at.saturating_sub(self.now())),
            ClockMode::Manual => None,
        }
    }

    /// The mode the clock was created with.
    pub fn mode(&self) -> ClockMode {
        self.inner.mode
    }

    /// Wall-clock time matching sim time `at` (for `creation-time`).
    pub fn wall(&self, at: Duration) -> SystemTime {
        self.inner.wall_start + at
    }
}

/// Locks a std mutex, recovering from poisoning: sim state stays usable after a panicking test.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = SimClock::new(ClockMode::Manual);
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), Duration::from_secs(5));
    }

    #[test]
    fn realtime_clock_adds_offset() {
        let c = SimClock::new(ClockMode::Realtime);
        c.advance(Duration::from_secs(3600));
        assert!(c.now() >= Duration::from_secs(3600));
    }
}
