//! How librdkafka's log lines and client-level errors reach Weft's logs.
//!
//! rdkafka's default context logs every client error at ERROR. Most of them
//! are transient (a broker restarting, a connection dropped) and librdkafka
//! retries them itself; one is not an error at all (end of partition, which
//! a replay asks for). This context logs end-of-partition at DEBUG and the
//! rest at WARN, the first and then one in `LOG_EVERY`, so a broker that
//! is down for minutes does not flood the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use tracing::{debug, info, warn};

use crate::counters::{FetchTotals, Fetched};

/// Log one in this many client errors (the first always).
const LOG_EVERY: u64 = 100;

/// The context of every Weft Kafka client.
#[derive(Debug, Default)]
pub struct WeftContext {
    errors: AtomicU64,
    /// Where a live consumer's statistics go.
    live: Option<Arc<LiveStats>>,
    /// This client's own cumulative counts at its last statistics report.
    seen: Mutex<SeenCounts>,
}

/// Consumer lag per (topic, partition), from librdkafka's statistics.
pub type LagTable = BTreeMap<(String, i32), i64>;

/// What the live consumers' statistics report, shared by the bus and every
/// live consumer it creates.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// The current consumer's lag per assigned partition.
    pub lag: Mutex<LagTable>,
    /// Fetched since the node started, summed over every live consumer (a
    /// replacement after a stall adds to the same totals).
    pub fetched: Mutex<FetchTotals>,
}

/// One client's cumulative counters as librdkafka last reported them.
///
/// librdkafka counts per client instance (and per partition object, which
/// it may drop and recreate): totals over a node's life are the sum of
/// increases between reports, a counter lower than before counting as one
/// that restarted from zero.
#[derive(Debug, Default)]
pub(crate) struct SeenCounts {
    partitions: BTreeMap<(String, i32), Fetched>,
    received_bytes: u64,
}

impl SeenCounts {
    /// Adds to `totals` what grew since the last report: `partitions` are
    /// (topic, partition, cumulative fetched) and `received_bytes` the
    /// client's cumulative bytes from brokers.
    pub(crate) fn advance(
        &mut self,
        partitions: impl IntoIterator<Item = (String, i32, Fetched)>,
        received_bytes: u64,
        totals: &mut FetchTotals,
    ) {
        for (topic, partition, now) in partitions {
            let before = self
                .partitions
                .insert((topic.clone(), partition), now)
                .unwrap_or_default();
            let total = totals.topics.entry(topic).or_default();
            total.bytes += growth(before.bytes, now.bytes);
            total.records += growth(before.records, now.records);
        }
        totals.received_bytes += growth(self.received_bytes, received_bytes);
        self.received_bytes = received_bytes;
    }
}

/// The increase of a cumulative counter from `before` to `now`; a counter
/// that went down was restarted, and all of `now` is new.
fn growth(before: u64, now: u64) -> u64 {
    now.checked_sub(before).unwrap_or(now)
}

impl WeftContext {
    /// A live consumer's context: it records lag and fetched totals in
    /// `live` (the client must set `statistics.interval.ms`).
    pub fn for_live_consumer(live: Arc<LiveStats>) -> Self {
        Self {
            errors: AtomicU64::new(0),
            live: Some(live),
            seen: Mutex::default(),
        }
    }
}

