//! One document's content as a state machine: apply committed updates and
//! deletions in the order the log gives them, encode the state, refuse what
//! a tombstone names, say when a snapshot is owed.
//!
//! Pure: no sessions, no awareness, no store or bus I/O, no tasks. The live
//! [`Document`](crate::Document) wraps one with its sessions; the
//! persistence worker folds with one alone ([`Replica::fold`]).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, trace, warn};
use weft_protocol::StateVector;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Transact};

use crate::frames::DocName;
use crate::snapshot_policy::Dirty;
use crate::store::{LogSeq, Position, Snapshot, StoredDoc};
use crate::tombstone::{self, TombstoneState};
// Document records are defined with the other forms of an update; the
// live document names them through here.
pub(crate) use crate::update::DocRecord;
use crate::update::{CommittedUpdate, Skipped};
use crate::ycheck::{self, ApplyFailure};

/// What applying one committed update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A tombstone refused it (before the deletion, or built on deleted
    /// history): not applied.
    Refused,
    /// The document held it already: nothing to tell its sessions.
    Known,
    /// News to the document's sessions: it inserted or deleted something,
    /// or it waits for a dependency, or it failed to apply (sent on as it
    /// is, as before).
    News,
}

/// A document's content as a reader (the REST API) sees it.
#[derive(Debug, Clone)]
pub struct ReadState {
    /// The whole document as one Yjs v1 update.
    pub state: Vec<u8>,
    /// Whether the document holds anything (its state vector is not empty).
    pub has_content: bool,
    /// When it was last deleted (ms since the Unix epoch; 0 if unknown), if
    /// it ever was.
    pub deleted_at_ms: Option<i64>,
    /// The highest log position applied: `state` holds every update of
    /// the document up to it (embedded; see [`Replica`]).
    pub covers: LogSeq,
    /// Where its latest deletion sits in the log, if it was ever deleted.
    pub deleted_position: Option<LogSeq>,
}

/// What reading a document again from the log did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RereadOutcome {
    /// The log held updates the document lacked; they were applied.
    pub gained: bool,
    /// The document still holds updates it cannot integrate.
    pub still_missing: bool,
    /// What the pending updates waited for: `(client, clock)` pairs.
    pub waited_for: Vec<(u64, u32)>,
    /// How long they had waited.
    pub waited: Duration,
    /// The log positions of the records that added something.
    pub gained_at: Vec<LogSeq>,
}

/// One document's content and positions.
#[derive(Debug)]
pub struct Replica {
    name: DocName,
    ydoc: Doc,
    /// The highest log position applied. In embedded mode updates are
    /// applied in commit order, so every logged update of this document up
    /// to here is in `ydoc`: a watermark for compaction. (In cluster mode a
    /// node applies its own records on acknowledgement and others' on
    /// consumption, so positions interleave; nodes do not snapshot there.)
    applied: LogSeq,
    /// The partition of the log the positions are in: the loaded
    /// snapshot's (the embedded log's when there was none).
    partition: i32,
    /// The position the stored snapshot covers.
    snapshot_covers: LogSeq,
    /// Size of the stored snapshot's state in bytes (0 without one): the
    /// snapshot rule waits for more updates the larger it is.
    snapshot_bytes: usize,
    /// Changes not yet in a stored snapshot.
    dirty: Option<Dirty>,
    /// The document's latest deletion, if it was ever deleted: clients
    /// holding what it names are refused.
    tombstone: Option<TombstoneState>,
    /// Since when `ydoc` holds updates it cannot integrate (yrs keeps them
    /// pending until what they build on arrives), if it does.
    missing_since: Option<Instant>,
}

impl Replica {
    /// An empty document.
    pub fn new(name: DocName) -> Self {
        Self {
            name,
            ydoc: Doc::new(),
            applied: 0,
            partition: crate::position::EMBEDDED_PARTITION,
            snapshot_covers: 0,
            snapshot_bytes: 0,
            dirty: None,
            tombstone: None,
            missing_since: None,
        }
    }

