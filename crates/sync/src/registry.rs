//! Loaded documents by name: joining, loading, snapshotting, unloading and
//! shutdown.
//!
//! One housekeeping task wakes every [`RegistryConfig::tick`] and walks the
//! loaded documents: a dirty document whose debounce has passed is
//! snapshotted; a document no session has held for
//! [`RegistryConfig::unload_grace`] is snapshotted and then dropped, so memory
//! follows open documents. A failed snapshot keeps the document loaded and is
//! retried on a later tick; its updates stay in the log meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::committer::{Committer, CommitterConfig};
use crate::document::{Dirty, Document};
use crate::session::{Session, SessionId, SessionOutbox};
use crate::store::DocStore;
use crate::{DocName, LogSeq, SyncError};

/// When documents are snapshotted and unloaded.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Group-commit settings.
    pub committer: CommitterConfig,
    /// How long a document nobody holds stays in memory, so a client that
    /// reconnects quickly does not pay for a reload.
    pub unload_grace: Duration,
    /// A dirty document is snapshotted once it has been quiet this long.
    pub snapshot_debounce: Duration,
    /// ...or once it has been dirty this long, even if edits keep coming, so
    /// the log of a busy document stays short.
    pub snapshot_max_delay: Duration,
    /// ...or once this many updates were applied since the last snapshot.
    pub snapshot_max_updates: u64,
    /// Period of the housekeeping task.
    pub tick: Duration,
    /// Most documents held in memory at once; joining one more is refused
    /// ([`SyncError::TooManyDocuments`]) until an idle one is unloaded.
    pub max_documents: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            committer: CommitterConfig::default(),
            unload_grace: Duration::from_secs(30),
            snapshot_debounce: Duration::from_secs(2),
            snapshot_max_delay: Duration::from_secs(30),
            snapshot_max_updates: 1000,
            tick: Duration::from_millis(250),
            max_documents: 10_000,
        }
    }
}

/// The loaded documents, shared by the registry and the committer (which
/// delivers committed updates to them).
#[derive(Debug, Default)]
pub(crate) struct Documents {
    loaded: parking_lot::Mutex<HashMap<DocName, Arc<Document>>>,
}

impl Documents {
    /// Hands a committed update to its document, if loaded. A document that
    /// is not loaded will read it from the store when it loads.
    pub(crate) fn deliver(&self, doc: &str, seq: LogSeq, update: &[u8], origin: SessionId) {
        let document = self.loaded.lock().get(doc).cloned();
        if let Some(document) = document {
            document.deliver(seq, update, origin);
        }
    }

    /// The loaded document, or a new one if fewer than `max` are loaded.
    fn get_or_insert(&self, name: &str, max: usize) -> Option<Arc<Document>> {
        let mut loaded = self.loaded.lock();
        if let Some(document) = loaded.get(name) {
            return Some(document.clone());
        }
        if loaded.len() >= max {
            return None;
        }
        let name: DocName = Arc::from(name);
        let document = Arc::new(Document::new(name.clone()));
        loaded.insert(name, document.clone());
        Some(document)
    }

    fn all(&self) -> Vec<Arc<Document>> {
        self.loaded.lock().values().cloned().collect()
    }

    /// Drops `document` if it is still the loaded instance and still idle
    /// since `idle_since`.
    fn remove_if_idle(&self, document: &Arc<Document>, idle_since: Instant) -> bool {
        let mut loaded = self.loaded.lock();
        let still_ours = loaded
            .get(document.name())
            .is_some_and(|current| Arc::ptr_eq(current, document));
        if still_ours && document.idle_since() == Some(idle_since) {
            loaded.remove(document.name());
            return true;
        }
        false
    }
}

#[derive(Debug)]
pub(crate) struct RegistryInner {
    pub(crate) documents: Arc<Documents>,
    pub(crate) store: Arc<dyn DocStore>,
    pub(crate) committer: Committer,
    config: RegistryConfig,
    next_session: AtomicU64,
    /// Stops the housekeeping task and refuses new sessions.
    closing: CancellationToken,
    /// Stops the committer once sessions are gone.
    committer_stop: CancellationToken,
    tracker: TaskTracker,
    committer_tracker: TaskTracker,
}

