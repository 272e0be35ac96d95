//! What history compaction measures (see [`compaction`](crate::compaction)):
//! a leaf module, so the node's [`SyncMetrics`](crate::SyncMetrics) can
//! hold it.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as MetricsRegistry;

/// The `result` label of a compaction pass.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PassResult {
    /// Every document compacted: `ok`.
    Ok,
    /// A document failed or changed meanwhile, or the list failed:
    /// `failed`.
    Failed,
}

impl PassResult {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for PassResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The label set of [`CompactionMetrics::runs`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabel {
    /// How the pass ended.
    pub result: PassResult,
}

/// What compaction measures (cheap to clone: the clones share values).
#[derive(Debug, Clone, Default)]
pub struct CompactionMetrics {
    /// Passes, by result.
    pub runs: Family<PassLabel, Counter>,
    /// Documents compacted.
    pub documents: Counter,
    /// Seconds since the start of the last pass that compacted every
    /// document (since the process started, before the first): how much
    /// history older than the retention may still be stored.
    pub lag_seconds: Gauge,
    /// Payload bytes of history in the store (logged updates and
    /// checkpoints), as of the last pass.
    pub history_bytes: Gauge,
    /// Versions in the store, as of the last pass.
    pub history_versions: Gauge,
}

impl CompactionMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut MetricsRegistry) {
        registry.register(
            "history_compaction_runs",
            "History compaction passes over every document, by result",
            self.runs.clone(),
        );
        registry.register(
            "history_compacted_documents",
            "Documents whose history older than the retention was folded into a checkpoint",
            self.documents.clone(),
        );
        registry.register(
            "history_compaction_lag_seconds",
            "Seconds since the start of the last history compaction pass that compacted every document",
            self.lag_seconds.clone(),
        );
        registry.register(
            "history_bytes",
            "Payload bytes of history in the store (logged updates and checkpoints), as of the last compaction pass",
            self.history_bytes.clone(),
        );
        registry.register(
            "history_stored_versions",
            "Versions in the store, as of the last compaction pass",
            self.history_versions.clone(),
        );
    }
}
