//! Loaded documents by name: joining, loading, snapshotting, unloading and
//! shutdown.
//!
//! One housekeeping task wakes every [`RegistryConfig::tick`] and walks the
//! loaded documents: a dirty document whose debounce has passed is
//! snapshotted; a document no session has held for
//! [`RegistryConfig::unload_grace`] is snapshotted and then dropped, so memory
//! follows open documents. A failed snapshot keeps the document loaded and is
//! retried on a later tick; its updates stay in the log meanwhile.
//!
//! In [`NodeMode::Cluster`] the registry never snapshots (the persistence
//! worker does), loads a document by replaying its records from the bus,
//! and runs a *bus task*: it subscribes (retrying with backoff until the
//! broker answers; the node is not ready meanwhile), applies and broadcasts
//! other nodes' updates and awareness changes, publishes this node's
//! heartbeat, and removes the awareness states of nodes that went silent.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, debug_span, info, warn};

use bytes::Bytes;
use weft_protocol::AwarenessUpdate;
use yrs::updates::decoder::Decode;

use crate::awareness::Owner;
use crate::bus::{BusError, Delivery, Interest, MessageBus, Origin, Position, Record, RecordKind};
use crate::committer::{Committer, CommitterConfig};
use crate::document::{BroadcastBatching, Dirty, Document, MISSING_GRACE};
use crate::log_bus::LogBus;
use crate::metrics::SyncMetrics;
use crate::session::{Session, SessionId, SessionOutbox};
use crate::store::{DocStore, LoggedUpdate, Snapshot, StoredDoc, Tombstone};
use crate::{DocName, LogSeq, SyncError};

/// How this node relates to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMode {
    /// One node: the bus is the store's update log; the node loads documents
    /// from the store and compacts the log into snapshots itself.
    Embedded,
    /// One of many nodes sharing a broker: a document loads from the topic
    /// snapshot the persistence worker wrote (if any) plus the replay of its
    /// records after it; the node writes no snapshots.
    Cluster {
        /// The topic whose snapshots the store holds for this cluster.
        topic: Arc<str>,
    },
}

impl NodeMode {
    fn writes_snapshots(&self) -> bool {
        matches!(self, Self::Embedded)
    }
}

/// First wait before retrying a failed bus subscription; doubled per
/// failure up to [`BUS_RETRY_MAX`].
const BUS_RETRY_MIN: Duration = Duration::from_millis(100);
/// How long a join waits for the bus subscription before it is refused as
/// not ready (start-up races; the embedded bus subscribes at once).
const JOIN_WAITS_FOR_BUS: Duration = Duration::from_secs(1);
/// Longest wait between bus subscription attempts.
const BUS_RETRY_MAX: Duration = Duration::from_secs(5);
/// A node whose oldest publish has waited this long for the bus's answer
/// is not ready. A healthy broker answers in milliseconds and a leader
/// fails over in a few seconds; past this the brokers cannot make updates
/// durable (in Kafka: fewer in-sync replicas than `min.insync.replicas`,
/// or no controller quorum to shrink the in-sync set), and the updates
/// wait until they can or until `--kafka-publish-timeout` fails them.
pub const PUBLISH_STALL_NOT_READY: Duration = Duration::from_secs(5);

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
    /// Embedded or cluster.
    pub mode: NodeMode,
    /// When a busy document batches its update broadcasts.
    pub broadcast_batching: BroadcastBatching,
    /// How often this node tells the others it is alive.
    pub heartbeat_interval: Duration,
    /// A node silent this long is taken for dead: its clients' awareness
    /// states are removed (no ghost cursors). Several heartbeat intervals,
    /// so one lost heartbeat does not flicker everyone's cursors.
    pub peer_timeout: Duration,
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
            mode: NodeMode::Embedded,
            broadcast_batching: BroadcastBatching::OFF,
            heartbeat_interval: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(5),
        }
    }
}

/// The loaded documents, shared by the registry and the committer (which
/// delivers committed updates to them).
#[derive(Debug, Default)]
pub(crate) struct Documents {
    loaded: parking_lot::Mutex<HashMap<DocName, Arc<Document>>>,
    /// Every document's broadcast batching.
    batching: BroadcastBatching,
}

impl Documents {
    /// Hands a durable update to its document, if loaded. A document that
    /// is not loaded will read it from the log when it loads.
    pub(crate) fn deliver(&self, doc: &str, seq: LogSeq, update: &[u8], origin: Option<SessionId>) {
        if let Some(document) = self.get(doc) {
            document.deliver(seq, update, origin);
        }
    }

