//! The persistence worker's state: documents folded from the partitions it
//! owns, and the one rule that makes it crash-safe.
//!
//! # The rule
//!
//! A partition's consumer offset is committed only up to the first record
//! that is not yet inside a stored snapshot. So after a crash at any point
//! (between a snapshot write and the commit included) the restarted worker
//! reads again from the committed offset, on top of the stored snapshots:
//! a record is folded twice at worst (harmless: Yjs updates are idempotent),
//! never lost. [`Fold::commit_offsets`] computes those offsets; nothing here
//! does I/O, so the rule is tested directly.
//!
//! A document's state is loaded from its stored snapshot the first time a
//! record of it arrives ([`Fold::needs_base`], [`Fold::insert_base`]);
//! records the snapshot already covers are skipped.
//!
//! # One shape with the node
//!
//! A folded document's content is a [`Replica`], the node's document state
//! machine: the same validation and apply, the same tombstone (how a
//! deletion becomes one, what it refuses), the same snapshot encoding; and
//! when its snapshot is due is the node's [`SnapshotPolicy`]. What the fold
//! keeps beside it are positions, because the replica's do not fit Kafka:
//! a replica's positions are one log's sequence numbers (0: nothing
//! applied) and it counts only changes towards a snapshot, while here a
//! position is an offset of one partition (offset 0 is a record), a
//! snapshot read from another partition covers nothing, and every record
//! read, even one that changes nothing, must be inside a stored snapshot
//! before its offset is committed. So records are folded with
//! [`Replica::fold`] (content only, failures told here), not checked
//! against the tombstone's position (one read from another partition's
//! snapshot is not comparable with this partition's offsets; on the same
//! partition the covered-offset skip already stops what came before it),
//! and the offsets, the unwritten records and the deletion to write are
//! the fold's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;
use weft_sync::store::{Position, Snapshot};
use weft_sync::tombstone::TombstoneState;
use weft_sync::{CommittedUpdate, Dirty, ReadState, Replica, Skipped, SnapshotPolicy, unix_millis};

/// When a folded document is written: the node's [`SnapshotPolicy`]
/// (`debounce`, `max_delay`, `max_updates`, see [`FoldConfig::policy`])
/// counting unwritten records, and eviction.
#[derive(Debug, Clone)]
pub struct FoldConfig {
    /// Write once a document has been quiet this long...
    pub debounce: Duration,
    /// ...or has had unwritten records this long...
    pub max_delay: Duration,
    /// ...or this many unwritten records.
    pub max_updates: u64,
    /// A written document untouched this long leaves memory (it is read back
    /// from its snapshot if a record of it arrives later).
    pub evict_after: Duration,
}

impl FoldConfig {
    /// When a document's snapshot is due: the node's rule.
    pub fn policy(&self) -> SnapshotPolicy {
        SnapshotPolicy {
            debounce: self.debounce,
            max_delay: self.max_delay,
            max_updates: self.max_updates,
        }
    }
}

impl Default for FoldConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            max_updates: 1000,
            evict_after: Duration::from_secs(60),
        }
    }
}

/// One document being folded.
struct FoldedDoc {
    /// The content and tombstone (its positions are unused here).
    replica: Replica,
    /// The first offset whose record is applied but in no stored snapshot.
    first_unstored: Option<i64>,
    /// The last offset applied (or covered by the loaded snapshot).
    last_applied: i64,
    /// The records read since the last write (every one counts, whatever
    /// it changed): when the first and the latest were read (the latest
    /// also for eviction), how many.
    unstored: Dirty,
    /// A deletion is waiting to be written: write at once, no debounce (a
    /// node loading the document meanwhile replays the delete record, but
    /// the store should stop serving the deleted snapshot soon).
    deletion_unstored: bool,
    /// Bytes of state in the last snapshot stored (or loaded): a larger
    /// document waits for more records before its next one, as on a node
    /// ([`SnapshotPolicy::due_sized`]).
    snapshot_bytes: usize,
}

