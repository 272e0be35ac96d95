//! A cluster's per-edit history, kept by the persistence worker as it
//! folds: the worker is the single folder of each partition, so it is the
//! one place that sees every record of a document once, in order.
//!
//! - Every update or deletion record read becomes a [`LoggedEdit`] (the
//!   Yjs update, the `weft-author` and `weft-at-ms` headers, the
//!   envelope's origin node, the offset), stored in batches
//!   ([`EditLog::append_edits`]) on every tick and whenever
//!   [`MAX_UNSTORED_EDITS`] wait. A partition's offset is committed only
//!   below its first edit not stored yet (`EditHistory::clamp`), the
//!   same rule as for snapshots, so a crash re-reads such records and the
//!   store keeps each row once.
//! - Automatic versions: a document changed since its last version gets
//!   one after `--version-interval` of activity, or once it has been quiet
//!   for `--version-quiet` (the worker does not know sessions, so "the
//!   last session left" becomes "nobody edited for a while"). The version
//!   is the folded document at its last record (its stored snapshot if
//!   the fold evicted it meanwhile), taken after the rows up to it are
//!   stored, so its authors are complete. A clock lives in memory: a
//!   worker that restarts (or takes over a partition) knows only the
//!   changes it reads from the committed offset on.
//!
//! Nothing here reads the consumer; `EditHistory` is driven by the
//! worker's loop and its due-version rule is a pure function
//! (`VersionClock::due`), tested directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};
use weft_sync::history::{EditLog, LoggedEdit, NewVersion, VersionKind};
use weft_sync::{ReadState, unix_millis};

/// Edits buffered before they are stored: at most this many wait between
/// ticks (the worker stores them at once when the buffer is full).
pub const MAX_UNSTORED_EDITS: usize = 4096;

/// How the worker keeps history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryKeeping {
    /// A changed document gets an automatic version after this much
    /// activity (`--version-interval`)...
    pub version_interval: Duration,
    /// ...or once nobody changed it for this long (`--version-quiet`).
    pub version_quiet: Duration,
}

/// What the worker's history side did (the `weft_persist_edits_*` and
/// `weft_persist_versions_*` metrics).
#[derive(Debug, Default)]
pub struct HistoryCounters {
    /// Edit rows stored (a row stored again after a crash counts again).
    pub edits_stored: AtomicU64,
    /// Edit writes that failed (retried).
    pub edit_failures: AtomicU64,
    /// Automatic versions taken.
    pub versions_taken: AtomicU64,
}

/// When one document got its last version and what changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VersionClock {
    /// When the first record after the last version was read.
    pub(crate) changed_since: Instant,
    /// When the latest one was.
    pub(crate) last_change: Instant,
}

impl VersionClock {
    /// Whether an automatic version is due at `now`.
    pub(crate) fn due(&self, keeping: &HistoryKeeping, now: Instant) -> bool {
        now.duration_since(self.changed_since) >= keeping.version_interval
            || now.duration_since(self.last_change) >= keeping.version_quiet
    }
}

/// An automatic version to take: the document and its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueVersion {
    pub(crate) partition: i32,
    pub(crate) doc: Arc<str>,
}

/// The worker's history side: edits to store, clocks of automatic
/// versions.
#[derive(Debug)]
pub(crate) struct EditHistory {
    store: Arc<dyn EditLog>,
    keeping: HistoryKeeping,
    counters: Arc<HistoryCounters>,
    /// Edits read and not yet stored, in order.
    unstored: Vec<LoggedEdit>,
    /// Per partition, the offset of its first edit not yet stored.
    first_unstored: HashMap<i32, i64>,
    /// Documents changed since their last version.
    clocks: HashMap<(i32, Arc<str>), VersionClock>,
}

impl EditHistory {
    pub(crate) fn new(
        store: Arc<dyn EditLog>,
        keeping: HistoryKeeping,
        counters: Arc<HistoryCounters>,
    ) -> Self {
        Self {
            store,
            keeping,
            counters,
            unstored: Vec::new(),
            first_unstored: HashMap::new(),
            clocks: HashMap::new(),
        }
    }