    /// Applies what the store or log holds (`stored`) and then the records
    /// committed while it was read (`buffered`), in order.
    pub fn load(&mut self, stored: StoredDoc, buffered: Vec<DocRecord>, now: Instant) {
        let mut snapshot_covers = 0;
        let mut records: Vec<DocRecord> =
            Vec::with_capacity(stored.updates.len() + stored.deletions.len() + buffered.len() + 2);
        if let Some(snapshot) = stored.snapshot {
            snapshot_covers = snapshot.covers.offset;
            self.snapshot_bytes = snapshot.state.len();
            self.partition = snapshot.covers.partition;
            if let Some(tombstone) = snapshot.tombstone {
                records.push(DocRecord::Delete {
                    position: tombstone.position,
                    state_vector: tombstone.state_vector,
                    deleted_at_ms: tombstone.deleted_at_ms,
                });
            }
            records.push(DocRecord::Update(CommittedUpdate::from_log(
                snapshot.covers.offset,
                snapshot.state,
            )));
        }
        for deletion in stored.deletions {
            records.push(DocRecord::Delete {
                position: deletion.position,
                state_vector: deletion.state_vector,
                deleted_at_ms: deletion.deleted_at_ms,
            });
        }
        for logged in stored.updates {
            records.push(DocRecord::Update(CommittedUpdate::from_log(
                logged.seq,
                logged.update,
            )));
        }
        records.extend(buffered);
        let positions: Vec<LogSeq> = records.iter().map(DocRecord::position).collect();
        self.tombstone = tombstone::of_records(&mut records);
        let mut applied = snapshot_covers;
        let mut log_updates = 0_u64;
        for record in records {
            let DocRecord::Update(mut update) = record else {
                continue;
            };
            let position = update.position;
            if self.apply_update(&mut update) == Applied::Refused {
                continue;
            }
            if position > applied {
                applied = position;
                log_updates += 1;
            }
        }
        if let Some(tombstone) = &self.tombstone {
            applied = applied.max(tombstone.position);
        }
        self.applied = applied;
        self.snapshot_covers = snapshot_covers;
        self.note_missing(now);
        trace!(doc = %self.name, records = positions.len(), offsets = ?positions, missing = self.missing_since.is_some(), "loaded records applied");
        if applied > snapshot_covers {
            self.dirty = Some(Dirty::new(now, log_updates.max(1)));
        }
    }

    /// Applies a committed update (even one at an earlier position than one
    /// applied already: positions of a cluster node interleave, and Yjs
    /// updates are idempotent and commutative).
    pub fn apply(&mut self, update: &mut CommittedUpdate, now: Instant) -> Applied {
        let applied = self.apply_update(update);
        if applied == Applied::Refused {
            return applied;
        }
        self.applied = self.applied.max(update.position);
        self.note_missing(now);
        if applied == Applied::News {
            Dirty::note_change(&mut self.dirty, now);
        }
        applied
    }

    /// Applies one stored or committed update unless the tombstone refuses
    /// it, logging (not propagating) a failure: the update is durable, and
    /// refusing the whole document because of one bad record would lose
    /// everything else.
    fn apply_update(&mut self, update: &mut CommittedUpdate) -> Applied {
        let position = update.position;
        // Before the deletion in the log (positions of one document are in
        // one partition, so comparable): gone.
        if self
            .tombstone
            .as_ref()
            .is_some_and(|tombstone| position < tombstone.position)
        {
            return Applied::Refused;
        }
        match self.fold(update) {
            Ok(applied) => applied,
            Err(Skipped::DeletedHistory) => {
                info!(doc = %self.name, seq = position, "update builds on deleted history; not applied");
                Applied::Refused
            }
            Err(Skipped::Invalid(error)) => {
                warn!(doc = %self.name, seq = position, error = %error, "stored update does not decode; skipped");
                Applied::News
            }
            Err(Skipped::Failed(ApplyFailure::Panicked)) => {
                error!(doc = %self.name, seq = position, "yrs panicked applying a committed update; skipped");
                Applied::News
            }
            Err(Skipped::Failed(failure)) => {
                warn!(doc = %self.name, seq = position, error = %failure, "update failed to apply; skipped");
                Applied::News
            }
        }
    }

