//! History: versions of a document and reading it as it was.
//!
//! Every update the log keeps carries its [`Attribution`](crate::Attribution)
//! (who, when, through which node). A [`History`] store keeps, beside the
//! log, the document's versions ([`Version`]: automatic, named, or the
//! result of a restore, each covering the log up to a position, with the
//! authors of the changes since the version before it) and checkpoints (the
//! whole document at a position). The document at any position within
//! retention is the nearest checkpoint at or before it plus the log after
//! that checkpoint up to the position ([`HistoryRead`], folded by
//! [`HistoryRead::fold`]); every version is also a checkpoint, so reading a
//! version replays nothing.
//!
//! A store that keeps history does not prune the log when it writes a
//! snapshot ([`History::keep_log`]).
//!
//! History older than `--history-retention` is folded into one checkpoint
//! per document ([`History::compaction_plan`], [`History::compact`]; the
//! pass over every document is [`compaction`](crate::compaction)).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::store::{LogSeq, StoreError};
use crate::text_runs::AttributedUpdate;
use crate::update::InvalidUpdate;

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    /// After `--version-interval` of activity, or when the last session
    /// left a changed document.
    Auto,
    /// Asked for, with a name.
    Named,
    /// The document as a restore left it.
    Restore,
}

impl VersionKind {
    /// Its name in the store and the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Named => "named",
            Self::Restore => "restore",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "named" => Some(Self::Named),
            "restore" => Some(Self::Restore),
            _ => None,
        }
    }
}

/// One version of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Unique in the store, growing with time.
    pub id: i64,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// How it came to be.
    pub kind: VersionKind,
    /// When it was taken (ms since the Unix epoch, the taking node's clock).
    pub at_ms: i64,
    /// The log position it covers.
    pub covers: LogSeq,
    /// Who changed the document since the version before it, in order of
    /// their first change.
    pub authors: Vec<String>,
}

/// A version to store, with the document's state at `covers` (kept as a
/// checkpoint).
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// The document.
    pub doc: &'a str,
    /// Its name, if any.
    pub name: Option<&'a str>,
    /// How it came to be.
    pub kind: VersionKind,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// The log position the state covers.
    pub covers: LogSeq,
    /// The whole document at `covers`, as one Yjs v1 update.
    pub state: &'a [u8],
}

/// What the store holds of a document at a position: the nearest
/// checkpoint at or before it and the logged updates after the checkpoint,
/// up to the position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRead {
    /// The checkpoint's state (`None`: the log from its start).
    pub checkpoint: Option<Vec<u8>>,
    /// Yjs v1 updates after the checkpoint, in log order.
    pub updates: Vec<Vec<u8>>,
}

impl HistoryRead {
    /// The document these hold, as one Yjs v1 update. An update that does
    /// not decode is an error (the log holds only updates checked at the
    /// door); one `yrs` keeps pending changes nothing, as on a load.
    pub fn fold(&self) -> Result<Vec<u8>, InvalidUpdate> {
        let doc = Doc::new();
        for bytes in self.checkpoint.iter().chain(self.updates.iter()) {
            weft_protocol::check_update_v1(bytes)?;
            let update = Update::decode_v1(bytes)?;
            crate::ycheck::apply_decoded(&doc, update).map_err(InvalidUpdate::Unappliable)?;
        }
        Ok(doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default()))
    }
}

/// Per author, what a document's log holds of them in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorActivity {
    /// The author (`None`: updates logged before Weft recorded authors).
    pub author: Option<String>,
    /// Updates logged.
    pub updates: u64,
    /// The first one's time (ms since the Unix epoch).
    pub first_ms: i64,
    /// The last one's.
    pub last_ms: i64,
}

/// What compacting a document's history at a cutoff works from: the point
/// history folds into and what the store holds there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPlan {
    /// The last position of the document at or before the cutoff: the
    /// checkpoint history older than it folds into.
    pub covers: LogSeq,
    /// The position of the checkpoint `read` starts from (`None`: the log
    /// from its start). Equal to `covers` when that checkpoint is stored
    /// already, and then there is nothing to fold.
    pub basis: Option<LogSeq>,
    /// The checkpoint and the logged updates after it, up to `covers`.
    pub read: HistoryRead,
}

impl CompactionPlan {
    /// Whether the checkpoint at `covers` is stored already.
    pub fn checkpoint_stored(&self) -> bool {
        self.basis == Some(self.covers)
    }
}

/// One document's compaction, as the store commits it.
#[derive(Debug, Clone, Copy)]
pub struct Compaction<'a> {
    /// The document.
    pub doc: &'a str,
    /// The plan's `covers`.
    pub covers: LogSeq,
    /// The plan's `basis`: if the store's nearest checkpoint at or before
    /// `covers` is another by now, or the updates after it changed in
    /// number, the fold is stale and nothing is written.
    pub basis: Option<LogSeq>,
    /// How many updates the fold applied after the basis.
    pub folded_updates: u64,
    /// The document at `covers` (`None` when the checkpoint there is
    /// stored already).
    pub state: Option<&'a [u8]>,
    /// The checkpoint's time (ms since the Unix epoch): the cutoff.
    pub at_ms: i64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compacted {
    /// Committed: this many rows (log rows, checkpoints, versions) removed.
    Done {
        /// Rows removed.
        removed: u64,
    },
    /// The history changed since the plan was read (a version, a purge, an
    /// update committed late): nothing written; the next pass plans again.
    Stale,
}

