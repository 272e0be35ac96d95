//! How the crate's retry loops wait: exponentially growing pauses with
//! jitter, so nodes and workers that failed together (a broker or store
//! restart) do not retry in lockstep.
//!
//! The schedule is `backon`'s: each pause is the current delay plus a random
//! part of it (so between one and two times the delay), the delay doubling
//! from `first` up to `max`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The pauses between attempts, first to last; never ends.
pub(crate) fn pauses(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
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
}
