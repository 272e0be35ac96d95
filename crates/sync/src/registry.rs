//! The document registry of one node: the map of loaded documents and the
//! facade the gateway (sessions, the REST API, readiness, shutdown) calls.
//!
//! Starting a registry starts three tasks, on the tracker it is given (see
//! `tasks`): the committer ([`committer`](crate::committer)), housekeeping
//! (snapshots, unloading, re-reads: `housekeeping`) and the bus task (other
//! nodes' records, heartbeats: `bus_task`). Shutdown stops them in two
//! steps: the committer first, once it has committed what is queued
//! ([`Registry::flush_commits`]); then housekeeping and the bus task, and
//! the final snapshots ([`Registry::snapshot_and_stop`]).
//!
//! A document loads the same way whatever the bus: its snapshot folded from
//! the bus's log, then the records after it replayed from the bus
//! (`loader`). A registry that does not compact
//! ([`RegistryConfig::compacts`]: the nodes of a cluster) never writes
//! snapshots; the persistence worker does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::bus::{BusError, MessageBus};
use crate::bus_task::{self, BusTask};
use crate::committer::Committer;
use crate::config::JOIN_WAITS_FOR_BUS;
use crate::config::{PUBLISH_STALL_NOT_READY, RegistryConfig};
use crate::document::Document;
use crate::documents::Documents;
use crate::error::SyncError;
use crate::frames::{DocName, SessionId, SessionOutbox};
use crate::housekeeping::Housekeeping;
use crate::loader::Loader;
use crate::metrics::SyncMetrics;
use crate::publisher::Publisher;
use crate::session::Session;
use crate::store::{ListedDoc, SnapshotStore};
use crate::tasks::TaskGroup;
use crate::versions::HistoryHandle;

/// How often a read retries when the document it loaded was deleted at
/// that moment (it is then dropped and loaded afresh).
const DELETED_WHILE_LOADING_RETRIES: usize = 2;

#[derive(Debug)]
struct RegistryInner {
    documents: Arc<Documents>,
    loader: Arc<Loader>,
    publisher: Publisher,
    /// Whether the bus subscription is live (cluster mode: the broker
    /// answered). Joins wait briefly for it, then are refused.
    bus_task: Arc<BusTask>,
    config: RegistryConfig,
    next_session: AtomicU64,
    /// Cancelled by the first step of shutdown: refuses new sessions and
    /// reads, and stops the committer once it has committed what is queued.
    closing: CancellationToken,
    /// Cancelled by the second step: stops housekeeping and the bus task.
    background_stop: CancellationToken,
    /// The committer.
    committer_tasks: TaskGroup,
    /// Housekeeping (with its re-reads) and the bus task.
    background_tasks: TaskGroup,
    metrics: Arc<SyncMetrics>,
    /// History, once enabled ([`Registry::enable_history`]); shared with
    /// housekeeping, which takes the automatic versions.
    history: Arc<OnceLock<Arc<HistoryHandle>>>,
    /// The change feed, once enabled ([`Registry::enable_change_feed`]).
    changes: OnceLock<crate::changes::ChangeFeed>,
}

