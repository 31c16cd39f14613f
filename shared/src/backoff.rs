//! Capped exponential backoff with jitter, for waiting out an unavailable dependency.
//!
//! Each [`Backoff::next`] returns the next pause: the nominal delay starts at `start`, doubles
//! after every call and stops growing at `cap`; the pause returned is drawn at random from
//! the upper half of the nominal delay (`[d/2, d]`), so many clients that lost the same
//! dependency at the same moment do not retry in lockstep. [`Backoff::reset`] starts over
//! once the dependency answers again.
//!
//! ```
//! # use std::time::Duration;
//! # use shared::backoff::Backoff;
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! let first = backoff.next();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! backoff.reset();
//! ```

use std::time::Duration;

/// The delays of one retry loop. Not shared between loops: each keeps its own.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    nominal: Duration,
}

impl Backoff {
    /// A backoff whose first pause is at most `start` and no pause exceeds `cap`
    /// (`cap` below `start` is raised to `start`).
    pub fn new(start: Duration, cap: Duration) -> Backoff {
        Backoff {
            start,
            cap: cap.max(start),
            nominal: start,
        }
    }

    /// The pause before the next attempt; the following one will be about twice as long,
    /// up to the cap.
    // Not `Iterator::next`: the sequence never ends, so an `Option` would only be unwrapped.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = (nominal * 2).min(self.cap);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Starts over from `start` (call it when the dependency answered).
    pub fn reset(&mut self) {
        self.nominal = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    fn within(pause: Duration, nominal: Duration) -> bool {
        pause >= nominal / 2 && pause <= nominal
    }

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::new(START, CAP);
        let nominal = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for (attempt, ms) in nominal.into_iter().enumerate() {
            let pause = backoff.next();
            assert!(
                within(pause, Duration::from_millis(ms)),
                "attempt {attempt}: {pause:?} is not within [{ms}/2, {ms}] ms"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(START, CAP);
        for _ in 0..20 {
            backoff.next();
        }
        backoff.reset();
        assert!(within(backoff.next(), START));
        assert!(within(backoff.next(), START * 2));
    }

    #[test]
    fn jitter_spreads_the_pauses() {
        let pauses: std::collections::HashSet<Duration> =
            (0..32).map(|_| Backoff::new(CAP, CAP).next()).collect();
        assert!(pauses.len() > 1, "every pause was {pauses:?}");
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut backoff = Backoff::new(START, Duration::from_millis(1));
        for _ in 0..5 {
            assert!(within(backoff.next(), START));
        }
    }
}