    /// A durable deletion of `doc` at `seq`: a loaded document closes its
    /// sessions and is dropped (the next join loads it afresh); a loading
    /// one keeps the deletion in order with its other records. Returns
    /// whether the document left memory (the bus may then release it).
    pub(crate) fn delete(&self, doc: &str, seq: LogSeq, deleted_state_vector: &[u8]) -> bool {
        let mut loaded = self.loaded.lock();
        let Some(document) = loaded.get(doc).cloned() else {
            return false;
        };
        let dropped = document.delete(seq, deleted_state_vector);
        if dropped {
            loaded.remove(doc);
        }
        dropped
    }

    /// The document named `doc`, if loaded (or loading).
    pub(crate) fn loaded_document(&self, doc: &str) -> Option<Arc<Document>> {
        self.get(doc)
    }

    fn get(&self, doc: &str) -> Option<Arc<Document>> {
        self.loaded.lock().get(doc).cloned()
    }

    /// The names of the documents in memory.
    pub(crate) fn names(&self) -> Vec<DocName> {
        self.loaded.lock().keys().cloned().collect()
    }

    /// The loaded document, or a new one if fewer than `max` are loaded.
    pub(crate) fn get_or_insert(&self, name: &str, max: usize) -> Option<Arc<Document>> {
        let mut loaded = self.loaded.lock();
        if let Some(document) = loaded.get(name) {
            return Some(document.clone());
        }
        if loaded.len() >= max {
            return None;
        }
        let name: DocName = Arc::from(name);
        let document = Arc::new(Document::new(name.clone(), self.batching));
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

impl Interest for Documents {
    fn wants(&self, doc: &str) -> bool {
        self.loaded.lock().contains_key(doc)
    }
}

#[derive(Debug)]
pub(crate) struct RegistryInner {
    pub(crate) documents: Arc<Documents>,
    pub(crate) store: Arc<dyn DocStore>,
    pub(crate) bus: Arc<dyn MessageBus>,
    /// Whether the bus subscription is live (cluster mode: the broker
    /// answered). Joins wait briefly for it, then are refused.
    subscribed: tokio::sync::watch::Sender<bool>,
    pub(crate) committer: Committer,
    pub(crate) config: RegistryConfig,
    pub(crate) next_session: AtomicU64,
    /// Stops the housekeeping task and refuses new sessions.
    pub(crate) closing: CancellationToken,
    /// Stops the committer once sessions are gone.
    committer_stop: CancellationToken,
    tracker: TaskTracker,
    committer_tracker: TaskTracker,
    pub(crate) metrics: Arc<SyncMetrics>,
}

/// The document registry of one node.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) inner: Arc<RegistryInner>,
}

impl Registry {
    /// A single node on `store`: its update log is the bus.
    pub fn embedded(store: Arc<dyn DocStore>, config: RegistryConfig) -> Self {
        let bus = Arc::new(LogBus::new(store.clone(), "embedded"));
        Self::start(
            store,
            bus,
            RegistryConfig {
                mode: NodeMode::Embedded,
                ..config
            },
        )
    }

    /// Starts the registry's committer, housekeeping and bus tasks.
    pub fn start(
        store: Arc<dyn DocStore>,
        bus: Arc<dyn MessageBus>,
        config: RegistryConfig,
    ) -> Self {
        let documents = Arc::new(Documents {
            loaded: parking_lot::Mutex::default(),
            batching: config.broadcast_batching,
        });
        let committer_tracker = TaskTracker::new();
        let committer_stop = CancellationToken::new();
        let metrics = Arc::new(SyncMetrics::default());
        let committer = Committer::spawn(
            bus.clone(),
            documents.clone(),
            metrics.clone(),
            &config.committer,
            &committer_tracker,
            committer_stop.clone(),
        );
        let inner = Arc::new(RegistryInner {
            documents,
            store,
            bus,
            subscribed: tokio::sync::watch::Sender::new(false),
            committer,
            config,
            next_session: AtomicU64::new(1),
            closing: CancellationToken::new(),
            committer_stop,
            tracker: TaskTracker::new(),
            committer_tracker,
            metrics,
        });
        inner.tracker.spawn(housekeeping(inner.clone()));
        inner.tracker.spawn(bus_task(inner.clone()));
        Self { inner }
    }

    /// Joins document `name`, loading it if needed. The returned session
    /// receives broadcasts through `outbox` from now on.
    pub async fn join(&self, name: &str, outbox: SessionOutbox) -> Result<Session, SyncError> {
        if self.inner.closing.is_cancelled() {
            return Err(SyncError::ShuttingDown);
        }
        self.wait_subscribed().await?;
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
        document.ensure_loaded(self.inner.load(name)).await?;
        Ok(session)
    }

