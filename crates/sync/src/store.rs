//! The seams between documents and durable storage, in two traits.
//!
//! A [`SnapshotStore`] holds, per (update log, document), at most one
//! [`Snapshot`]: the document folded from that log, the [`Position`] it
//! covers and its tombstone. The log is named by its
//! [`log_id`](crate::MessageBus::log_id) (a Kafka topic, or
//! [`EMBEDDED_LOG`]), so one database serves an embedded node and clusters
//! of several topics without their positions ever being compared. Loading a
//! document is the same for every log: the snapshot of (log, document),
//! then the log replayed after the position it covers (`loader`).
//!
//! An [`EmbeddedLog`] is a snapshot store that also keeps the embedded
//! update log, which [`LogBus`](crate::LogBus) publishes to and replays
//! from. Writing a snapshot of [`EMBEDDED_LOG`] at position S prunes that
//! log up to S in the same transaction, so a read at any moment sees the
//! whole document.
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

pub use crate::position::{EMBEDDED_LOG, LogSeq, Position};

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
    /// Who wrote it, when and through which node.
    pub attribution: Attribution,
}

/// Who wrote an update, when, and through which node: what history shows
/// of it. Every part is optional, for updates logged before Weft recorded
/// them (they load all the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// The token's `sub`, or [`ANONYMOUS`] on an open node.
    pub author: Option<std::sync::Arc<str>>,
    /// The accepting node's clock when it published the update, in
    /// milliseconds since the Unix epoch.
    pub at_ms: Option<i64>,
    /// The accepting node's `--node-id`.
    pub node: Option<std::sync::Arc<str>>,
}

/// The author of updates written on a node without authentication.
pub const ANONYMOUS: &str = "anonymous";

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
    /// Where the deletion sits in the log: its offset in the partition of
    /// the snapshot carrying it (embedded: its sequence number). Every
    /// record of the document before it is gone.
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

/// A document folded from an update log: its compacted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The whole document as one Yjs v1 update.
    pub state: Vec<u8>,
    /// The document's state vector (v1), so a reader can answer a SyncStep1
    /// without decoding the state.
    pub state_vector: Vec<u8>,
    /// Every record of the document in `covers.partition` up to and
    /// including `covers.offset` is contained in `state`: a load replays
    /// the log after it.
    pub covers: Position,
    /// The latest deletion of the document, if it was ever deleted
    /// (`position` at or below `covers.offset`).
    pub tombstone: Option<Tombstone>,
}

/// What the store holds for one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Logged updates after the snapshot, in log order.
    pub updates: Vec<LoggedUpdate>,
    /// Deletions replayed from the log after the snapshot, in log order.
    /// [`EmbeddedLog::load`] leaves it empty: a stored deletion is the
    /// snapshot's tombstone.
    pub deletions: Vec<Tombstone>,
}

/// Whether a snapshot write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotWrite {
    /// The snapshot was stored (and, for the embedded log, the log pruned
    /// up to it).
    Written,
    /// A snapshot covering the same or a later position was already stored;
    /// nothing changed (fencing against late or concurrent writers).
    Superseded,
}

/// Snapshots of documents, per update log. Implementations must be safe to
/// call from many tasks at once.
#[async_trait]
pub trait SnapshotStore: Send + Sync + Debug + 'static {
    /// Reads the snapshot of `doc` folded from the log `log`, if any.
    async fn load_snapshot(&self, log: &str, doc: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Stores the snapshot of `doc` folded from `log` unless one covering
    /// the same or a later offset of the same partition is stored
    /// ([`SnapshotWrite::Superseded`]: the fence against a late or
    /// concurrent writer, such as two workers during a rebalance). A
    /// snapshot of another partition replaces the stored one (the topic's
    /// partition count changed, which moves documents). A snapshot of
    /// [`EMBEDDED_LOG`] also prunes that log up to `snapshot.covers`, in the
    /// same transaction.
    async fn save_snapshot(
        &self,
        log: &str,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError>;

    /// Documents of the log `log` the store holds, by name, after `after`
    /// (exclusive), at most `limit` of them: those with a snapshot (and,
    /// for [`EMBEDDED_LOG`], those with logged updates). A document whose
    /// latest write is its deletion is not listed.
    async fn list_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError>;

    /// Answers whether the store is usable (for readiness).
    async fn check(&self) -> Result<(), StoreError>;
}

/// A snapshot store that also keeps the embedded update log (log id
/// [`EMBEDDED_LOG`]): what [`LogBus`](crate::LogBus) appends to, replays
/// and deletes from. The node's load path never calls it.
#[async_trait]
pub trait EmbeddedLog: SnapshotStore {
    /// Reads what the embedded log holds of `doc` after position `after`,
    /// from one point in time: its snapshot if it covers more than
    /// `after` (it stands for the log it pruned), then the logged updates
    /// after both. A document never written reads as empty.
    async fn load_after(&self, doc: &str, after: LogSeq) -> Result<StoredDoc, StoreError>;

    /// Reads a document's latest embedded snapshot and the log after it,
    /// from one point in time. A document never written reads as empty.
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        self.load_after(doc, LogSeq::MIN).await
    }

    /// Appends updates to the log in one transaction and returns their
    /// sequence numbers, in order. When this returns `Ok`, the updates are
    /// durable.
    async fn append(&self, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError>;

    /// Deletes `doc`, atomically: takes the next log position, stores the
    /// empty document at it with a [`Tombstone`] holding
    /// `tombstone_state_vector` (it replaces any snapshot), and prunes the
    /// document's log up to it. Returns that position.
    async fn delete_document(
        &self,
        doc: &str,
        tombstone_state_vector: &[u8],
        deleted_at_ms: i64,
    ) -> Result<LogSeq, StoreError>;

    /// Stores an opaque revocation record (the gateway's JSON) under its
    /// unique `id` until `expires_at` (Unix seconds); storing an `id` again
    /// changes nothing. Durable when this returns `Ok`.
    async fn save_revocation(
        &self,
        id: &str,
        record: &[u8],
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// The revocation records that live after `now` (Unix seconds), in the
    /// order they were stored; those that ended are dropped.
    async fn load_revocations(&self, now: i64) -> Result<Vec<Vec<u8>>, StoreError>;
}
