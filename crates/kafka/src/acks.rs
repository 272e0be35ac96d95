//! Whether the brokers acknowledge what this node produces, judged by its
//! heartbeats.
//!
//! A node publishes a heartbeat every `--node-heartbeat-interval` with the
//! same idempotent `acks=all` producer as its updates. A metadata request
//! is answered by any live broker, so it cannot tell that the brokers no
//! longer make records durable: with two of three brokers down, the third
//! still answers metadata (from its stale view) while every `acks=all`
//! produce waits for replicas that are gone. A heartbeat left
//! unacknowledged for [`HEARTBEAT_ACK_STALL`] can: the node then reports
//! the bus as unhealthy (readiness), even when no client writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A heartbeat unacknowledged this long makes the bus unhealthy. Heartbeats
/// go every second by default and a healthy broker acknowledges in
/// milliseconds; a partition leader fails over in a few seconds.
pub(crate) const HEARTBEAT_ACK_STALL: Duration = Duration::from_secs(5);

/// The oldest heartbeat sent since the brokers last acknowledged one.
#[derive(Debug)]
pub(crate) struct AckWatch {
    epoch: Instant,
    /// Milliseconds from `epoch` to the send of the oldest heartbeat not
    /// acknowledged, plus one; 0 when none waits.
    waiting_since: AtomicU64,
}

impl Default for AckWatch {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            waiting_since: AtomicU64::new(0),
        }
    }
}

impl AckWatch {
    /// A heartbeat was handed to the producer at `now`.
    pub(crate) fn sent(&self, now: Instant) {
        let since = self.millis(now);
        // Only the oldest waiting send counts.
        let _already_waiting =
            self.waiting_since
                .compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The brokers acknowledged a heartbeat. Heartbeats go to one partition
    /// and are acknowledged in order, so nothing sent before it waits. (One
    /// sent after it and not yet acknowledged is counted from the next
    /// send: at most one heartbeat interval late.)
    pub(crate) fn acknowledged(&self) {
        self.waiting_since.store(0, Ordering::Release);
    }

    /// How long the oldest unacknowledged heartbeat has waited at `now`. A
    /// heartbeat that failed (timed out) still counts as waiting: only an
    /// acknowledgement ends the wait.
    pub(crate) fn unacknowledged_for(&self, now: Instant) -> Option<Duration> {
        match self.waiting_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                now.saturating_duration_since(self.epoch)
                    .saturating_sub(Duration::from_millis(since - 1)),
            ),
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_sent_is_nothing_waiting() {
        let watch = AckWatch::default();
        assert_eq!(watch.unacknowledged_for(Instant::now() + 60 * SECOND), None);
    }

    #[test]
    fn the_wait_counts_from_the_oldest_unacknowledged_send() {
        let watch = AckWatch::default();
        let start = watch.epoch;
        watch.sent(start + SECOND);
        watch.sent(start + 2 * SECOND);
        watch.sent(start + 3 * SECOND);
        assert_eq!(
            watch.unacknowledged_for(start + 7 * SECOND),
            Some(6 * SECOND)
        );
    }

    #[test]
    fn an_acknowledgement_ends_the_wait_and_the_next_send_starts_another() {
        let watch = AckWatch::default();
        let start = watch.epoch;
        watch.sent(start + SECOND);
        watch.acknowledged();
        assert_eq!(watch.unacknowledged_for(start + 10 * SECOND), None);
        watch.sent(start + 11 * SECOND);
        assert_eq!(
            watch.unacknowledged_for(start + 12 * SECOND),
            Some(SECOND),
            "counted from the send after the acknowledgement"
        );
    }

    #[test]
    fn a_broker_outage_is_a_growing_wait_until_an_acknowledgement() {
        let watch = AckWatch::default();
        let start = watch.epoch;
        // Heartbeats every second; the brokers stop acknowledging after the
        // first. Failed deliveries (timeouts) do not end the wait.
        watch.sent(start);
        watch.acknowledged();
        for second in 1..=20 {
            watch.sent(start + second * SECOND);
        }
        let waited = watch.unacknowledged_for(start + 20 * SECOND).unwrap();
        assert!(waited >= HEARTBEAT_ACK_STALL, "{waited:?}");
        assert_eq!(waited, 19 * SECOND);
        watch.acknowledged();
        assert_eq!(watch.unacknowledged_for(start + 21 * SECOND), None);
    }
}