/// How much history a store holds for a log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Bytes of the logged updates and checkpoint states kept (payload
    /// only: row overhead and indexes not counted).
    pub bytes: u64,
    /// Versions stored.
    pub versions: u64,
}

/// Versions, checkpoints and the attributed log of documents. Safe to call
/// from many tasks at once.
#[async_trait]
pub trait History: Send + Sync + Debug + 'static {
    /// From now on, snapshots do not prune the log: history needs it.
    fn keep_log(&self);

    /// Stores a version and its checkpoint; its authors are those of the
    /// log after the version before it, up to `covers`.
    async fn create_version(&self, version: NewVersion<'_>) -> Result<Version, StoreError>;

    /// The document's versions, newest first, with ids below `before` (all
    /// for `None`), at most `limit`.
    async fn versions(
        &self,
        doc: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Version>, StoreError>;

    /// One version of the document, if it exists.
    async fn version(&self, doc: &str, id: i64) -> Result<Option<Version>, StoreError>;

    /// The newest log position of the document accepted at or before
    /// `at_ms` (updates logged without a time count as older than any);
    /// `None` if the document had no update by then.
    async fn position_at(&self, doc: &str, at_ms: i64) -> Result<Option<LogSeq>, StoreError>;

    /// The newest position of the document's history before `position`
    /// (a logged update or a checkpoint), if any: where an undelete reads
    /// the document from.
    async fn position_before(
        &self,
        doc: &str,
        position: LogSeq,
    ) -> Result<Option<LogSeq>, StoreError>;

    /// Removes the document's history for good: its logged updates up to
    /// its snapshot, checkpoints and versions. Tells whether there was any.
    async fn purge(&self, doc: &str) -> Result<bool, StoreError>;

    /// What the store holds of the document at `covers`.
    async fn read_at(&self, doc: &str, covers: LogSeq) -> Result<HistoryRead, StoreError>;

    /// The document's logged updates after `after` up to `upto`, in log
    /// order, each with its author.
    async fn updates_between(
        &self,
        doc: &str,
        after: LogSeq,
        upto: LogSeq,
    ) -> Result<Vec<AttributedUpdate>, StoreError>;

    /// Per author, the document's logged updates accepted from `from_ms`
    /// to `to_ms` (inclusive).
    async fn activity(
        &self,
        doc: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<AuthorActivity>, StoreError>;

    /// The documents with history in the log `log` (the embedded log, or a
    /// topic: its checkpoints and versions) after `after` in byte order,
    /// `limit` at most, loaded or not.
    async fn history_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// What compacting `doc`'s history in `log` at `cutoff_ms` would fold;
    /// `None` when the store holds nothing older than the last position at
    /// or before the cutoff that a compaction would remove.
    async fn compaction_plan(
        &self,
        log: &str,
        doc: &str,
        cutoff_ms: i64,
    ) -> Result<Option<CompactionPlan>, StoreError>;

    /// In one transaction: stores the checkpoint at `compaction.covers`
    /// (unless stored), then removes the document's history older than it:
    /// log rows up to it (never past the document's snapshot, which a load
    /// reads on from), checkpoints and automatic and restore versions.
    /// Named versions and their checkpoints stay. Idempotent.
    async fn compact(&self, log: &str, compaction: Compaction<'_>)
    -> Result<Compacted, StoreError>;

    /// How much history the store holds for `log`.
    async fn history_stats(&self, log: &str) -> Result<HistoryStats, StoreError>;
}

/// One record of a topic's document, as the persistence worker read it:
/// the per-edit history of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEdit {
    /// The document.
    pub doc: Arc<str>,
    /// The record's offset in its partition.
    pub position: LogSeq,
    /// The Yjs v1 update (empty for a deletion).
    pub update: Vec<u8>,
    /// Who wrote it (`None`: a record from before attribution).
    pub author: Option<Arc<str>>,
    /// When the publishing node accepted it (ms since the Unix epoch).
    pub at_ms: Option<i64>,
    /// The publishing node.
    pub node: Option<Arc<str>>,
}

/// A cluster's history: [`History`] over one topic's per-edit rows, which
/// the persistence worker (the single folder of each partition) appends.
#[async_trait]
pub trait EditLog: History {
    /// Stores `edits` (rows already stored are left as they are: a record
    /// folded twice after a crash is stored once).
    async fn append_edits(&self, edits: &[LoggedEdit]) -> Result<(), StoreError>;
}
