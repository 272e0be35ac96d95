//! What the sync layer measures: publishing, loading and snapshotting.
//! The gateway registers these beside its own and serves them at
//! `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricsRegistry;

use crate::compaction_metrics::CompactionMetrics;

/// The sync layer's metrics of one node (cheap to update: atomics).
#[derive(Debug)]
pub struct SyncMetrics {
    /// Seconds a batch took to publish durably (the embedded log's commit,
    /// or the broker's `acks=all`).
    pub publish_seconds: Histogram,
    /// Updates in each published batch.
    pub publish_batch_updates: Histogram,
    /// Seconds to load a document (store, then the log after its snapshot).
    pub load_seconds: Histogram,
    /// Seconds to write a snapshot.
    pub snapshot_seconds: Histogram,
    /// Bytes of each snapshot written.
    pub snapshot_bytes: Histogram,
    /// Documents read again from the log because they held updates they
    /// could not integrate (see `Replica::missing_since`).
    pub documents_reread: Counter,
    /// Of those, the ones the log gave something the document lacked.
    pub documents_repaired: Counter,
    /// Versions taken (automatic, named, restore).
    pub history_versions: Counter,
    /// Restores and undeletes that committed a change.
    pub history_restores: Counter,
    /// Seconds to read a document at a version or instant (the store's
    /// read and the fold).
    pub history_read_seconds: Histogram,
    /// History compaction (an embedded node's; see
    /// [`compaction`](crate::compaction)).
    pub compaction: CompactionMetrics,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            // 100 µs doubling to ~3.3 s.
            publish_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            publish_batch_updates: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 1 ms doubling to ~33 s.
            load_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            snapshot_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 256 B quadrupling to 1 GiB.
            snapshot_bytes: Histogram::new(exponential_buckets(256.0, 4.0, 12)),
            documents_reread: Counter::default(),
            documents_repaired: Counter::default(),
            history_versions: Counter::default(),
            history_restores: Counter::default(),
            // 1 ms doubling to ~33 s.
            history_read_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            compaction: CompactionMetrics::default(),
        }
    }
}

impl SyncMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut MetricsRegistry) {
        registry.register(
            "publish_seconds",
            "Seconds to publish a batch of updates durably (embedded commit or broker acks=all)",
            self.publish_seconds.clone(),
        );
        registry.register(
            "publish_batch_updates",
            "Updates in each durably published batch",
            self.publish_batch_updates.clone(),
        );
        registry.register(
            "document_load_seconds",
            "Seconds to load a document: its snapshot, then the log after it",
            self.load_seconds.clone(),
        );
        registry.register(
            "snapshot_seconds",
            "Seconds to write a document snapshot",
            self.snapshot_seconds.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Bytes of each document snapshot written",
            self.snapshot_bytes.clone(),
        );
        registry.register(
            "documents_reread",
            "Documents read again from the log because they held updates whose dependencies they lacked",
            self.documents_reread.clone(),
        );
        registry.register(
            "documents_repaired",
            "Documents that reading the log again gave updates they lacked (a replica had fallen behind)",
            self.documents_repaired.clone(),
        );
        registry.register(
            "history_versions",
            "Document versions taken (automatic, named, restore)",
            self.history_versions.clone(),
        );
        registry.register(
            "history_restores",
            "Restores and undeletes that committed a change",
            self.history_restores.clone(),
        );
        registry.register(
            "history_read_seconds",
            "Seconds to read a document at a version or instant (checkpoint plus log)",
            self.history_read_seconds.clone(),
        );
        self.compaction.register(registry);
    }
}
