//! How the crate's retry loops wait: exponentially growing pauses with
//! jitter, so nodes and workers that failed together (a broker or store
//! restart) do not retry in lockstep.
//!
//! The schedule is `backon`'s: each pause is the current delay plus a random
//! part of it (so between one and two times the delay), the delay doubling
//! from `first` up to `max`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// The pauses between attempts, first to last; never ends.
pub(crate) fn pauses(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    schedule(first, max)
}

fn schedule(first: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Retries of work a timer offers again and again (the worker's snapshot
/// writes): after a failure the work waits out a pause before its next
/// attempt, growing while it keeps failing; a success resets it.
#[derive(Debug)]
pub(crate) struct RetryGate {
    first: Duration,
    max: Duration,
    /// The pauses since the first failure in a row, and when the next
    /// attempt may run; `None` while the last attempt succeeded.
    failing: Option<(ExponentialBackoff, Instant)>,
}

impl RetryGate {
    /// A gate whose pauses start at `first` and grow to `max` (jittered:
    /// up to twice that).
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failing: None,
        }
    }

    /// Whether an attempt may run at `now`.
    pub(crate) fn open(&self, now: Instant) -> bool {
        self.failing
            .as_ref()
            .is_none_or(|(_, next_attempt)| now >= *next_attempt)
    }

    /// The attempt at `now` failed: the next waits a pause.
    pub(crate) fn failed(&mut self, now: Instant) {
        let (first, max) = (self.first, self.max);
        let (pauses, next_attempt) = self
            .failing
            .get_or_insert_with(|| (schedule(first, max), now));
        *next_attempt = now + pauses.next().unwrap_or(max);
    }

    /// The attempt succeeded: the next runs when offered.
    pub(crate) fn succeeded(&mut self) {
        self.failing = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_with_jitter_up_to_the_cap_and_never_end() {
        let first = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let pauses: Vec<Duration> = pauses(first, max).take(50).collect();
        assert_eq!(pauses.len(), 50);
        assert!(pauses[0] >= first && pauses[0] < first * 2, "{pauses:?}");
        assert!(
            pauses[1] >= first * 2 && pauses[1] < first * 4,
            "{pauses:?}"
        );
        assert!(pauses.iter().all(|pause| *pause < max * 2), "{pauses:?}");
        assert!(
            pauses.windows(2).any(|pair| pair[0] != pair[1]),
            "jittered, not a fixed schedule: {pauses:?}"
        );
    }

    #[test]
    fn a_gate_closes_for_growing_pauses_while_attempts_fail() {
        let first = Duration::from_millis(100);
        let max = Duration::from_millis(400);
        let start = Instant::now();
        let mut gate = RetryGate::new(first, max);
        assert!(gate.open(start));
        gate.failed(start);
        assert!(
            !gate.open(start + first / 2),
            "the first pause is at least `first`"
        );
        assert!(gate.open(start + first * 2), "and below twice it");
        let later = start + first * 2;
        gate.failed(later);
        assert!(
            !gate.open(later + first * 2 - Duration::from_millis(1)),
            "it grew"
        );
        assert!(gate.open(later + max * 2));
        gate.succeeded();
        assert!(gate.open(later), "a success opens it at once");
    }
}
