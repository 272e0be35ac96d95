//! How the crate's retry loops wait: exponentially growing pauses with
//! jitter, so nodes that failed together (a broker or store restart) do not
//! retry in lockstep.
//!
//! The schedule is `backon`'s (as the Kafka crate's retries use): each pause
//! is the current delay plus a random part of it (so between one and two
//! times the delay), the delay doubling from `first` up to `max`. A leaf: it
//! imports nothing else of this crate.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The pauses between attempts, first to last; never ends.
#[derive(Debug)]
pub(crate) struct Pauses {
    schedule: ExponentialBackoff,
    max: Duration,
}

impl Pauses {
    /// Pauses whose delay starts at `first` and doubles up to `max` (a
    /// jittered pause is below twice its delay).
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
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
    pub(crate) fn next_pause(&mut self) -> Duration {
        // The schedule has no end; the cap stands in should it ever stop.
        self.schedule.next().unwrap_or(self.max)
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
}