impl std::fmt::Debug for FoldedDoc {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FoldedDoc")
            .field("first_unstored", &self.first_unstored)
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct PartitionFold {
    /// The offset after the last record read from this partition.
    next_offset: Option<i64>,
    docs: HashMap<Arc<str>, FoldedDoc>,
}

/// A snapshot to write, and what it covers.
#[derive(Debug)]
pub struct SnapshotJob {
    /// The document.
    pub doc: Arc<str>,
    /// The snapshot, the position it covers filled in.
    pub snapshot: Snapshot,
}

/// Everything the worker holds.
#[derive(Debug, Default)]
pub struct Fold {
    config: FoldConfig,
    partitions: HashMap<i32, PartitionFold>,
}

impl Fold {
    /// An empty fold.
    pub fn new(config: FoldConfig) -> Self {
        Self {
            config,
            partitions: HashMap::new(),
        }
    }

    /// Whether a record of `doc` needs the document's stored snapshot first.
    pub fn needs_base(&self, partition: i32, doc: &str) -> bool {
        self.partitions
            .get(&partition)
            .is_none_or(|fold| !fold.docs.contains_key(doc))
    }

    /// Starts folding `doc` from its stored snapshot (`None`: from empty).
    /// A snapshot of another partition (the partition count changed) is
    /// applied but covers nothing here.
    pub fn insert_base(
        &mut self,
        partition: i32,
        doc: &str,
        snapshot: Option<&Snapshot>,
        now: Instant,
    ) {
        let name: Arc<str> = Arc::from(doc);
        let mut replica = Replica::new(name.clone());
        let mut covered = -1;
        let snapshot_bytes = snapshot.map_or(0, |snapshot| snapshot.state.len());
        if let Some(snapshot) = snapshot {
            let mut state =
                CommittedUpdate::from_log(snapshot.covers.offset, snapshot.state.clone());
            if let Err(error) = replica.fold(&mut state) {
                warn!(doc, error = %error, "stored snapshot does not apply; folding from empty");
            } else if snapshot.covers.partition == partition {
                covered = snapshot.covers.offset;
            }
            replica.restore_tombstone(snapshot.tombstone.as_ref().map(TombstoneState::from_stored));
        }
        self.partitions.entry(partition).or_default().docs.insert(
            name,
            FoldedDoc {
                replica,
                first_unstored: None,
                last_applied: covered,
                unstored: Dirty::new(now, 0),
                deletion_unstored: false,
                snapshot_bytes,
            },
        );
    }

    /// Takes the deletion of `doc` at `offset` of `partition` (the document
    /// must have its base): the folded state is dropped and replaced by the
    /// empty document with a tombstone naming everything deleted (the
    /// record's state vector, what was folded before it, any earlier
    /// tombstone). Returns whether it was applied (not already covered).
    pub fn delete(
        &mut self,
        partition: i32,
        offset: i64,
        doc: &str,
        deleted_state_vector: &[u8],
        now: Instant,
    ) -> bool {
        let fold = self.partitions.entry(partition).or_default();
        fold.next_offset = Some(crate::offset::advance(fold.next_offset, offset));
        let Some(folded) = fold.docs.get_mut(doc) else {
            debug_assert!(false, "delete before insert_base");
            return false;
        };
        if offset <= folded.last_applied {
            return false;
        }
        folded
            .replica
            .delete(offset, deleted_state_vector, unix_millis(), now);
        folded.note_record(offset, now);
        folded.deletion_unstored = true;
        true
    }

    /// Takes the record at `offset` of `partition`. `update` is `None` for a
    /// record that is not a document update (skipped, but read). The
    /// document must have its base ([`Fold::needs_base`]). Returns whether
    /// the update was applied (not already covered).
    pub fn apply(
        &mut self,
        partition: i32,
        offset: i64,
        update: Option<(&str, &[u8])>,
        now: Instant,
    ) -> bool {
        let fold = self.partitions.entry(partition).or_default();
        fold.next_offset = Some(crate::offset::advance(fold.next_offset, offset));
        let Some((doc, update)) = update else {
            return false;
        };
        let Some(folded) = fold.docs.get_mut(doc) else {
            debug_assert!(false, "apply before insert_base");
            return false;
        };
        if offset <= folded.last_applied {
            return false;
        }
        let mut record = CommittedUpdate::from_log(offset, update.to_vec());
        match folded.replica.fold(&mut record) {
            Ok(_) => {}
            Err(Skipped::DeletedHistory) => warn!(
                doc,
                partition, offset, "record builds on deleted history; not folded"
            ),
            // Logged and skipped like a node does: the record stays in the
            // log, and refusing the document would lose everything else.
            Err(error) => {
                warn!(doc, partition, offset, error = %error, "record does not apply; skipped");
            }
        }
        folded.note_record(offset, now);
        true
    }