    /// Takes the record at `offset` of `partition`, `edit` already filled
    /// in; `deletion` clears the document's pending automatic version (a
    /// deleted document has nothing to version).
    pub(crate) fn note(&mut self, partition: i32, edit: LoggedEdit, deletion: bool, now: Instant) {
        self.first_unstored
            .entry(partition)
            .or_insert(edit.position);
        let key = (partition, edit.doc.clone());
        if deletion {
            self.clocks.remove(&key);
        } else {
            self.clocks
                .entry(key)
                .and_modify(|clock| clock.last_change = now)
                .or_insert(VersionClock {
                    changed_since: now,
                    last_change: now,
                });
        }
        self.unstored.push(edit);
    }

    /// Whether the buffer is full: store before reading on.
    pub(crate) fn full(&self) -> bool {
        self.unstored.len() >= MAX_UNSTORED_EDITS
    }

    /// Stores the buffered edits. On failure they stay buffered (and their
    /// offsets uncommitted) for the next try.
    pub(crate) async fn store_edits(&mut self) -> bool {
        if self.unstored.is_empty() {
            return true;
        }
        match self.store.append_edits(&self.unstored).await {
            Ok(()) => {
                debug!(edits = self.unstored.len(), "edits stored");
                self.counters
                    .edits_stored
                    .fetch_add(self.unstored.len() as u64, Ordering::Relaxed);
                self.unstored.clear();
                self.first_unstored.clear();
                true
            }
            Err(error) => {
                self.counters.edit_failures.fetch_add(1, Ordering::Relaxed);
                warn!(edits = self.unstored.len(), error = %error, error.source = ?std::error::Error::source(&error), "storing edits failed; their records stay uncommitted and are retried");
                false
            }
        }
    }

    /// `offsets` (per partition, what the snapshots allow committing)
    /// lowered to the first edit not stored yet.
    pub(crate) fn clamp(&self, offsets: &mut [(i32, i64)]) {
        for (partition, offset) in offsets {
            if let Some(first) = self.first_unstored.get(partition) {
                *offset = (*offset).min(*first);
            }
        }
    }

    /// The documents whose automatic version is due at `now`.
    pub(crate) fn due_versions(&self, now: Instant) -> Vec<DueVersion> {
        let mut due: Vec<DueVersion> = self
            .clocks
            .iter()
            .filter(|(_, clock)| clock.due(&self.keeping, now))
            .map(|((partition, doc), _)| DueVersion {
                partition: *partition,
                doc: doc.clone(),
            })
            .collect();
        due.sort_by(|left, right| left.doc.cmp(&right.doc));
        due
    }

    /// Takes `due`'s automatic version from `folded` (the folded document
    /// at its last record), unless a version covers that record already
    /// (a node's, or this worker's before a restart). The edits must be
    /// stored. On failure the clock stays and the next tick tries again.
    pub(crate) async fn take_version(&mut self, due: &DueVersion, folded: Option<ReadState>) {
        let key = (due.partition, due.doc.clone());
        let Some(folded) = folded.filter(|state| state.has_content) else {
            self.clocks.remove(&key);
            return;
        };
        match self.store.versions(&due.doc, None, 1).await {
            Ok(latest) => {
                if latest
                    .first()
                    .is_some_and(|version| version.covers >= folded.covers)
                {
                    self.clocks.remove(&key);
                    return;
                }
            }
            Err(error) => {
                warn!(doc = %due.doc, error = %error, "automatic version: reading the latest failed; retried on the next tick");
                return;
            }
        }
        let version = NewVersion {
            doc: &due.doc,
            name: None,
            kind: VersionKind::Auto,
            at_ms: unix_millis(),
            covers: folded.covers,
            state: &folded.state,
        };
        match self.store.create_version(version).await {
            Ok(version) => {
                info!(doc = %due.doc, version = version.id, covers = version.covers, authors = ?version.authors, "automatic version");
                self.counters.versions_taken.fetch_add(1, Ordering::Relaxed);
                self.clocks.remove(&key);
            }
            Err(error) => {
                warn!(doc = %due.doc, error = %error, "automatic version failed; retried on the next tick");
            }
        }
    }

    /// Forgets partitions this worker no longer owns (their edits must be
    /// stored first).
    pub(crate) fn revoke(&mut self, partitions: &[i32]) {
        self.clocks
            .retain(|(partition, _), _| !partitions.contains(partition));
    }
}

#[cfg(test)]
mod tests;
