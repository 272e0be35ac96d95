//! What the bus counts for the node's metrics: its own events
//! ([`Counters`]) and what its live consumer fetched ([`FetchTotals`]).
//! `metrics` encodes them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

/// Log one in this many malformed records (the first always).
pub(crate) const MALFORMED_LOG_EVERY: u64 = 100;

/// Counters other layers export as metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records that did not decode (skipped).
    pub(crate) malformed: AtomicU64,
    /// Ephemeral records not handed to the producer (bus down, queue full).
    pub(crate) ephemeral_lost: AtomicU64,
    /// Producers replaced after a failed publish.
    pub(crate) producers_replaced: AtomicU64,
    /// Live consumers replaced after they stalled.
    pub(crate) consumers_replaced: AtomicU64,
    /// Passes over a partition that replayed documents.
    pub(crate) replay_passes: AtomicU64,
    /// Ranges of offsets the live consumer skipped (and that were re-read).
    pub(crate) live_gaps: AtomicU64,
}

impl Counters {
    /// Counts a record skipped because `what` did not decode, and logs the
    /// first and then one in [`MALFORMED_LOG_EVERY`].
    pub(crate) fn malformed(&self, what: &str, error: &dyn std::fmt::Display) {
        let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if count == 1 || count.is_multiple_of(MALFORMED_LOG_EVERY) {
            warn!(count, what, error = %error, "malformed record skipped");
        }
    }
}

/// What the bus's live consumer has fetched from the log since the node
/// started (every consumer it created, replacements included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchTotals {
    /// Per topic: the records fetched and their bytes.
    pub topics: BTreeMap<String, Fetched>,
    /// Every byte the brokers sent the live consumer: fetch responses with
    /// their framing (empty ones too), metadata, group and offset replies.
    pub received_bytes: u64,
}

/// Records fetched from one topic and their bytes (keys and values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Key and value bytes of the records fetched (headers and the
    /// protocol's framing not included).
    pub bytes: u64,
    /// Records fetched, whether or not the node wanted them.
    pub records: u64,
}
