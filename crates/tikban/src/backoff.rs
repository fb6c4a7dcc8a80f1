//! Capped exponential backoff with jitter (`docs/reference/style.md` §9: one small type, checked when built,
//! shared by the LAPI and router reconnects).
//!
//! Sans-IO: randomness comes in as an argument, so tests are deterministic.

use std::time::Duration;

use rand::Rng;

/// Invalid backoff parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffError {
    /// `min` must be > 0 and ≤ `max`.
    #[error("backoff needs 0 < min <= max, got min {min:?}, max {max:?}")]
    Range {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// `jitter` must be in `0.0..=1.0`.
    #[error("backoff jitter must be within 0.0..=1.0, got {0}")]
    Jitter(f64),
}

/// Delays `min`, `2·min`, `4·min`, … capped at `max`; each one shortened by a random fraction of
/// at most `jitter` so that many bouncers do not retry in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// Checks and builds. Typical: `Backoff::new(1 s, 60 s, 0.5)`.
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if min.is_zero() || min > max {
            return Err(BackoffError::Range { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::Jitter(jitter));
        }
        Ok(Backoff {
            min,
            max,
            jitter,
            attempt: 0,
        })
    }

    /// The delay before the next retry; advances the exponent. Always within
    /// `[(1 - jitter) · base, base]` where `base = min(max, min · 2^attempt)`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let base = self
            .min
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max));
        self.attempt = self.attempt.saturating_add(1);
        if self.jitter == 0.0 {
            return base;
        }
        let cut: f64 = rng.gen_range(0.0..=self.jitter);
        base.mul_f64(1.0 - cut)
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn doubles_up_to_the_cap_without_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), 0.0).unwrap();
        let mut r = StdRng::seed_from_u64(1);
        let got: Vec<u64> = (0..6).map(|_| b.next_delay(&mut r).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.next_delay(&mut r), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut r = StdRng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60), 0.5).unwrap();
            let d = b.next_delay(&mut r);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 10);
    }

    #[test]
    fn never_overflows_after_many_failures() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 0.1).unwrap();
        let mut r = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            assert!(b.next_delay(&mut r) <= Duration::from_secs(300));
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1), 0.0).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1), 0.0).is_err());
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 1.5).is_err());
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(1), f64::NAN).is_err());
    }
}
