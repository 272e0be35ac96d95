//! How librdkafka's log lines and client-level errors reach Weft's logs.
//!
//! rdkafka's default context logs every client error at ERROR. Most of them
//! are transient (a broker restarting, a connection dropped) and librdkafka
//! retries them itself; one is not an error at all (end of partition, which
//! a replay asks for). This context logs end-of-partition at DEBUG and the
//! rest at WARN, the first and then one in [`LOG_EVERY`], so a broker that
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

/// Log one in this many client errors (the first always).
const LOG_EVERY: u64 = 100;

/// The context of every Weft Kafka client.
#[derive(Debug, Default)]
pub struct WeftContext {
    errors: AtomicU64,
    /// Where a consumer's statistics put its lag per partition.
    lag: Option<Arc<LagTable>>,
}

/// Consumer lag per (topic, partition), from librdkafka's statistics.
pub type LagTable = Mutex<BTreeMap<(String, i32), i64>>;

impl WeftContext {
    /// A context that records the client's consumer lag in `lag` (the
    /// client must set `statistics.interval.ms`).
    pub fn with_lag(lag: Arc<LagTable>) -> Self {
        Self {
            errors: AtomicU64::new(0),
            lag: Some(lag),
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
        let Some(lag) = &self.lag else { return };
        let mut table = lag.lock();
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