/// The document registry of one node.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl Registry {
    /// Starts the registry's committer and housekeeping tasks.
    pub fn start(store: Arc<dyn DocStore>, config: RegistryConfig) -> Self {
        let documents = Arc::new(Documents::default());
        let committer_tracker = TaskTracker::new();
        let committer_stop = CancellationToken::new();
        let committer = Committer::spawn(
            store.clone(),
            documents.clone(),
            &config.committer,
            &committer_tracker,
            committer_stop.clone(),
        );
        let inner = Arc::new(RegistryInner {
            documents,
            store,
            committer,
            config,
            next_session: AtomicU64::new(1),
            closing: CancellationToken::new(),
            committer_stop,
            tracker: TaskTracker::new(),
            committer_tracker,
        });
        inner.tracker.spawn(housekeeping(inner.clone()));
        Self { inner }
    }

    /// Joins document `name`, loading it if needed. The returned session
    /// receives broadcasts through `outbox` from now on.
    pub async fn join(&self, name: &str, outbox: SessionOutbox) -> Result<Session, SyncError> {
        if self.inner.closing.is_cancelled() {
            return Err(SyncError::ShuttingDown);
        }
        let id = SessionId::from_raw(self.inner.next_session.fetch_add(1, Ordering::Relaxed));
        let Some(document) = self
            .inner
            .documents
            .get_or_insert(name, self.inner.config.max_documents)
        else {
            return Err(SyncError::TooManyDocuments);
        };
        document.add_session(id, outbox);
        // Created before loading so that a failed or abandoned load still
        // detaches the session when it is dropped.
        let session = Session::new(id, document.clone(), self.inner.clone());
        document
            .ensure_loaded(self.inner.store.as_ref())
            .await
            .map_err(SyncError::Load)?;
        Ok(session)
    }

    /// Whether the store answers (for readiness).
    pub async fn check_store(&self) -> bool {
        match self.inner.store.check().await {
            Ok(()) => true,
            Err(error) => {
                warn!(error = %error, error.source = ?std::error::Error::source(&error), "store check failed");
                false
            }
        }
    }

    /// Number of documents in memory.
    pub fn loaded_documents(&self) -> usize {
        self.inner.documents.loaded.lock().len()
    }

    /// Stops taking sessions, commits what is queued, and snapshots every
    /// dirty document. Call after the gateway closed its sessions.
    pub async fn shutdown(&self) {
        self.inner.closing.cancel();
        self.inner.committer_stop.cancel();
        self.inner.committer_tracker.close();
        self.inner.committer_tracker.wait().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        let mut failed = 0;
        for document in self.inner.documents.all() {
            if !document.is_loaded() {
                continue;
            }
            if let Err(error) = document.save_snapshot(self.inner.store.as_ref()).await {
                failed += 1;
                warn!(doc = %document.name(), error = %error, error.source = ?std::error::Error::source(&error), "final snapshot failed; its updates remain in the log");
            }
        }
        info!(
            documents = self.loaded_documents(),
            failed, "registry stopped"
        );
    }
}

async fn housekeeping(inner: Arc<RegistryInner>) {
    let mut ticker = tokio::time::interval(inner.config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.closing.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        for document in inner.documents.all() {
            if !document.is_loaded() {
                // A load in progress or failed: the joiner that holds it
                // retries or leaves; an abandoned one is dropped when idle.
                if let Some(idle_since) = document.idle_since()
                    && now.duration_since(idle_since) >= inner.config.unload_grace
                {
                    inner.documents.remove_if_idle(&document, idle_since);
                }
                continue;
            }
            let idle_since = document.idle_since();
            let unload_due = idle_since
                .is_some_and(|since| now.duration_since(since) >= inner.config.unload_grace);
            let snapshot_due = document
                .dirty()
                .is_some_and(|dirty| snapshot_due(&inner.config, &dirty, now));
            if !(unload_due || snapshot_due) {
                continue;
            }
            if let Err(error) = document.save_snapshot(inner.store.as_ref()).await {
                warn!(doc = %document.name(), error = %error, error.source = ?std::error::Error::source(&error), "snapshot failed; will retry");
                continue;
            }
            if let (true, Some(since)) = (unload_due, idle_since)
                && document.dirty().is_none()
                && inner.documents.remove_if_idle(&document, since)
            {
                debug!(doc = %document.name(), "document unloaded");
            }
        }
    }
}

fn snapshot_due(config: &RegistryConfig, dirty: &Dirty, now: Instant) -> bool {
    now.duration_since(dirty.last) >= config.snapshot_debounce
        || now.duration_since(dirty.since) >= config.snapshot_max_delay
        || dirty.updates >= config.snapshot_max_updates
}