    /// Waits (briefly: the embedded bus subscribes at once, a broker may
    /// take long) for the bus subscription.
    pub(crate) async fn wait_subscribed(&self) -> Result<(), SyncError> {
        let mut subscribed = self.inner.subscribed.subscribe();
        match tokio::time::timeout(JOIN_WAITS_FOR_BUS, subscribed.wait_for(|live| *live)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(SyncError::NotConnected),
        }
    }

    /// Whether the node can take sessions: the bus is subscribed (cluster:
    /// the broker answered), acknowledges what it is given and answers, and
    /// the store answers. `Err` says which part is not ready.
    pub async fn check_ready(&self) -> Result<(), String> {
        if !*self.inner.subscribed.borrow() {
            return Err("the message bus is not connected yet".to_owned());
        }
        if let Some(waiting) = self.inner.committer.unanswered_for()
            && waiting >= PUBLISH_STALL_NOT_READY
        {
            return Err(format!(
                "the message bus has not acknowledged updates for {} s; they wait (cluster: brokers down, or fewer in sync than the topic requires)",
                waiting.as_secs()
            ));
        }
        if let Err(error) = self.inner.bus.check().await {
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
        match self.inner.store.check().await {
            Ok(()) => true,
            Err(error) => {
                warn!(error = %error, error.source = ?std::error::Error::source(&error), "store check failed");
                false
            }
        }
    }

    /// The bus's counters.
    pub fn bus_stats(&self) -> crate::BusStats {
        self.inner.bus.stats()
    }

    /// The live subscription's lag per partition (see
    /// [`MessageBus::consumer_lag`]).
    pub fn consumer_lag(&self) -> Vec<crate::bus::PartitionLag> {
        self.inner.bus.consumer_lag()
    }

    /// What the live subscription has fetched (see
    /// [`MessageBus::fetched`]).
    pub fn bus_fetched(&self) -> Option<crate::bus::FetchTotals> {
        self.inner.bus.fetched()
    }

    /// The sync layer's metrics (publish, load, snapshot).
    pub fn metrics(&self) -> &SyncMetrics {
        &self.inner.metrics
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
            if !document.is_loaded() || !self.inner.config.mode.writes_snapshots() {
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
            if document.is_loaded() && document.claim_reread(now, MISSING_GRACE) {
                inner.tracker.spawn(reread(inner.clone(), document.clone()));
            }
            if !document.is_loaded() {
                // A load in progress or failed: the joiner that holds it
                // retries or leaves; an abandoned one is dropped when idle.
                if let Some(idle_since) = document.idle_since()
                    && now.duration_since(idle_since) >= inner.config.unload_grace
                    && inner.documents.remove_if_idle(&document, idle_since)
                {
                    inner.bus.release(document.name());
                }
                continue;
            }
            let idle_since = document.idle_since();
            let unload_due = idle_since
                .is_some_and(|since| now.duration_since(since) >= inner.config.unload_grace);
            if !inner.config.mode.writes_snapshots() {
                // Nothing to write: the log holds every update.
                if let (true, Some(since)) = (unload_due, idle_since)
                    && inner.documents.remove_if_idle(&document, since)
                {
                    inner.bus.release(document.name());
                    debug!(doc = %document.name(), "document unloaded");
                }
                continue;
            }
            let snapshot_due = document
                .dirty()
                .is_some_and(|dirty| snapshot_due(&inner.config, &dirty, now));
            if !(unload_due || snapshot_due) {
                continue;
            }
            let span = debug_span!(parent: None, "snapshot", doc = %document.name());
            let started = std::time::Instant::now();
            let saved = document
                .save_snapshot(inner.store.as_ref())
                .instrument(span)
                .await;
            if let Ok(Some(bytes)) = saved {
                inner
                    .metrics
                    .snapshot_seconds
                    .observe(started.elapsed().as_secs_f64());
                #[allow(clippy::cast_precision_loss)] // a histogram bucket
                inner.metrics.snapshot_bytes.observe(bytes as f64);
            }
            if let Err(error) = saved {
                warn!(doc = %document.name(), error = %error, error.source = ?std::error::Error::source(&error), "snapshot failed; will retry");
                continue;
            }
            if let (true, Some(since)) = (unload_due, idle_since)
                && document.dirty().is_none()
                && inner.documents.remove_if_idle(&document, since)
            {
                inner.bus.release(document.name());
                debug!(doc = %document.name(), "document unloaded");
            }
        }
    }
}

/// Reads a document that holds updates it cannot integrate again from the
/// log, as a load would, and applies what it lacked (see
/// `document::Reread`).
async fn reread(inner: Arc<RegistryInner>, document: Arc<Document>) {
    inner.metrics.documents_reread.inc();
    let name = document.name().to_owned();
    let stored = inner
        .load_inner(&name)
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
                inner.metrics.documents_repaired.inc();
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

fn snapshot_due(config: &RegistryConfig, dirty: &Dirty, now: Instant) -> bool {
    now.duration_since(dirty.last) >= config.snapshot_debounce
        || now.duration_since(dirty.since) >= config.snapshot_max_delay
        || dirty.updates >= config.snapshot_max_updates
}

impl RegistryInner {
    /// What a loading document starts from: embedded, the store's snapshot
    /// and the log after it (one read); cluster, the worker's topic
    /// snapshot and the document's records after it, replayed from the bus.
    pub(crate) async fn load(&self, doc: &str) -> Result<StoredDoc, SyncError> {
        let started = std::time::Instant::now();
        let loaded = self
            .load_inner(doc)
            .instrument(debug_span!("load", doc = %doc))
            .await;
        self.metrics
            .load_seconds
            .observe(started.elapsed().as_secs_f64());
        loaded
    }

    async fn load_inner(&self, doc: &str) -> Result<StoredDoc, SyncError> {
        let topic = match &self.config.mode {
            NodeMode::Embedded => return self.store.load(doc).await.map_err(SyncError::Load),
            NodeMode::Cluster { topic } => topic,
        };
        let snapshot = self
            .store
            .load_topic_snapshot(topic, doc)
            .await
            .map_err(SyncError::Load)?;
        let after = snapshot.as_ref().map(|snapshot| Position {
            partition: snapshot.partition,
            offset: snapshot.covers_offset,
        });
        let replayed = self
            .bus
            .replay(doc, after)
            .await
            .map_err(SyncError::Replay)?;
        let mut updates = Vec::with_capacity(replayed.len());
        let mut deletions = Vec::new();
        for record in replayed {
            match record.kind {
                RecordKind::Delete => deletions.push(Tombstone {
                    state_vector: record.update.to_vec(),
                    position: record.position.offset,
                    deleted_at_ms: 0,
                }),
                _ => updates.push(LoggedUpdate {
                    seq: record.position.offset,
                    update: record.update.to_vec(),
                }),
            }
        }
        Ok(StoredDoc {
            snapshot: snapshot.map(|snapshot| Snapshot {
                state: snapshot.state,
                state_vector: snapshot.state_vector,
                covers_seq: snapshot.covers_offset,
                tombstone: snapshot.tombstone,
            }),
            updates,
            deletions,
        })
    }

    /// Tells the other nodes about a stateless message of a local session.
    pub(crate) fn publish_stateless(&self, doc: &DocName, payload: &str, session: SessionId) {
        self.bus.publish_ephemeral(Record {
            doc: doc.clone(),
            kind: RecordKind::Stateless,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            origin_session: session.raw(),
            span: tracing::Span::none(),
        });
    }

    /// Tells the other nodes about an awareness change of a local session.
    pub(crate) fn publish_awareness(
        &self,
        doc: &DocName,
        update: &AwarenessUpdate,
        session: SessionId,
    ) {
        use yrs::updates::encoder::Encode;
        self.bus.publish_ephemeral(Record {
            doc: doc.clone(),
            kind: RecordKind::Awareness,
            payload: Bytes::from(update.encode_v1()),
            origin_session: session.raw(),
            span: tracing::Span::none(),
        });
    }
}

/// Subscribes to the bus (retrying with backoff), then applies other nodes'
/// records, publishes heartbeats and expires silent peers until closing.
async fn bus_task(inner: Arc<RegistryInner>) {
    let Some(mut deliveries) = subscribe_with_backoff(&inner).await else {
        return;
    };
    inner.subscribed.send_replace(true);
    info!(origin = %inner.bus.origin(), "bus subscribed; node ready for sessions");
    let mut peers = Peers::default();
    let mut heartbeat = tokio::time::interval(inner.config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.closing.cancelled() => return,
            delivery = deliveries.recv() => {
                let Some(delivery) = delivery else {
                    warn!("bus subscription ended; refusing new sessions");
                    inner.subscribed.send_replace(false);
                    return;
                };
                handle_delivery(&inner, &mut peers, delivery);
            }
            _ = heartbeat.tick() => {
                inner.bus.publish_ephemeral(Record {
                    doc: Arc::from(""),
                    kind: RecordKind::Heartbeat,
                    payload: Bytes::new(),
                    origin_session: 0,
                    span: tracing::Span::none(),
                });
                for node in peers.expire(Instant::now(), inner.config.peer_timeout) {
                    info!(node = %node, "peer node went silent; removing its clients' awareness");
                    for document in inner.documents.all() {
                        document.remove_peer(&node, None);
                    }
                }
            }
        }
    }
}

async fn subscribe_with_backoff(
    inner: &RegistryInner,
) -> Option<tokio::sync::mpsc::Receiver<Delivery>> {
    let mut wait = BUS_RETRY_MIN;
    let mut attempts = 0_u32;
    loop {
        let interest: Arc<dyn Interest> = inner.documents.clone();
        let attempt = tokio::select! {
            () = inner.closing.cancelled() => return None,
            attempt = inner.bus.subscribe(interest) => attempt,
        };
        match attempt {
            Ok(deliveries) => return Some(deliveries),
            Err(BusError::AlreadySubscribed) => {
                warn!("bus already subscribed by another registry of this node");
                return None;
            }
            Err(error) => {
                attempts += 1;
                // The first failure and then one in ten: a broker that is
                // down for a while must not flood the log.
                if attempts == 1 || attempts.is_multiple_of(10) {
                    warn!(attempts, retry_in = ?wait, error = %error, error.source = ?std::error::Error::source(&error), "bus subscription failed; retrying");
                }
            }
        }
        tokio::select! {
            () = inner.closing.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(BUS_RETRY_MAX);
    }
}

fn handle_delivery(inner: &RegistryInner, peers: &mut Peers, delivery: Delivery) {
    let Delivery {
        record,
        origin,
        position,
    } = delivery;
    // A bus may deliver this node's own updates back (see
    // `MessageBus::subscribe`): they say nothing about peers.
    let own = origin == *inner.bus.origin();
    if !own && let Some(replaced) = peers.saw(&origin, Instant::now()) {
        info!(node = %origin.node, old = replaced, "peer node restarted; removing its old clients' awareness");
        for document in inner.documents.all() {
            document.remove_peer(&origin.node, Some(origin.incarnation));
        }
    }
    match record.kind {
        RecordKind::Update => {
            let seq = position.map_or(0, |position| position.offset);
            let _consumed = record.span.enter();
            inner
                .documents
                .deliver(&record.doc, seq, &record.payload, None);
        }
        RecordKind::Awareness => {
            let Some(document) = inner.documents.get(&record.doc) else {
                return;
            };
            match AwarenessUpdate::decode_v1(&record.payload) {
                Ok(update) => {
                    document.apply_awareness(update, Owner::Peer(origin));
                }
                Err(error) => {
                    debug!(doc = %record.doc, node = %origin.node, error = %error, "awareness record does not decode; skipped");
                }
            }
        }
        RecordKind::Stateless => {
            let Some(document) = inner.documents.get(&record.doc) else {
                return;
            };
            match std::str::from_utf8(&record.payload) {
                Ok(payload) => document.broadcast_stateless(payload, None),
                Err(_) => debug!(doc = %record.doc, "stateless record is not UTF-8; skipped"),
            }
        }
        RecordKind::Delete => {
            let Some(position) = position else {
                debug!(doc = %record.doc, "delete record without a log position; skipped");
                return;
            };
            if inner
                .documents
                .delete(&record.doc, position.offset, &record.payload)
            {
                inner.bus.release(&record.doc);
            }
        }
        RecordKind::Heartbeat => {}
    }
}

/// The other nodes this node has heard from, and when.
#[derive(Debug, Default)]
struct Peers {
    /// Node id -> (incarnation, last heard).
    nodes: HashMap<Arc<str>, (u64, Instant)>,
}

impl Peers {
    /// Records that `origin` spoke. Returns the incarnation it replaced, if
    /// the node restarted.
    fn saw(&mut self, origin: &Origin, now: Instant) -> Option<u64> {
        let previous = self
            .nodes
            .insert(origin.node.clone(), (origin.incarnation, now));
        match previous {
            Some((incarnation, _)) if incarnation != origin.incarnation => Some(incarnation),
            _ => None,
        }
    }

    /// Forgets and returns the nodes silent for `timeout`.
    fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Arc<str>> {
        let mut silent = Vec::new();
        self.nodes.retain(|node, (_, last)| {
            let alive = now.duration_since(*last) < timeout;
            if !alive {
                silent.push(node.clone());
            }
            alive
        });
        silent
    }
}