    /// Applies a committed update to the content unless it builds on
    /// deleted history; touches no position and logs nothing, so a caller
    /// that keeps positions of its own (the persistence worker: Kafka
    /// offsets) folds through here and says why in its own words. Bytes
    /// that do not decode are not refused as deleted history: they fail as
    /// [`Skipped::Invalid`].
    pub fn fold(&mut self, update: &mut CommittedUpdate) -> Result<Applied, Skipped> {
        if let Some(tombstone) = &self.tombstone
            && let Ok(decoded) = update.decode()
            && tombstone.refuses_update(decoded)
        {
            return Err(Skipped::DeletedHistory);
        }
        let decoded = update.take_decoded()?;
        let added = ycheck::apply_decoded(&self.ydoc, decoded)?;
        if added || self.ydoc.transact().has_missing_updates() {
            Ok(Applied::News)
        } else {
            Ok(Applied::Known)
        }
    }

    /// Takes a deletion at `position` whose record names
    /// `deleted_state_vector` (v1; its deleter's view): the content is
    /// dropped (the empty document remains) and the tombstone names
    /// everything deleted: the record's state vector, what the document
    /// held, any earlier tombstone.
    pub fn delete(
        &mut self,
        position: LogSeq,
        deleted_state_vector: &[u8],
        deleted_at_ms: i64,
        now: Instant,
    ) {
        let seen = tombstone::decode_state_vector(deleted_state_vector);
        let held = self.deletion_state_vector();
        let state_vector = tombstone::deleted_state_vector([&seen, &held], std::iter::empty());
        self.ydoc = Doc::new();
        self.missing_since = None;
        self.tombstone = Some(TombstoneState {
            state_vector,
            position,
            deleted_at_ms,
        });
        self.applied = self.applied.max(position);
        Dirty::note_change(&mut self.dirty, now);
    }

    /// The document's latest deletion, if it was ever deleted.
    pub fn tombstone(&self) -> Option<&TombstoneState> {
        self.tombstone.as_ref()
    }

    /// Takes the tombstone a stored snapshot carries (its state is applied
    /// as an update, before: it holds nothing the tombstone names).
    pub fn restore_tombstone(&mut self, tombstone: Option<TombstoneState>) {
        self.tombstone = tombstone;
    }

    /// Whether a client with this state vector holds deleted history.
    pub fn refuses_state(&self, client_state: &StateVector) -> bool {
        self.tombstone
            .as_ref()
            .is_some_and(|tombstone| tombstone.refuses_state(client_state))
    }

    /// Whether an update builds on deleted history.
    pub fn refuses_update(&self, update: &yrs::Update) -> bool {
        self.tombstone
            .as_ref()
            .is_some_and(|tombstone| tombstone.refuses_update(update))
    }

    /// Whether the document already holds everything `update` carries
    /// (see `update::held_by`): applying it would change nothing.
    pub fn holds(&self, update: &yrs::Update) -> bool {
        let txn = self.ydoc.transact();
        crate::update::held_by(update, &txn.state_vector(), || txn.snapshot().delete_set)
    }

    /// The document's state vector.
    pub fn state_vector(&self) -> StateVector {
        self.ydoc.transact().state_vector()
    }

    /// What a peer with `state_vector` lacks, as one v1 update.
    pub fn diff(&self, state_vector: &StateVector) -> Vec<u8> {
        self.ydoc.transact().encode_state_as_update_v1(state_vector)
    }

    /// Whether the document holds anything (a non-empty state vector).
    pub fn has_content(&self) -> bool {
        !self.state_vector().is_empty()
    }

    /// The document as a reader sees it.
    pub fn read_state(&self) -> ReadState {
        let txn = self.ydoc.transact();
        ReadState {
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            has_content: !txn.state_vector().is_empty(),
            deleted_at_ms: self
                .tombstone
                .as_ref()
                .map(|tombstone| tombstone.deleted_at_ms),
            covers: self.applied,
            deleted_position: self.tombstone.as_ref().map(|tombstone| tombstone.position),
        }
    }

    /// What a deletion of this document must name: its state vector and
    /// any earlier tombstone's.
    pub fn deletion_state_vector(&self) -> StateVector {
        let state = self.state_vector();
        let earlier = self
            .tombstone
            .as_ref()
            .map(|tombstone| &tombstone.state_vector);
        tombstone::deleted_state_vector(std::iter::once(&state).chain(earlier), std::iter::empty())
    }

    /// Changes not yet covered by a stored snapshot.
    pub fn dirty(&self) -> Option<Dirty> {
        self.dirty
    }

