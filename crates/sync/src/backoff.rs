//! How Weft's retry loops wait: exponentially growing pauses with jitter,
//! so nodes and workers that failed together (a broker or store restart)
//! do not retry in lockstep. The one backoff of the workspace: the Kafka
//! crate's retries use it too.
//!
//! The schedule is `backon`'s: each pause is the current delay plus a
//! random part of it (so between one and two times the delay), the delay
//! doubling from `first` up to `max`. A leaf: it imports nothing else of
//! this crate.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// The pauses between attempts, first to last; never ends.
#[derive(Debug)]
pub struct Pauses {
    schedule: ExponentialBackoff,
    max: Duration,
}

impl Pauses {
    /// Pauses whose delay starts at `first` and doubles up to `max` (a
    /// jittered pause is below twice its delay).
    pub fn new(first: Duration, max: Duration) -> Self {
        let schedule = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Self { schedule, max }
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        // The schedule has no end; the cap stands in should it ever stop.
        self.schedule.next().unwrap_or(self.max)
    }
}

/// Retries of work a timer offers again and again (the persistence
/// worker's snapshot writes): after a failure the work waits out a pause
/// before its next attempt, growing while it keeps failing; a success
/// resets it.
#[derive(Debug)]
pub struct RetryGate {
    first: Duration,
    max: Duration,
    /// The pauses since the first failure in a row, and when the next
    /// attempt may run; `None` while the last attempt succeeded.
    failing: Option<(Pauses, Instant)>,
}

impl RetryGate {
    /// A gate whose pauses start at `first` and grow to `max` (jittered:
    /// up to twice that).
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failing: None,
        }
    }

    /// Whether an attempt may run at `now`.
    pub fn open(&self, now: Instant) -> bool {
        self.failing
            .as_ref()
            .is_none_or(|(_, next_attempt)| now >= *next_attempt)
    }

    /// The attempt at `now` failed: the next waits a pause.
    pub fn failed(&mut self, now: Instant) {
        let (first, max) = (self.first, self.max);
        let (pauses, next_attempt) = self
            .failing
            .get_or_insert_with(|| (Pauses::new(first, max), now));
        *next_attempt = now + pauses.next_pause();
    }

    /// The attempt succeeded: the next runs when offered.
    pub fn succeeded(&mut self) {
        self.failing = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_pauses_stay_within_their_bounds() {
        let first = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let mut pauses = Pauses::new(first, max);
        let taken: Vec<Duration> = (0..50).map(|_| pauses.next_pause()).collect();
        // `backon` multiplies in `f32`: a delay may be off by a hair.
        let hair = Duration::from_micros(1);
        let mut delay = first;
        for pause in &taken {
            assert!(
                *pause + hair >= delay && *pause < delay * 2 + hair,
                "a pause is its delay plus up to as much again: {taken:?}"
            );
            delay = (delay * 2).min(max);
        }
        assert!(
            taken
                .iter()
                .all(|pause| *pause >= first && *pause < max * 2 + hair),
            "{taken:?}"
        );
        assert!(
            taken.windows(2).any(|pair| pair[0] != pair[1]),
            "jittered, not a fixed schedule: {taken:?}"
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
