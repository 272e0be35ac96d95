//! The seam between documents and durable storage.
//!
//! The store holds, per document, an append-only update log and at most one
//! snapshot. Loading a document is "latest snapshot + every logged update
//! after it". Writing a snapshot at sequence number S prunes the log up to S
//! in the same transaction, so a load at any moment sees the whole document.
//!
//! In cluster mode the log is a Kafka topic, and the store holds *topic
//! snapshots* instead: per (topic, document), the document folded from the
//! topic by the persistence worker, with the partition and offset it covers.
//! They live apart from the embedded snapshots, so one database can serve an
//! embedded node and clusters of several topics without their positions
//! ever being compared.
//!
//! # Deleted documents
//!
//! A deletion is a snapshot too: the empty document, covering the
//! deletion's log position, carrying a [`Tombstone`] (the state vector of
//! what was deleted). Writing it prunes the log before it like any
//! snapshot, and the snapshot fence (a snapshot never replaces one covering
//! a later position) keeps a late writer holding the old content from
//! bringing it back. Later snapshots of the document carry the tombstone
//! forward, so a client that still holds deleted history is refused for
//! as long as the document exists.

use std::fmt::Debug;

use async_trait::async_trait;
use thiserror::Error;

/// Position in the update log. Strictly increasing across the whole log and
/// never reused, so "everything up to S" is well defined.
pub type LogSeq = i64;

/// A failure of the storage backend, with its cause kept.
#[derive(Debug, Error)]
#[error("{context}")]
pub struct StoreError {
    context: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// Wraps a backend error with what was being done ("append updates").
    pub fn new(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            context,
            source: source.into(),
        }
    }
}

/// One update appended to the log.
#[derive(Debug, Clone)]
pub struct NewUpdate {
    /// The document it belongs to.
    pub doc: crate::DocName,
    /// A Yjs v1 update.
    pub update: bytes::Bytes,
}

/// One update read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedUpdate {
    /// Its position in the log.
    pub seq: LogSeq,
    /// A Yjs v1 update.
    pub update: Vec<u8>,
}

/// The v1 encoding of an empty Yjs update (no structs, no deletions): the
/// state of a deleted document.
pub const EMPTY_UPDATE_V1: &[u8] = &[0, 0];
/// The v1 encoding of an empty state vector.
pub const EMPTY_STATE_VECTOR_V1: &[u8] = &[0];

/// What a deletion leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The v1 state vector of the deleted content: a client whose state or
    /// update holds a `(client, clock)` below it is refused.
    pub state_vector: Vec<u8>,
    /// Where the deletion sits in the log (embedded: its sequence number;
    /// a topic: its offset in the snapshot's partition). Every record of
    /// the document before it is gone.
    pub position: LogSeq,
    /// When it was deleted, in milliseconds since the Unix epoch (0 when
    /// only the log record is known, which carries no time).
    pub deleted_at_ms: i64,
}

/// A document as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDoc {
    /// Its name.
    pub name: String,
    /// Bytes of its stored snapshot (0 if it has none yet).
    pub snapshot_bytes: i64,
    /// When its snapshot was last written (ms since the Unix epoch), if it
    /// has one.
    pub snapshot_at_ms: Option<i64>,
}

/// The compacted state of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The whole document as one Yjs v1 update.
    pub state: Vec<u8>,
    /// The document's state vector (v1), so a reader can answer a SyncStep1
    /// without decoding the state.
    pub state_vector: Vec<u8>,
    /// Every logged update of the document up to and including this
    /// sequence number is contained in `state`.
    pub covers_seq: LogSeq,
    /// The latest deletion of the document, if it was ever deleted
    /// (`position` at or below `covers_seq`).
    pub tombstone: Option<Tombstone>,
}

/// What the store holds for one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Logged updates after the snapshot, in log order.
    pub updates: Vec<LoggedUpdate>,
    /// Deletions read back with the updates (cluster mode: delete records
    /// replayed from the topic after the snapshot), in log order. Stores
    /// leave it empty: a stored deletion is the snapshot's tombstone.
    pub deletions: Vec<Tombstone>,
}

/// A document folded from a Kafka topic by the persistence worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSnapshot {
    /// The whole document as one Yjs v1 update.
    pub state: Vec<u8>,
    /// Its v1 state vector.
    pub state_vector: Vec<u8>,
    /// The partition holding the document's records.
    pub partition: i32,
    /// Every record of the document in `partition` up to and including this
    /// offset is contained in `state`.
    pub covers_offset: i64,
    /// The latest deletion of the document, if any (`position` is an
    /// offset in `partition`, at or below `covers_offset`).
    pub tombstone: Option<Tombstone>,
}

/// Whether a snapshot write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotWrite {
    /// The snapshot was stored and the log pruned up to it.
    Written,
    /// A snapshot covering the same or a later position was already stored;
    /// nothing changed (fencing against late or concurrent writers).
    Superseded,
}

/// Durable storage of documents. Implementations must be safe to call from
/// many tasks at once.
#[async_trait]
pub trait DocStore: Send + Sync + Debug + 'static {
    /// Reads a document's latest snapshot and the log after it. A document
    /// never written reads as empty.
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError>;

    /// Appends updates to the log in one transaction and returns their
    /// sequence numbers, in order. When this returns `Ok`, the updates are
    /// durable.
    async fn append(&self, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError>;

    /// Stores a snapshot and prunes the document's log up to
    /// `snapshot.covers_seq`, atomically. Refuses (as
    /// [`SnapshotWrite::Superseded`]) to replace a snapshot covering a later
    /// or equal position.
    async fn save_snapshot(
        &self,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError>;

    /// Deletes `doc` (embedded mode), atomically: takes the next log
    /// position, stores the empty document at it with a [`Tombstone`]
    /// holding `tombstone_state_vector` (it replaces any snapshot), and
    /// prunes the document's log up to it. Returns that position.
    async fn delete_document(
        &self,
        doc: &str,
        tombstone_state_vector: &[u8],
        deleted_at_ms: i64,
    ) -> Result<LogSeq, StoreError>;

    /// Documents the store holds, by name, after `after` (exclusive), at
    /// most `limit` of them. `topic: None` lists the embedded documents
    /// (a snapshot or logged updates); `Some(topic)` the topic snapshots of
    /// that cluster. A document whose latest write is its deletion is not
    /// listed.
    async fn list_documents(
        &self,
        topic: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError>;

    /// Reads the topic snapshot of `doc` folded from `topic`, if any.
    async fn load_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
    ) -> Result<Option<TopicSnapshot>, StoreError>;

    /// Stores a topic snapshot unless one covering the same or a later
    /// offset of the same partition is stored ([`SnapshotWrite::Superseded`]:
    /// the fence against two workers during a rebalance, or a late retry).
    /// A snapshot of another partition replaces the stored one (the topic's
    /// partition count changed, which moves documents).
    async fn save_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
        snapshot: &TopicSnapshot,
    ) -> Result<SnapshotWrite, StoreError>;

    /// Answers whether the store is usable (for readiness).
    async fn check(&self) -> Result<(), StoreError>;
}