/// The document registry of one node.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl Registry {
    /// A single node on `store`: its update log is the bus. The registry
    /// is the root of its own shutdown tree (a token and a tracker of its
    /// own), so it exists for tests only (feature `test-util`); a node
    /// gives [`Registry::start`] its root token and tracker.
    #[cfg(any(test, feature = "test-util"))]
    pub fn embedded(store: Arc<dyn crate::store::EmbeddedLog>, config: RegistryConfig) -> Self {
        let bus = Arc::new(crate::log_bus::LogBus::new(store.clone(), "embedded"));
        Self::start(
            store,
            bus,
            RegistryConfig {
                compacts: true,
                ..config
            },
            &CancellationToken::new(),
            &TaskTracker::new(),
        )
    }

    /// Starts the registry's committer, housekeeping and bus tasks on
    /// `tracker` (the node's, which the node waits for when it stops).
    ///
    /// The registry's tokens are children of `parent` (the node's root):
    /// cancelling it stops every task at once (the committer still commits
    /// what it holds), as a drain past its grace does. [`Registry::shutdown`]
    /// stops them in order.
    pub fn start(
        store: Arc<dyn SnapshotStore>,
        bus: Arc<dyn MessageBus>,
        config: RegistryConfig,
        parent: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let documents = Arc::new(Documents::new(
            config.broadcast_batching,
            tracker.clone(),
            bus.clone(),
        ));
        let closing = parent.child_token();
        let committer_tasks = TaskGroup::on(tracker);
        let metrics = Arc::new(SyncMetrics::default());
        let committer = Committer::spawn(
            bus.clone(),
            documents.clone(),
            metrics.clone(),
            &config.committer,
            &committer_tasks,
            closing.clone(),
        );
        let background_stop = parent.child_token();
        let background_tasks = TaskGroup::on(tracker);
        let loader = Arc::new(Loader {
            store: store.clone(),
            bus: bus.clone(),
            metrics: metrics.clone(),
        });
        let history = Arc::new(OnceLock::new());
        let housekeeping = Arc::new(Housekeeping {
            history: history.clone(),
            documents: documents.clone(),
            loader: loader.clone(),
            store,
            bus: bus.clone(),
            metrics: metrics.clone(),
            policy: config.snapshot_policy(),
            compacts: config.compacts,
            unload_grace: config.unload_grace,
            tick: config.tick,
            closing: background_stop.clone(),
            tasks: background_tasks.clone(),
        });
        let bus_task = Arc::new(BusTask {
            documents: documents.clone(),
            bus: bus.clone(),
            subscribed: tokio::sync::watch::Sender::new(false),
            heartbeat_interval: config.heartbeat_interval,
            peer_timeout: config.peer_timeout,
            closing: background_stop.clone(),
        });
        background_tasks.spawn(housekeeping.run());
        background_tasks.spawn(bus_task::run(bus_task.clone()));
        let inner = Arc::new(RegistryInner {
            documents,
            loader,
            publisher: Publisher::new(committer, bus),
            bus_task,
            config,
            next_session: AtomicU64::new(1),
            closing,
            background_stop,
            committer_tasks,
            background_tasks,
            metrics,
            history,
            changes: OnceLock::new(),
        });
        Self { inner }
    }

    /// Joins document `name`, loading it if needed. The returned session
    /// receives broadcasts through `outbox` from now on.
    pub async fn join(&self, name: &str, outbox: SessionOutbox) -> Result<Session, SyncError> {
        if self.inner.closing.is_cancelled() {
            return Err(SyncError::ShuttingDown);
        }
        self.wait_subscribed().await?;
        let id = self.fresh_session_id();
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
        let session = Session::new(id, document.clone(), self.inner.publisher.clone());
        document.ensure_loaded(self.inner.loader.load(name)).await?;
        Ok(session)
    }

    /// The document `name`, loaded as a join loads it, without a session
    /// (the REST API's reads and writes).
    pub(crate) async fn loaded(&self, name: &str) -> Result<Arc<Document>, SyncError> {
        if self.inner.closing.is_cancelled() {
            return Err(SyncError::ShuttingDown);
        }
        self.wait_subscribed().await?;
        let mut attempts = 0;
        loop {
            let Some(document) = self
                .inner
                .documents
                .get_or_insert(name, self.inner.config.max_documents)
            else {
                return Err(SyncError::TooManyDocuments);
            };
            document.ensure_loaded(self.inner.loader.load(name)).await?;
            attempts += 1;
            if !document.is_deleted() || attempts > DELETED_WHILE_LOADING_RETRIES {
                return Ok(document);
            }
        }
    }

    /// A session id matching no session (an API write's origin, so every
    /// session receives it).
    pub(crate) fn fresh_session_id(&self) -> SessionId {
        SessionId::from_raw(self.inner.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Where updates and deletions are submitted.
    pub(crate) fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// The documents the store lists for the bus's log (the embedded log:
    /// snapshots and logged updates; a topic: the persistence worker's
    /// snapshots).
    pub(crate) async fn stored_documents(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, SyncError> {
        let loader = &self.inner.loader;
        loader
            .store
            .list_documents(loader.bus.log_id(), after, limit)
            .await
            .map_err(SyncError::Load)
    }

    /// Serves the change feed (server-sent events, webhook replay); a
    /// second call changes nothing.
    pub fn enable_change_feed(&self, feed: crate::changes::ChangeFeed) {
        let _already_enabled = self.inner.changes.set(feed);
    }

    /// The change feed, if enabled.
    pub fn change_feed(&self) -> Option<&crate::changes::ChangeFeed> {
        self.inner.changes.get()
    }

    /// Where history is kept once enabled.
    pub(crate) fn history_slot(&self) -> &OnceLock<Arc<HistoryHandle>> {
        &self.inner.history
    }

    /// The names of the documents in memory.
    pub(crate) fn loaded_names(&self) -> Vec<DocName> {
        self.inner.documents.names()
    }

    /// The document named `name` if it is in memory (loaded or loading).
    pub(crate) fn in_memory(&self, name: &str) -> Option<Arc<Document>> {
        self.inner.documents.get(name)
    }

    /// Waits (briefly: the embedded bus subscribes at once, a broker may
    /// take long) for the bus subscription.
    async fn wait_subscribed(&self) -> Result<(), SyncError> {
        let mut subscribed = self.inner.bus_task.subscribed.subscribe();
        match tokio::time::timeout(JOIN_WAITS_FOR_BUS, subscribed.wait_for(|live| *live)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(SyncError::NotConnected),
        }
    }

    /// Whether the node can take sessions: the bus is subscribed (cluster:
    /// the broker answered), acknowledges what it is given and answers, and
    /// the store answers. `Err` says which part is not ready.
    pub async fn check_ready(&self) -> Result<(), String> {
        if !*self.inner.bus_task.subscribed.borrow() {
            return Err("the message bus is not connected yet".to_owned());
        }
        if let Some(waiting) = self.inner.publisher.committer().unanswered_for()
            && waiting >= PUBLISH_STALL_NOT_READY
        {
            return Err(format!(
                "the message bus has not acknowledged updates for {} s; they wait (cluster: brokers down, or fewer in sync than the topic requires)",
                waiting.as_secs()
            ));
        }
        if let Err(error) = self.bus().check().await {
            warn!(error = %error, error.source = ?std::error::Error::source(&error), "bus check failed");
            return Err(match error {
                BusError::Check(cause) => format!("the message bus does not answer: {cause}"),
                _ => "the message bus does not answer".to_owned(),
            });
        }
        if !self.check_store().await {
            return Err("the document store does not answer".to_owned());
        }
        Ok(())
    }

    /// Whether the store answers (for readiness).
    pub async fn check_store(&self) -> bool {
        match self.inner.loader.store.check().await {
            Ok(()) => true,
            Err(error) => {
                warn!(error = %error, error.source = ?std::error::Error::source(&error), "store check failed");
                false
            }
        }
    }

    fn bus(&self) -> &dyn MessageBus {
        self.inner.loader.bus.as_ref()
    }

    /// The sync layer's metrics (publish, load, snapshot).
    pub fn metrics(&self) -> &SyncMetrics {
        &self.inner.metrics
    }

    /// The metrics, shared (history counts its versions in them).
    pub(crate) fn metrics_arc(&self) -> Arc<SyncMetrics> {
        self.inner.metrics.clone()
    }

    /// Number of documents in memory.
    pub fn loaded_documents(&self) -> usize {
        self.inner.documents.len()
    }

    /// Stops the registry in its two steps, in order:
    /// [`Registry::flush_commits`], then [`Registry::snapshot_and_stop`].
    /// Call after the gateway closed its sessions.
    pub async fn shutdown(&self) {
        self.flush_commits().await;
        self.snapshot_and_stop().await;
    }

    /// The first step of shutdown: refuses new sessions, reads and updates,
    /// and returns once the committer has committed everything queued and
    /// applied it to its documents. Housekeeping and the bus task go on.
    pub async fn flush_commits(&self) {
        self.inner.closing.cancel();
        self.inner.committer_tasks.wait().await;
    }

    /// The second step of shutdown (it runs the first if that has not
    /// run): stops housekeeping and the bus task, then, if this node
    /// compacts, snapshots every dirty document. Otherwise the persistence
    /// worker writes the snapshots, so this only stops the tasks.
    pub async fn snapshot_and_stop(&self) {
        self.flush_commits().await;
        self.inner.background_stop.cancel();
        self.inner.background_tasks.wait().await;
        let mut failed = 0;
        for document in self.inner.documents.all() {
            if !document.is_loaded() || !self.inner.config.compacts {
                continue;
            }
            let loader = &self.inner.loader;
            let saved = document
                .save_snapshot(loader.store.as_ref(), loader.bus.log_id())
                .await;
            if let Err(error) = saved {
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