    /// Snapshots to write now: documents past their debounce, delay or
    /// count, or every unwritten one if `all` (shutdown, revocation) in the
    /// given partitions (`None`: every partition).
    pub fn due(&self, now: Instant, all: bool, partitions: Option<&[i32]>) -> Vec<SnapshotJob> {
        let policy = self.config.policy();
        let mut jobs = Vec::new();
        for (partition, fold) in &self.partitions {
            if partitions.is_some_and(|wanted| !wanted.contains(partition)) {
                continue;
            }
            for (doc, folded) in &fold.docs {
                if folded.first_unstored.is_none() {
                    continue;
                }
                if !all
                    && !folded.deletion_unstored
                    && !policy.due_sized(&folded.unstored, now, folded.snapshot_bytes)
                {
                    continue;
                }
                let snapshot = folded.replica.snapshot_at(Position {
                    partition: *partition,
                    offset: folded.last_applied,
                });
                jobs.push(SnapshotJob {
                    doc: doc.clone(),
                    snapshot,
                });
            }
        }
        jobs
    }

    /// Records that `job`'s snapshot is durable (written, or superseded by
    /// one covering more). Records applied since the job was made stay
    /// unstored.
    pub fn stored(&mut self, job: &SnapshotJob) {
        let Some(folded) = self
            .partitions
            .get_mut(&job.snapshot.covers.partition)
            .and_then(|fold| fold.docs.get_mut(&job.doc))
        else {
            return;
        };
        if job
            .snapshot
            .tombstone
            .as_ref()
            .is_some_and(|tombstone| tombstone.position <= job.snapshot.covers.offset)
        {
            folded.deletion_unstored = false;
        }
        folded.snapshot_bytes = job.snapshot.state.len();
        if folded.last_applied <= job.snapshot.covers.offset {
            folded.first_unstored = None;
            folded.unstored.updates = 0;
        } else {
            // Newer records arrived meanwhile; the first of them is after
            // what the snapshot covers.
            folded.first_unstored = Some(crate::offset::next_after(job.snapshot.covers.offset));
        }
    }

    /// Per partition, the offset it is safe to commit: the first record not
    /// inside a stored snapshot, or the next one to read if all are.
    pub fn commit_offsets(&self) -> Vec<(i32, i64)> {
        let mut offsets = Vec::new();
        for (partition, fold) in &self.partitions {
            let Some(next) = fold.next_offset else {
                continue;
            };
            let unstored = fold
                .docs
                .values()
                .filter_map(|folded| folded.first_unstored)
                .min();
            offsets.push((*partition, unstored.map_or(next, |first| first.min(next))));
        }
        offsets.sort_unstable();
        offsets
    }

    /// Forgets partitions this worker no longer owns.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.partitions.remove(partition);
        }
    }

    /// Drops written documents untouched for `evict_after`.
    pub fn evict_idle(&mut self, now: Instant) {
        let evict_after = self.config.evict_after;
        for fold in self.partitions.values_mut() {
            fold.docs.retain(|_, folded| {
                folded.first_unstored.is_some()
                    || now.duration_since(folded.unstored.last) < evict_after
            });
        }
    }

    /// The document `doc` folded from `partition` as a reader sees it,
    /// covering the last record folded, if it is held.
    pub fn folded_state(&self, partition: i32, doc: &str) -> Option<ReadState> {
        let folded = self.partitions.get(&partition)?.docs.get(doc)?;
        let mut state = folded.replica.read_state();
        state.covers = folded.last_applied;
        Some(state)
    }

    /// Documents held in memory.
    pub fn documents(&self) -> usize {
        self.partitions.values().map(|fold| fold.docs.len()).sum()
    }
}

impl FoldedDoc {
    /// A record at `offset` was read: it is unstored until a snapshot
    /// covering it is.
    fn note_record(&mut self, offset: i64, now: Instant) {
        if self.first_unstored.is_none() {
            self.first_unstored = Some(offset);
            self.unstored = Dirty::new(now, 0);
        }
        self.unstored.touch(now);
        self.last_applied = offset;
    }
}

#[cfg(test)]
mod tests;