    /// Forgets the changes not yet snapshotted (the document was deleted).
    pub fn clear_dirty(&mut self) {
        self.dirty = None;
    }

    /// The snapshot to store, if anything was applied since the last one.
    pub fn snapshot(&self) -> Option<Snapshot> {
        (self.applied > self.snapshot_covers).then(|| {
            self.snapshot_at(Position {
                partition: self.partition,
                offset: self.applied,
            })
        })
    }

    /// What a snapshot covering `covers` holds: the state, its state
    /// vector, the tombstone.
    pub fn snapshot_at(&self, covers: Position) -> Snapshot {
        let txn = self.ydoc.transact();
        Snapshot {
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            state_vector: txn.state_vector().encode_v1(),
            covers,
            tombstone: self.tombstone.as_ref().map(TombstoneState::to_stored),
        }
    }

    /// Size of the stored snapshot's state in bytes (0 without one).
    pub fn snapshot_bytes(&self) -> usize {
        self.snapshot_bytes
    }

    /// A snapshot covering `covers`, of `bytes` bytes of state, was stored.
    pub fn snapshot_saved(&mut self, covers: LogSeq, bytes: usize) {
        if covers >= self.snapshot_covers {
            self.snapshot_bytes = bytes;
        }
        self.snapshot_covers = self.snapshot_covers.max(covers);
        if self.applied <= self.snapshot_covers {
            self.dirty = None;
        }
    }

    /// Since when the document holds updates it cannot integrate, if it
    /// does.
    pub fn missing_since(&self) -> Option<Instant> {
        self.missing_since
    }

    /// Records whether the document holds updates it cannot integrate.
    fn note_missing(&mut self, now: Instant) {
        let missing = self.ydoc.transact().has_missing_updates();
        match (missing, self.missing_since) {
            (true, None) => self.missing_since = Some(now),
            (false, Some(since)) => {
                self.missing_since = None;
                debug!(doc = %self.name, waited_ms = now.duration_since(since).as_millis() as u64, "updates that waited for their dependencies integrated");
            }
            _ => {}
        }
    }

    /// Applies what a re-read of the log (`stored`, as a load reads it)
    /// holds that the document lacks. Returns what it did and, if the
    /// document changed, the diff to send its sessions.
    pub fn merge_log(
        &mut self,
        stored: StoredDoc,
        now: Instant,
    ) -> (RereadOutcome, Option<Vec<u8>>) {
        let waited = self
            .missing_since
            .map_or(Duration::ZERO, |since| now.duration_since(since));
        let (state_vector_before, missing_before, waited_for) = {
            let txn = self.ydoc.transact();
            let waited_for = txn
                .store()
                .pending_update()
                .map(|pending| {
                    pending
                        .missing
                        .iter()
                        .map(|(client, clock)| (client.get(), *clock))
                        .collect()
                })
                .unwrap_or_default();
            (txn.state_vector(), txn.has_missing_updates(), waited_for)
        };
        let mut records: Vec<CommittedUpdate> = Vec::with_capacity(stored.updates.len() + 1);
        if let Some(snapshot) = stored.snapshot {
            records.push(CommittedUpdate::from_log(
                snapshot.covers.offset,
                snapshot.state,
            ));
        }
        for logged in stored.updates {
            records.push(CommittedUpdate::from_log(logged.seq, logged.update));
        }
        let mut gained_at = Vec::new();
        let mut state_vector = state_vector_before.clone();
        for mut update in records {
            if self.apply_update(&mut update) == Applied::Refused {
                continue;
            }
            self.applied = self.applied.max(update.position);
            let after = self.state_vector();
            if after != state_vector {
                gained_at.push(update.position);
                state_vector = after;
            }
        }
        let (changed, diff, still_missing) = {
            let txn = self.ydoc.transact();
            let still_missing = txn.has_missing_updates();
            let changed =
                txn.state_vector() != state_vector_before || missing_before != still_missing;
            let diff = changed.then(|| txn.encode_state_as_update_v1(&state_vector_before));
            (changed, diff, still_missing)
        };
        self.note_missing(now);
        if changed {
            Dirty::note_change(&mut self.dirty, now);
        }
        let outcome = RereadOutcome {
            gained: changed,
            still_missing,
            waited_for,
            waited,
            gained_at,
        };
        (outcome, diff)
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
