//! Retention: history older than `--history-retention` folds into one
//! checkpoint per document.
//!
//! [`compact_document`] plans ([`History::compaction_plan`]: the last
//! position at or before the cutoff and what the store holds there), folds
//! the plan's checkpoint and updates off the runtime (`spawn_blocking`),
//! and commits ([`History::compact`]: one transaction that checks the
//! fold's basis is still the store's). [`compact_pass`] walks every
//! document with history in pages, loaded or not, one short transaction
//! per document, so appends interleave with it. [`run_compaction`] runs a
//! pass at start and then every `--history-compact-interval`, and keeps
//! the [`CompactionMetrics`] current.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::compaction_metrics::{CompactionMetrics, PassLabel, PassResult};
use crate::history::{Compacted, Compaction, History};
use crate::versions::HistoryError;

/// Documents listed per store read of a pass.
const PAGE: u32 = 100;
/// How often the lag gauge is brought up to date between passes.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// When and how far back history is compacted.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    /// History older than this folds into a checkpoint
    /// (`--history-retention`).
    pub retention: Duration,
    /// A pass runs at start and then this often
    /// (`--history-compact-interval`).
    pub interval: Duration,
}

/// What one document's compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentCompaction {
    /// Nothing older than the cutoff's position to remove.
    Nothing,
    /// Committed; this many rows removed.
    Compacted {
        /// Rows removed (log rows, checkpoints, versions).
        removed: u64,
    },
    /// The history changed while it was folded; the next pass retries.
    Stale,
}

/// Compacts `doc`'s history in `log` at `cutoff_ms` (ms since the Unix
/// epoch): the document as it was at its last position by then becomes a
/// checkpoint, and what is older goes (named versions stay).
pub async fn compact_document(
    store: &dyn History,
    log: &str,
    doc: &str,
    cutoff_ms: i64,
) -> Result<DocumentCompaction, HistoryError> {
    let Some(plan) = store.compaction_plan(log, doc, cutoff_ms).await? else {
        return Ok(DocumentCompaction::Nothing);
    };
    let folded_updates = u64::try_from(plan.read.updates.len()).unwrap_or(u64::MAX);
    let state = if plan.checkpoint_stored() {
        None
    } else {
        let read = plan.read.clone();
        // Folding replays up to a retention interval's updates: CPU work
        // that stays off the runtime's threads.
        let folded = tokio::task::spawn_blocking(move || read.fold())
            .await
            .map_err(|error| {
                crate::store::StoreError::new("fold history for compaction", error)
            })??;
        Some(folded)
    };
    let compaction = Compaction {
        doc,
        covers: plan.covers,
        basis: plan.basis,
        folded_updates,
        state: state.as_deref(),
        at_ms: cutoff_ms,
    };
    Ok(match store.compact(log, compaction).await? {
        Compacted::Done { removed } => DocumentCompaction::Compacted { removed },
        Compacted::Stale => DocumentCompaction::Stale,
    })
}

/// What a pass over every document did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Documents looked at.
    pub documents: u64,
    /// Documents compacted.
    pub compacted: u64,
    /// Rows removed.
    pub removed: u64,
    /// Documents whose history changed while folded (retried next pass).
    pub stale: u64,
    /// Documents whose compaction failed.
    pub failed: u64,
    /// The pass stopped early (closing) or could not list documents.
    pub incomplete: bool,
}

impl PassReport {
    /// Every document was compacted (or had nothing to compact).
    pub fn succeeded(&self) -> bool {
        !self.incomplete && self.failed == 0 && self.stale == 0
    }
}

/// Compacts every document with history in `log` at `cutoff_ms`, paging
/// through the store's list; stops between documents once `closing`.
pub async fn compact_pass(
    store: &dyn History,
    log: &str,
    cutoff_ms: i64,
    closing: &CancellationToken,
) -> PassReport {
    let mut report = PassReport::default();
    let mut after = String::new();
    loop {
        let page = match store.history_documents(log, &after, PAGE).await {
            Ok(page) => page,
            Err(error) => {
                warn!(error = %error, error.source = ?std::error::Error::source(&error), "listing documents for history compaction failed; the next pass retries");
                report.incomplete = true;
                return report;
            }
        };
        let full_page = page.len() >= PAGE as usize;
        for doc in page {
            if closing.is_cancelled() {
                report.incomplete = true;
                return report;
            }
            report.documents += 1;
            match compact_document(store, log, &doc, cutoff_ms).await {
                Ok(DocumentCompaction::Nothing) => {}
                Ok(DocumentCompaction::Compacted { removed }) => {
                    report.compacted += 1;
                    report.removed += removed;
                    debug!(doc = %doc, removed, "history compacted");
                }
                Ok(DocumentCompaction::Stale) => report.stale += 1,
                Err(error) => {
                    report.failed += 1;
                    warn!(doc = %doc, error = %error, error.source = ?std::error::Error::source(&error), "history compaction failed; the next pass retries");
                }
            }
            after = doc;
        }
        if !full_page {
            return report;
        }
    }
}

/// Compacts `log`'s history in `store` at start and every
/// `settings.interval` until `closing`.
pub async fn run_compaction(
    store: Arc<dyn History>,
    log: String,
    settings: CompactionSettings,
    metrics: CompactionMetrics,
    closing: CancellationToken,
) {
    let retention_ms = i64::try_from(settings.retention.as_millis()).unwrap_or(i64::MAX);
    let mut last_success = Instant::now();
    let mut next_pass = Instant::now();
    loop {
        set_lag(&metrics, last_success);
        if Instant::now() >= next_pass {
            let started = Instant::now();
            let cutoff_ms = crate::unix_millis().saturating_sub(retention_ms);
            let report = compact_pass(store.as_ref(), &log, cutoff_ms, &closing).await;
            if closing.is_cancelled() {
                return;
            }
            metrics.documents.inc_by(report.compacted);
            let result = if report.succeeded() {
                last_success = started;
                PassResult::Ok
            } else {
                PassResult::Failed
            };
            metrics.runs.get_or_create(&PassLabel { result }).inc();
            refresh_stats(store.as_ref(), &log, &metrics).await;
            set_lag(&metrics, last_success);
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if report.compacted > 0 || !report.succeeded() {
                info!(
                    documents = report.documents,
                    compacted = report.compacted,
                    removed = report.removed,
                    stale = report.stale,
                    failed = report.failed,
                    elapsed_ms,
                    "history compaction pass"
                );
            } else {
                debug!(
                    documents = report.documents,
                    elapsed_ms, "history compaction pass"
                );
            }
            next_pass = started + settings.interval;
        }
        let wake = next_pass.min(Instant::now() + LAG_REFRESH);
        tokio::select! {
            () = closing.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

fn set_lag(metrics: &CompactionMetrics, last_success: Instant) {
    metrics
        .lag_seconds
        .set(i64::try_from(last_success.elapsed().as_secs()).unwrap_or(i64::MAX));
}

async fn refresh_stats(store: &dyn History, log: &str, metrics: &CompactionMetrics) {
    match store.history_stats(log).await {
        Ok(stats) => {
            metrics
                .history_bytes
                .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
            metrics
                .history_versions
                .set(i64::try_from(stats.versions).unwrap_or(i64::MAX));
        }
        Err(error) => {
            warn!(error = %error, error.source = ?std::error::Error::source(&error), "reading history sizes failed");
        }
    }
}