impl ClientContext for WeftContext {
    /// librdkafka's own log lines. It calls a refused connection an error
    /// and retries it; for an operator that is a warning at most.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Notice => info!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", facility, "{message}");
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        let Some(live) = &self.live else { return };
        // librdkafka's per-partition `rxbytes` is the key and value bytes of
        // the records it parsed from fetch responses (`rxmsgs` the records),
        // wanted or not: what the node pulled from the log, apart from the
        // protocol's framing (the client-level `rx_bytes`, every response
        // byte, which a short fetch wait inflates with empty fetches).
        let fetched = statistics.topics.iter().flat_map(|(topic, stats)| {
            stats
                .partitions
                .iter()
                .filter(|(partition, _)| **partition >= 0)
                .map(|(partition, stats)| {
                    let counts = Fetched {
                        bytes: stats.rxbytes,
                        records: stats.rxmsgs,
                    };
                    (topic.clone(), *partition, counts)
                })
        });
        let received = u64::try_from(statistics.rx_bytes).unwrap_or(0);
        self.seen
            .lock()
            .advance(fetched, received, &mut live.fetched.lock());
        let mut table = live.lag.lock();
        // Each report covers the whole assignment: released partitions go.
        table.clear();
        for (topic, stats) in statistics.topics {
            for (partition, stats) in stats.partitions {
                // librdkafka's own `consumer_lag` counts from the committed
                // offset, and Weft's live consumers commit nothing (they
                // position themselves): the lag is the partition's end minus
                // the next offset the node will process (before the first
                // record, the next it will fetch). Negative values are
                // librdkafka's "unknown" (and -1 the internal partition).
                let position = if stats.app_offset >= 0 {
                    stats.app_offset
                } else {
                    stats.next_offset
                };
                // Statistics also list partitions no longer assigned.
                if partition < 0 || !stats.desired || stats.hi_offset < 0 || position < 0 {
                    continue;
                }
                let behind = (stats.hi_offset - position).max(0);
                table.insert((topic.clone(), partition), behind);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            debug!(reason, "end of partition");
            return;
        }
        let count = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if count == 1 || count.is_multiple_of(LOG_EVERY) {
            warn!(count, error = %error, reason, "kafka client error; librdkafka retries");
        }
    }
}

impl ConsumerContext for WeftContext {}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(bytes: u64, records: u64) -> Fetched {
        Fetched { bytes, records }
    }

    fn report(
        seen: &mut SeenCounts,
        totals: &mut FetchTotals,
        partitions: &[(&str, i32, Fetched)],
        received: u64,
    ) {
        let partitions = partitions
            .iter()
            .map(|(topic, partition, fetched)| ((*topic).to_owned(), *partition, *fetched));
        seen.advance(partitions, received, totals);
    }

    #[test]
    fn totals_add_what_grew_between_reports() {
        let mut seen = SeenCounts::default();
        let mut totals = FetchTotals::default();
        report(
            &mut seen,
            &mut totals,
            &[("u", 0, counts(100, 2)), ("u", 1, counts(50, 1))],
            900,
        );
        report(
            &mut seen,
            &mut totals,
            &[("u", 0, counts(160, 3)), ("u", 1, counts(50, 1))],
            1_000,
        );
        assert_eq!(totals.topics["u"], counts(210, 4));
        assert_eq!(totals.received_bytes, 1_000);
    }

    #[test]
    fn a_partition_dropped_from_the_report_keeps_its_share_and_a_restarted_counter_counts_anew() {
        let mut seen = SeenCounts::default();
        let mut totals = FetchTotals::default();
        report(
            &mut seen,
            &mut totals,
            &[("u", 0, counts(100, 2)), ("a", 0, counts(10, 1))],
            0,
        );
        // Partition u/0 released (absent), then assigned again with a fresh
        // partition object counting from zero.
        report(&mut seen, &mut totals, &[("a", 0, counts(10, 1))], 0);
        report(
            &mut seen,
            &mut totals,
            &[("u", 0, counts(30, 1)), ("a", 0, counts(25, 2))],
            0,
        );
        assert_eq!(totals.topics["u"], counts(130, 3));
        assert_eq!(totals.topics["a"], counts(25, 2));
    }

    #[test]
    fn a_replacement_consumer_adds_to_the_same_totals() {
        let live = Arc::new(LiveStats::default());
        let first = WeftContext::for_live_consumer(live.clone());
        let second = WeftContext::for_live_consumer(live.clone());
        let mut fetched = live.fetched.lock();
        first
            .seen
            .lock()
            .advance([("u".to_owned(), 0, counts(500, 5))], 2_000, &mut fetched);
        // The replacement's librdkafka counts start at zero again.
        second
            .seen
            .lock()
            .advance([("u".to_owned(), 0, counts(40, 1))], 300, &mut fetched);
        assert_eq!(fetched.topics["u"], counts(540, 6));
        assert_eq!(fetched.received_bytes, 2_300);
    }
}
