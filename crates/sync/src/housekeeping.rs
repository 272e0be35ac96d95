//! The registry's housekeeping task: every
//! [`RegistryConfig::tick`](crate::RegistryConfig::tick) it walks the loaded
//! documents. A dirty document whose snapshot is due (see [`SnapshotPolicy`])
//! is snapshotted; a document no session has held for
//! [`RegistryConfig::unload_grace`](crate::RegistryConfig::unload_grace) is snapshotted and then dropped, so
//! memory follows open documents. A failed snapshot keeps the document
//! loaded and is retried on a later tick; its updates stay in the log
//! meanwhile. A document that holds updates it cannot integrate is read
//! again from the log (see [`reread`](crate::reread)).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, debug_span, info, warn};

use crate::bus::MessageBus;
use crate::document::Document;
use crate::documents::Documents;
use crate::loader::Loader;
use crate::metrics::SyncMetrics;
use crate::reread::MISSING_GRACE;
use crate::snapshot_policy::SnapshotPolicy;
use crate::store::{SnapshotStore, StoreError};
use crate::tasks::TaskGroup;
use crate::versions::HistoryHandle;

/// What the housekeeping task works with.
#[derive(Debug)]
pub(crate) struct Housekeeping {
    /// History, once enabled: automatic versions.
    pub(crate) history: Arc<OnceLock<Arc<HistoryHandle>>>,
    pub(crate) documents: Arc<Documents>,
    pub(crate) loader: Arc<Loader>,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) bus: Arc<dyn MessageBus>,
    pub(crate) metrics: Arc<SyncMetrics>,
    pub(crate) policy: SnapshotPolicy,
    /// Whether this node compacts its log into snapshots
    /// ([`RegistryConfig::compacts`](crate::RegistryConfig::compacts)).
    pub(crate) compacts: bool,
    pub(crate) unload_grace: Duration,
    pub(crate) tick: Duration,
    /// Stops the task.
    pub(crate) closing: CancellationToken,
    /// Where re-reads run (with this task, in the registry's housekeeping
    /// group).
    pub(crate) tasks: TaskGroup,
}

impl Housekeeping {
    /// Runs until `closing`.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let history = self.history.get();
            for document in self.documents.all() {
                // Before a snapshot may clear what changed.
                if let Some(history) = history {
                    history.tend(&document, now).await;
                }
                self.tend(&document, now).await;
            }
            if let Some(history) = history {
                history.retain(&self.documents.names());
            }
        }
    }

    async fn tend(self: &Arc<Self>, document: &Arc<Document>, now: Instant) {
        if document.is_loaded() && document.claim_reread(now, MISSING_GRACE) {
            self.tasks.spawn(reread(
                self.loader.clone(),
                self.metrics.clone(),
                document.clone(),
            ));
        }
        let idle_since = document.idle_since();
        let unload_due =
            idle_since.is_some_and(|since| now.duration_since(since) >= self.unload_grace);
        if !document.is_loaded() {
            // A load in progress or failed: the joiner that holds it
            // retries or leaves; an abandoned one is dropped when idle.
            if let (true, Some(since)) = (unload_due, idle_since)
                && self.documents.remove_if_idle(document, since)
            {
                self.bus.release(document.name());
            }
            return;
        }
        if !self.compacts {
            // Nothing to write: the log holds every update.
            if let (true, Some(since)) = (unload_due, idle_since) {
                self.unload(document, since);
            }
            return;
        }
        let (dirty, snapshot_bytes) = document.dirty_and_snapshot_bytes();
        let snapshot_due =
            dirty.is_some_and(|dirty| self.policy.due_sized(&dirty, now, snapshot_bytes));
        if !(unload_due || snapshot_due) {
            return;
        }
        let log = self.bus.log_id();
        if let Err(error) = save_snapshot(document, self.store.as_ref(), log, &self.metrics).await {
            warn!(doc = %document.name(), error = %error, error.source = ?std::error::Error::source(&error), "snapshot failed; will retry");
            return;
        }
        if let (true, Some(since)) = (unload_due, idle_since)
            && document.dirty().is_none()
        {
            self.unload(document, since);
        }
    }

    fn unload(&self, document: &Arc<Document>, idle_since: Instant) {
        if self.documents.remove_if_idle(document, idle_since) {
            self.bus.release(document.name());
            debug!(doc = %document.name(), "document unloaded");
        }
    }
}

/// Writes `document`'s snapshot (folded from the log `log`) if it changed,
/// timing it.
pub(crate) async fn save_snapshot(
    document: &Document,
    store: &dyn SnapshotStore,
    log: &str,
    metrics: &SyncMetrics,
) -> Result<(), StoreError> {
    let span = debug_span!(parent: None, "snapshot", doc = %document.name());
    let started = std::time::Instant::now();
    let saved = document.save_snapshot(store, log).instrument(span).await?;
    if let Some(bytes) = saved {
        metrics
            .snapshot_seconds
            .observe(started.elapsed().as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // a histogram bucket
        metrics.snapshot_bytes.observe(bytes as f64);
    }
    Ok(())
}

/// Reads a document that holds updates it cannot integrate again from the
/// log, as a load would, and applies what it lacked.
async fn reread(loader: Arc<Loader>, metrics: Arc<SyncMetrics>, document: Arc<Document>) {
    metrics.documents_reread.inc();
    let name = document.name().to_owned();
    let stored = loader
        .read(&name)
        .instrument(debug_span!(parent: None, "reread", doc = %name))
        .await;
    match stored {
        Ok(stored) => {
            let records = stored.updates.len();
            let outcome = document.reread(stored);
            let waited_ms = outcome.waited.as_millis() as u64;
            if !outcome.gained && !outcome.still_missing {
                debug!(doc = %name, "updates waiting for their dependencies integrated while the log was read again");
            } else if outcome.gained {
                metrics.documents_repaired.inc();
                warn!(doc = %name, records, waited_ms, waited_for = ?outcome.waited_for, gained_at = ?outcome.gained_at, still_missing = outcome.still_missing, "document lacked updates the log holds (its replica had missed records); applied and sent to its sessions");
            } else {
                info!(doc = %name, records, waited_ms, waited_for = ?outcome.waited_for, still_missing = outcome.still_missing, "document holds updates whose dependencies the log lacks too; will read it again later");
            }
        }
        Err(error) => {
            document.reread_failed();
            warn!(doc = %name, error = %error, error.source = ?std::error::Error::source(&error), "reading a document with missing updates again failed; will retry");
        }
    }
}
