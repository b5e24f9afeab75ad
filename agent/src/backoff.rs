//! Retry pacing: exponential backoff with full jitter (a random delay between zero
//! and `min(cap, base * 2^attempt)`), reset after a success.
//!
//! Invariant: no delay exceeds the cap, and the ceiling never overflows however many
//! attempts fail. Full jitter spreads a fleet of agents that lost the control plane
//! at the same moment, so a restarted server is not hit by all of them at once.

use std::time::Duration;

/// Backoff state of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// The agent's standard pacing: base 1 s, cap 30 s.
    pub fn standard() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt, given a uniformly random `u64`.
    pub fn next_delay_with(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling().as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(random % (ceiling + 1))
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        use channel::rand_core::Rng as _;
        self.next_delay_with(channel::os_rng().next_u64())
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_growing_ceiling_and_the_cap() {
        let mut b = Backoff::standard();
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                assert!(b.next_delay() <= Duration::from_millis(c));
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // The extremes of the random input land on zero and on the ceiling.
        let mut b = Backoff::standard();
        assert_eq!(b.next_delay_with(0), Duration::ZERO);
        assert_eq!(b.next_delay_with(2000), Duration::from_millis(2000));
        assert!(b.next_delay_with(u64::MAX) <= Duration::from_secs(4));
    }

    #[test]
    fn many_failures_never_overflow_and_reset_starts_over() {
        let mut b = Backoff::standard();
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
        assert_eq!(b.failures(), 10_000);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        assert_eq!(b.failures(), 0);
    }
}
