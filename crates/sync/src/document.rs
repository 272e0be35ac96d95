//! One loaded document: the `yrs` doc every session of it shares.
//!
//! All state sits behind one `parking_lot::Mutex`, never held across an
//! `.await`: applying an update, answering a SyncStep1 and fanning a frame
//! out to the sessions' bounded queues are all short and synchronous.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, debug_span, error, info, trace, warn};
use weft_protocol::{AwarenessUpdate, Message, StateVector, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Transact};

use crate::DocName;
use crate::awareness::{AwarenessTable, Owner};
use crate::session::{Outbound, SessionId, SessionOutbox, frame, update_frame};
use crate::store::{DocStore, LogSeq, Snapshot, StoreError, StoredDoc};
use crate::tombstone::TombstoneState;

/// A committed record that arrived while the document was still loading.
#[derive(Debug)]
struct PendingUpdate {
    seq: LogSeq,
    record: LoadedRecord,
}

/// A record a loading document applies in order.
#[derive(Debug)]
enum LoadedRecord {
    /// A Yjs v1 update (or a snapshot's state).
    Update(Vec<u8>),
    /// A deletion: the deleted state vector (v1) and when (ms, 0 unknown).
    Delete(Vec<u8>, i64),
}

/// Changes not yet covered by a stored snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dirty {
    /// When the first change after the last snapshot was applied.
    pub(crate) since: Instant,
    /// When the latest change was applied.
    pub(crate) last: Instant,
    /// How many updates were applied since the last snapshot.
    pub(crate) updates: u64,
}

/// When a busy document's update broadcasts are batched.
///
/// Sending a frame costs a system call per session, nearly all of it in
/// the kernel's TCP stack, so a document with many readers spends its CPU
/// per frame, not per byte. Like Nagle's algorithm, a document with at
/// least `min_sessions` sessions broadcasts an update at once if its last
/// broadcast was at least `window` ago; otherwise it holds the update and,
/// at the end of the window, sends everything held as one merged update
/// (one frame per session). A lone edit is never delayed; a stream of edits
/// to a big room is delayed by at most `window`, and each reader gets one
/// frame per window instead of one per edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastBatching {
    /// Longest an update is held back; zero turns batching off.
    pub window: Duration,
    /// Documents with fewer sessions always broadcast at once.
    pub min_sessions: usize,
}

impl BroadcastBatching {
    /// No batching: every update is broadcast as it is applied.
    pub const OFF: Self = Self {
        window: Duration::ZERO,
        min_sessions: usize::MAX,
    };

    fn holds(self, sessions: usize, last_broadcast: Option<Instant>, now: Instant) -> bool {
        !self.window.is_zero()
            && sessions >= self.min_sessions
            && last_broadcast.is_some_and(|last| now < last + self.window)
    }
}

impl Default for BroadcastBatching {
    fn default() -> Self {
        Self::OFF
    }
}

/// An applied update whose broadcast is held (see [`BroadcastBatching`]).
#[derive(Debug)]
struct HeldUpdate {
    update: Vec<u8>,
    origin: Option<SessionId>,
}

#[derive(Debug)]
struct DocState {
    ydoc: Doc,
    /// `Some` until the stored content is applied: committed updates that
    /// arrive meanwhile wait here, so none falls between the store read and
    /// the live stream.
    pending: Option<Vec<PendingUpdate>>,
    sessions: HashMap<SessionId, SessionOutbox>,
    /// Sessions whose protocol carries stateless messages (Hocuspocus).
    stateless: std::collections::HashSet<SessionId>,
    awareness: AwarenessTable,
    /// The highest log position applied. In embedded mode updates are
    /// applied in commit order, so every logged update of this document up
    /// to here is in `ydoc`: a watermark for compaction. (In cluster mode a
    /// node applies its own records on acknowledgement and others' on
    /// consumption, so positions interleave; nodes do not snapshot there.)
    applied_seq: LogSeq,
    /// The position the stored snapshot covers.
    snapshot_seq: LogSeq,
    dirty: Option<Dirty>,
    /// When the last session left; `None` while any session is here.
    idle_since: Option<Instant>,
    /// The document's latest deletion, if it was ever deleted: clients
    /// holding what it names are refused.
    tombstone: Option<TombstoneState>,
    /// This instance was deleted and dropped from the registry: its
    /// sessions were told, and nothing more is applied to it.
    deleted: bool,
    /// When an update was last broadcast.
    last_broadcast: Option<Instant>,
    /// Applied updates waiting for the end of the batching window; a flush
    /// is scheduled whenever this is not empty.
    held: Vec<HeldUpdate>,
    /// Since when `ydoc` holds updates it cannot integrate (yrs keeps them
    /// pending until what they build on arrives), if it does.
    missing_since: Option<Instant>,
    /// Reading the document again from the log, to find what they lack.
    reread: Reread,
}

/// When a document that holds updates it cannot integrate is read again
/// from the log.
///
/// A replica applies every record it receives, and yrs keeps an update
/// whose dependencies it lacks pending until they arrive. For a moment that
/// is normal: a node applies its own records on acknowledgement and other
/// nodes' on consumption, so another node's edit of this node's edit can
/// come first. For longer, the replica missed a record that the log holds:
/// nothing else would ever bring it, and every client of this node would
/// lack it too. So after [`MISSING_GRACE`] the document's records are read
/// again (snapshot and log, as when it loads) and, if updates still wait,
/// whatever the records add is applied and broadcast. A document whose missing dependency the log does
/// not hold either (a client sent an update built on something it never
/// sent) is read again at growing intervals, up to [`REREAD_MAX_WAIT`].
#[derive(Debug, Default)]
struct Reread {
    /// A re-read is running.
    running: bool,
    /// No re-read before this (after one that found nothing to integrate).
    not_before: Option<Instant>,
    /// The wait after the next re-read that finds nothing.
    wait: Duration,
}

/// How long a document may hold updates it cannot integrate before it is
/// read again from the log. Well past how long they wait normally (for
/// this node's own acknowledgement, or behind a backlog of deliveries: at
/// most 2.5 s in stress runs on a two-core machine at a load average of
/// 25, 80 ms at the median), short enough that a user does not wait long
/// for a missing edit.
pub(crate) const MISSING_GRACE: Duration = Duration::from_secs(10);
/// The first wait after a re-read that did not resolve them; doubled each
/// time up to [`REREAD_MAX_WAIT`].
const REREAD_FIRST_WAIT: Duration = Duration::from_secs(5);
/// The longest wait between re-reads of one document.
const REREAD_MAX_WAIT: Duration = Duration::from_secs(300);

/// What reading a document again from the log did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RereadOutcome {
    /// The log held updates the document lacked; they were applied and
    /// broadcast to its sessions.
    pub(crate) gained: bool,
    /// The document still holds updates it cannot integrate.
    pub(crate) still_missing: bool,
    /// What the pending updates waited for: `(client, clock)` pairs.
    pub(crate) waited_for: Vec<(u64, u32)>,
    /// How long they had waited.
    pub(crate) waited: Duration,
    /// The log positions of the records that added something.
    pub(crate) gained_at: Vec<LogSeq>,
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
}

/// A loaded document.
#[derive(Debug)]
pub struct Document {
    name: DocName,
    batching: BroadcastBatching,
    state: parking_lot::Mutex<DocState>,
    loaded: OnceCell<()>,
    /// Serialises snapshot writes of this document.
    snapshotting: tokio::sync::Mutex<()>,
}

impl Document {
    pub(crate) fn new(name: DocName, batching: BroadcastBatching) -> Self {
        Self {
            name,
            batching,
            state: parking_lot::Mutex::new(DocState {
                ydoc: Doc::new(),
                pending: Some(Vec::new()),
                sessions: HashMap::new(),
                stateless: std::collections::HashSet::new(),
                awareness: AwarenessTable::default(),
                applied_seq: 0,
                snapshot_seq: 0,
                dirty: None,
                idle_since: Some(Instant::now()),
                tombstone: None,
                deleted: false,
                last_broadcast: None,
                held: Vec::new(),
                missing_since: None,
                reread: Reread::default(),
            }),
            loaded: OnceCell::new(),
            snapshotting: tokio::sync::Mutex::new(()),
        }
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> DocName {
        self.name.clone()
    }

    /// Loads the stored content once; concurrent callers wait for the same
    /// load, and a failed load is retried by the next caller.
    pub(crate) async fn ensure_loaded<E, F>(&self, load: F) -> Result<(), E>
    where
        F: Future<Output = Result<StoredDoc, E>>,
    {
        self.loaded
            .get_or_try_init(|| async {
                let started = Instant::now();
                let stored = load.await?;
                let updates = stored.updates.len();
                self.finish_load(stored);
                debug!(doc = %self.name, updates, elapsed_ms = started.elapsed().as_millis() as u64, "document loaded");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn finish_load(&self, stored: StoredDoc) {
        let mut state = self.state.lock();
        let mut snapshot_seq = 0;
        let mut records: Vec<(LogSeq, LoadedRecord)> =
            Vec::with_capacity(stored.updates.len() + stored.deletions.len() + 2);
        if let Some(snapshot) = stored.snapshot {
            snapshot_seq = snapshot.covers_seq;
            if let Some(tombstone) = snapshot.tombstone {
                records.push((
                    tombstone.position,
                    LoadedRecord::Delete(tombstone.state_vector, tombstone.deleted_at_ms),
                ));
            }
            records.push((snapshot.covers_seq, LoadedRecord::Update(snapshot.state)));
        }
        for deletion in stored.deletions {
            records.push((
                deletion.position,
                LoadedRecord::Delete(deletion.state_vector, deletion.deleted_at_ms),
            ));
        }
        for logged in stored.updates {
            records.push((logged.seq, LoadedRecord::Update(logged.update)));
        }
        for waiting in state.pending.take().unwrap_or_default() {
            records.push((waiting.seq, waiting.record));
        }
        let tombstone = tombstone_of(&records);
        let mut applied_seq = snapshot_seq;
        let mut log_updates = 0_u64;
        for (seq, record) in &records {
            let LoadedRecord::Update(update) = record else {
                continue;
            };
            if let Some(tombstone) = &tombstone
                && (*seq < tombstone.position || refused_by(tombstone, &self.name, *seq, update))
            {
                continue;
            }
            apply_to(&state.ydoc, &self.name, *seq, update);
            if *seq > applied_seq {
                applied_seq = *seq;
                log_updates += 1;
            }
        }
        if let Some(tombstone) = &tombstone {
            applied_seq = applied_seq.max(tombstone.position);
        }
        state.tombstone = tombstone;
        state.applied_seq = applied_seq;
        state.snapshot_seq = snapshot_seq;
        note_missing(&mut state, &self.name, Instant::now());
        trace!(doc = %self.name, records = records.len(), offsets = ?records.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), missing = state.missing_since.is_some(), "loaded records applied");
        if applied_seq > snapshot_seq {
            let now = Instant::now();
            state.dirty = Some(Dirty {
                since: now,
                last: now,
                updates: log_updates.max(1),
            });
        }
    }

    /// Applies a durable update and broadcasts it to every session but its
    /// origin (`None`: an update from another node, for every session).
    ///
    /// Applied even if an update at a later position was applied already:
    /// a node applies its own records on acknowledgement and other nodes'
    /// on consumption, so positions interleave, and Yjs updates are
    /// idempotent and commutative.
    ///
    /// The broadcast may be held for a moment and merged with the next
    /// updates ([`BroadcastBatching`]).
    pub(crate) fn deliver(self: &Arc<Self>, seq: LogSeq, update: &[u8], origin: Option<SessionId>) {
        let mut state = self.state.lock();
        if let Some(pending) = state.pending.as_mut() {
            pending.push(PendingUpdate {
                seq,
                record: LoadedRecord::Update(update.to_vec()),
            });
            return;
        }
        if state.deleted {
            return;
        }
        if let Some(tombstone) = &state.tombstone
            && (seq < tombstone.position || refused_by(tombstone, &self.name, seq, update))
        {
            // Before the deletion in the log (positions of one document
            // are in one partition, so comparable), or built on deleted
            // history: gone.
            return;
        }
        let news = debug_span!("apply", doc = %self.name, seq, bytes = update.len())
            .in_scope(|| apply_to(&state.ydoc, &self.name, seq, update));
        state.applied_seq = state.applied_seq.max(seq);
        let now = Instant::now();
        note_missing(&mut state, &self.name, now);
        trace!(doc = %self.name, seq, own = origin.is_some(), news, missing = state.missing_since.is_some(), "update applied");
        if !news {
            // Held already (this node's own update read back from the log,
            // a record both replayed and delivered): every session has it
            // or got it when the document first did.
            return;
        }
        let dirty = state.dirty.get_or_insert(Dirty {
            since: now,
            last: now,
            updates: 0,
        });
        dirty.last = now;
        dirty.updates += 1;
        if !state.held.is_empty()
            || self
                .batching
                .holds(state.sessions.len(), state.last_broadcast, now)
        {
            if state.held.is_empty() {
                let flush_at = state.last_broadcast.unwrap_or(now) + self.batching.window;
                let document = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(flush_at).await;
                    document.flush_held();
                });
            }
            state.held.push(HeldUpdate {
                update: update.to_vec(),
                origin,
            });
            return;
        }
        state.last_broadcast = Some(now);
        let outbound = update_frame(update);
        debug_span!("broadcast", doc = %self.name, sessions = state.sessions.len())
            .in_scope(|| broadcast(&self.name, &mut state.sessions, &outbound, origin));
    }

    /// Broadcasts the held updates as one merged update: every session gets
    /// all of them but its own.
    fn flush_held(&self) {
        let mut state = self.state.lock();
        let held = std::mem::take(&mut state.held);
        if held.is_empty() || state.deleted {
            return;
        }
        state.last_broadcast = Some(Instant::now());
        let origins: std::collections::HashSet<SessionId> =
            held.iter().filter_map(|held| held.origin).collect();
        let _span =
            debug_span!("broadcast", doc = %self.name, sessions = state.sessions.len(), updates = held.len())
                .entered();
        for frame in merged_frames(&self.name, held.iter()) {
            broadcast_to(&self.name, &mut state.sessions, &frame, None, |id| {
                !origins.contains(id)
            });
        }
        for origin in origins {
            if !state.sessions.contains_key(&origin) {
                continue;
            }
            let others = held.iter().filter(|held| held.origin != Some(origin));
            if others.clone().next().is_none() {
                continue;
            }
            for frame in merged_frames(&self.name, others) {
                broadcast_to(&self.name, &mut state.sessions, &frame, None, |id| {
                    *id == origin
                });
            }
        }
    }

    /// Whether the document has held updates it cannot integrate for
    /// `grace` and may be read again from the log now; if so, the re-read
    /// is the caller's to run (and to finish with [`Document::reread`] or
    /// [`Document::reread_failed`]).
    pub(crate) fn claim_reread(&self, now: Instant, grace: Duration) -> bool {
        let mut state = self.state.lock();
        let due = state.pending.is_none()
            && !state.deleted
            && !state.reread.running
            && state
                .missing_since
                .is_some_and(|since| now.duration_since(since) >= grace)
            && state
                .reread
                .not_before
                .is_none_or(|not_before| now >= not_before);
        if due {
            state.reread.running = true;
        }
        due
    }

    /// Applies what a re-read from the log (`stored`, as a load reads it)
    /// holds that the document lacks, and broadcasts that to every session.
    pub(crate) fn reread(&self, stored: StoredDoc) -> RereadOutcome {
        let mut state = self.state.lock();
        state.reread.running = false;
        let now = Instant::now();
        let waited = state
            .missing_since
            .map_or(Duration::ZERO, |since| now.duration_since(since));
        let mut outcome = RereadOutcome {
            gained: false,
            still_missing: false,
            waited_for: Vec::new(),
            waited,
            gained_at: Vec::new(),
        };
        if state.deleted || state.pending.is_some() || state.missing_since.is_none() {
            // Nothing waits any more: what was missing arrived while the
            // log was read (it was on its way, not missed).
            state.reread = Reread::default();
            return outcome;
        }
        let (state_vector_before, missing_before, waited_for) = {
            let txn = state.ydoc.transact();
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
        let mut records: Vec<(LogSeq, &[u8])> = Vec::with_capacity(stored.updates.len() + 1);
        if let Some(snapshot) = &stored.snapshot {
            records.push((snapshot.covers_seq, &snapshot.state));
        }
        for logged in &stored.updates {
            records.push((logged.seq, &logged.update));
        }
        let mut gained_at = Vec::new();
        let mut state_vector = state_vector_before.clone();
        for (seq, update) in records {
            if let Some(tombstone) = &state.tombstone
                && (seq < tombstone.position || refused_by(tombstone, &self.name, seq, update))
            {
                continue;
            }
            apply_to(&state.ydoc, &self.name, seq, update);
            state.applied_seq = state.applied_seq.max(seq);
            let after = state.ydoc.transact().state_vector();
            if after != state_vector {
                gained_at.push(seq);
                state_vector = after;
            }
        }
        let (changed, diff, still_missing) = {
            let txn = state.ydoc.transact();
            let still_missing = txn.has_missing_updates();
            let changed =
                txn.state_vector() != state_vector_before || missing_before != still_missing;
            let diff = changed.then(|| txn.encode_state_as_update_v1(&state_vector_before));
            (changed, diff, still_missing)
        };
        note_missing(&mut state, &self.name, now);
        if still_missing && !changed {
            let wait = if state.reread.wait.is_zero() {
                REREAD_FIRST_WAIT
            } else {
                (state.reread.wait * 2).min(REREAD_MAX_WAIT)
            };
            state.reread.wait = wait;
            state.reread.not_before = Some(now + wait);
        } else {
            state.reread = Reread::default();
        }
        if let Some(diff) = diff {
            let dirty = state.dirty.get_or_insert(Dirty {
                since: now,
                last: now,
                updates: 0,
            });
            dirty.last = now;
            dirty.updates += 1;
            state.last_broadcast = Some(now);
            broadcast(&self.name, &mut state.sessions, &update_frame(&diff), None);
        }
        outcome.gained = changed;
        outcome.still_missing = still_missing;
        outcome.waited_for = waited_for;
        outcome.gained_at = gained_at;
        outcome
    }

    /// A re-read could not read the log: it is tried again after the
    /// usual wait.
    pub(crate) fn reread_failed(&self) {
        let mut state = self.state.lock();
        state.reread.running = false;
        let wait = state.reread.wait.max(REREAD_FIRST_WAIT);
        state.reread.not_before = Some(Instant::now() + wait);
    }

    /// A durable deletion at `seq`. A loading document keeps it in order
    /// with its other records and stays; a loaded one tells its sessions
    /// (they close with "document deleted"), stops applying anything, and
    /// returns `true`: the registry drops it, and the next join loads the
    /// document afresh (the empty document and its tombstone).
    pub(crate) fn delete(&self, seq: LogSeq, deleted_state_vector: &[u8]) -> bool {
        let mut state = self.state.lock();
        if let Some(pending) = state.pending.as_mut() {
            pending.push(PendingUpdate {
                seq,
                record: LoadedRecord::Delete(deleted_state_vector.to_vec(), crate::unix_millis()),
            });
            return false;
        }
        state.deleted = true;
        // The outboxes stay until each session leaves: dropping them here
        // would end the gateway's writers before the close frame is sent.
        for outbox in state.sessions.values() {
            outbox.deleted.cancel();
        }
        state.dirty = None;
        state.idle_since = Some(Instant::now());
        info!(doc = %self.name, seq, "document deleted; its sessions are closed");
        true
    }

    /// Whether a client with this state vector must be refused: the
    /// document was deleted and the client holds deleted history (or this
    /// instance itself was deleted).
    pub(crate) fn refuses_state(&self, client_state: &StateVector) -> bool {
        let state = self.state.lock();
        state.deleted
            || state
                .tombstone
                .as_ref()
                .is_some_and(|tombstone| tombstone.refuses_state(client_state))
    }

    /// Whether an update must be refused (see [`Document::refuses_state`]).
    pub(crate) fn refuses_update(&self, update: &yrs::Update) -> bool {
        let state = self.state.lock();
        state.deleted
            || state
                .tombstone
                .as_ref()
                .is_some_and(|tombstone| tombstone.refuses_update(update))
    }

    /// The document as a reader sees it.
    pub(crate) fn read_state(&self) -> ReadState {
        let state = self.state.lock();
        let txn = state.ydoc.transact();
        ReadState {
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            has_content: !txn.state_vector().is_empty(),
            deleted_at_ms: state
                .tombstone
                .as_ref()
                .map(|tombstone| tombstone.deleted_at_ms),
        }
    }

    /// What a deletion of this document must name: its state vector and
    /// any earlier tombstone's.
    pub(crate) fn deletion_state_vector(&self) -> StateVector {
        let state = self.state.lock();
        let mut deleted = state.ydoc.transact().state_vector();
        if let Some(tombstone) = &state.tombstone {
            crate::tombstone::merge(&mut deleted, &tombstone.state_vector);
        }
        deleted
    }

    /// Whether the document holds anything (a non-empty state vector).
    pub(crate) fn has_content(&self) -> bool {
        let state = self.state.lock();
        !state.ydoc.transact().state_vector().is_empty()
    }

    /// Whether this instance was deleted (and dropped from the registry).
    pub(crate) fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    pub(crate) fn add_session(&self, id: SessionId, outbox: SessionOutbox) {
        let mut state = self.state.lock();
        state.sessions.insert(id, outbox);
        state.idle_since = None;
    }

    /// Detaches a session and returns the removal of its clients' awareness
    /// states (already broadcast here), for the other nodes.
    pub(crate) fn remove_session(&self, id: SessionId) -> Option<AwarenessUpdate> {
        let mut state = self.state.lock();
        state.sessions.remove(&id);
        state.stateless.remove(&id);
        let removal = state.awareness.remove_session(id);
        if let Some(removal) = &removal {
            let outbound = frame(&Message::Awareness(removal.clone()));
            broadcast(&self.name, &mut state.sessions, &outbound, None);
        }
        if state.sessions.is_empty() {
            state.idle_since = Some(Instant::now());
        }
        removal
    }

    /// Removes the awareness states that incarnations of another node other
    /// than `keep` set (all, for `None`), and tells this node's sessions.
    pub(crate) fn remove_peer(&self, node: &str, keep: Option<u64>) {
        let mut state = self.state.lock();
        if let Some(removal) = state.awareness.remove_peer(node, keep) {
            debug!(doc = %self.name, node, clients = removal.clients.len(), "peer's awareness states removed");
            let outbound = frame(&Message::Awareness(removal));
            broadcast(&self.name, &mut state.sessions, &outbound, None);
        }
    }

    pub(crate) fn sync_step1_frame(&self) -> Outbound {
        let state = self.state.lock();
        let state_vector = state.ydoc.transact().state_vector();
        frame(&Message::Sync(SyncMessage::SyncStep1(state_vector)))
    }

    pub(crate) fn sync_step2_frame(&self, client_state: &StateVector) -> Outbound {
        let state = self.state.lock();
        let diff = state
            .ydoc
            .transact()
            .encode_state_as_update_v1(client_state);
        frame(&Message::Sync(SyncMessage::SyncStep2(diff)))
    }

    pub(crate) fn awareness_frame(&self) -> Option<Outbound> {
        let state = self.state.lock();
        state
            .awareness
            .snapshot()
            .map(|update| frame(&Message::Awareness(update)))
    }

    /// Merges an awareness update and relays what changed to every session
    /// but the one it came from. Returns what changed.
    pub(crate) fn apply_awareness(
        &self,
        update: AwarenessUpdate,
        origin: Owner,
    ) -> Option<AwarenessUpdate> {
        let mut state = self.state.lock();
        let except = match &origin {
            Owner::Session(session) => Some(*session),
            Owner::Peer(_) => None,
        };
        let changed = state.awareness.apply(update, origin)?;
        let outbound = frame(&Message::Awareness(changed.clone()));
        broadcast(&self.name, &mut state.sessions, &outbound, except);
        Some(changed)
    }

    /// Marks a session as one that receives stateless messages.
    pub(crate) fn want_stateless(&self, id: SessionId) {
        self.state.lock().stateless.insert(id);
    }

    /// Sends a stateless message to every session that takes them but
    /// `except`. Never stored.
    pub(crate) fn broadcast_stateless(&self, payload: &str, except: Option<SessionId>) {
        let outbound = Outbound::from(weft_protocol::hocuspocus::encode_stateless_body(payload));
        let mut state = self.state.lock();
        let DocState {
            sessions,
            stateless,
            ..
        } = &mut *state;
        broadcast_to(&self.name, sessions, &outbound, except, |id| {
            stateless.contains(id)
        });
    }

    pub(crate) fn send_to(&self, id: SessionId, outbound: Outbound) -> bool {
        let state = self.state.lock();
        state
            .sessions
            .get(&id)
            .is_some_and(|outbox| outbox.frames.try_send(outbound).is_ok())
    }

    /// Number of sessions attached.
    pub fn session_count(&self) -> usize {
        self.state.lock().sessions.len()
    }

    pub(crate) fn dirty(&self) -> Option<Dirty> {
        self.state.lock().dirty
    }

    pub(crate) fn idle_since(&self) -> Option<Instant> {
        self.state.lock().idle_since
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.initialized()
    }

    /// Writes a snapshot if anything changed since the last one. Returns
    /// whether the document is now fully covered by its stored snapshot.
    /// Writes a snapshot if anything changed since the last; returns its
    /// size in bytes if one was written.
    pub(crate) async fn save_snapshot(
        &self,
        store: &dyn DocStore,
    ) -> Result<Option<usize>, StoreError> {
        let _one_writer = self.snapshotting.lock().await;
        let Some(snapshot) = self.encode_snapshot() else {
            return Ok(None);
        };
        let started = Instant::now();
        let covers_seq = snapshot.covers_seq;
        let bytes = snapshot.state.len();
        let outcome = store.save_snapshot(&self.name, &snapshot).await?;
        let mut state = self.state.lock();
        state.snapshot_seq = state.snapshot_seq.max(covers_seq);
        if state.applied_seq <= state.snapshot_seq {
            state.dirty = None;
        }
        debug!(doc = %self.name, covers_seq, bytes, ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot saved");
        Ok(Some(bytes))
    }

    fn encode_snapshot(&self) -> Option<Snapshot> {
        let state = self.state.lock();
        if state.pending.is_some() || state.applied_seq <= state.snapshot_seq {
            return None;
        }
        let txn = state.ydoc.transact();
        Some(Snapshot {
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            state_vector: txn.state_vector().encode_v1(),
            covers_seq: state.applied_seq,
            tombstone: state.tombstone.as_ref().map(TombstoneState::to_stored),
        })
    }
}

/// Records whether the document holds updates it cannot integrate (see
/// [`Reread`]): since when, if it does.
fn note_missing(state: &mut DocState, name: &str, now: Instant) {
    let missing = state.ydoc.transact().has_missing_updates();
    match (missing, state.missing_since) {
        (true, None) => state.missing_since = Some(now),
        (false, Some(since)) => {
            state.missing_since = None;
            debug!(doc = %name, waited_ms = now.duration_since(since).as_millis() as u64, "updates that waited for their dependencies integrated");
        }
        _ => {}
    }
}

/// The latest deletion among a loading document's records, with a state
/// vector naming everything deleted: every deletion's own, plus whatever
/// the records before the latest one insert (a record this node read only
/// after the deletion was published, from another node).
fn tombstone_of(records: &[(LogSeq, LoadedRecord)]) -> Option<TombstoneState> {
    let (position, deleted_at_ms) = records
        .iter()
        .filter_map(|(seq, record)| match record {
            LoadedRecord::Delete(_, at) => Some((*seq, *at)),
            LoadedRecord::Update(_) => None,
        })
        .max_by_key(|(seq, _)| *seq)?;
    let mut state_vector = StateVector::default();
    for (seq, record) in records {
        match record {
            LoadedRecord::Delete(deleted, _) => {
                crate::tombstone::merge(
                    &mut state_vector,
                    &crate::tombstone::decode_state_vector(deleted),
                );
            }
            LoadedRecord::Update(update) if *seq < position => {
                if weft_protocol::check_update_v1(update).is_ok()
                    && let Ok(decoded) = yrs::Update::decode_v1(update)
                {
                    crate::tombstone::include_update(&mut state_vector, &decoded);
                }
            }
            LoadedRecord::Update(_) => {}
        }
    }
    Some(TombstoneState {
        state_vector,
        position,
        deleted_at_ms,
    })
}

/// Whether a stored or delivered update builds on deleted history (logged:
/// it reached the log, yet no client may see it).
fn refused_by(tombstone: &TombstoneState, name: &str, seq: LogSeq, update: &[u8]) -> bool {
    let refused = tombstone.refuses_update_v1(update);
    if refused {
        info!(doc = %name, seq, "update builds on deleted history; not applied");
    }
    refused
}

/// Applies one stored or committed update, logging (not propagating) a
/// failure: the update is already durable, and refusing the whole document
/// because of one bad record would lose everything else.
///
/// Returns whether the update is news to the document's sessions: it
/// inserted or deleted something, or the document now holds updates it
/// cannot integrate yet (which may be this one: its sessions may hold what
/// it waits for), or it did not apply (sent on as it is, as before).
/// `false` only for an update the document held already.
fn apply_to(ydoc: &Doc, name: &str, seq: LogSeq, update: &[u8]) -> bool {
    if let Err(error) = weft_protocol::check_update_v1(update) {
        warn!(doc = %name, seq, error = %error, "stored update is implausible; skipped");
        return true;
    }
    match crate::ycheck::apply_contained_counting(ydoc, update) {
        Ok(true) => true,
        Ok(false) => ydoc.transact().has_missing_updates(),
        Err(crate::ycheck::ApplyFailure::Panicked) => {
            error!(doc = %name, seq, "yrs panicked applying a committed update; skipped");
            true
        }
        Err(failure) => {
            warn!(doc = %name, seq, error = %failure, "update failed to apply; skipped");
            true
        }
    }
}

/// The frames that carry every update of `held`: one merged update, or
/// (if merging failed, which updates that applied should never make it) each
/// update in its own frame, so nothing is lost either way.
fn merged_frames<'a>(name: &str, held: impl Iterator<Item = &'a HeldUpdate>) -> Vec<Outbound> {
    let updates: Vec<&[u8]> = held.map(|held| held.update.as_slice()).collect();
    if let [only] = updates.as_slice() {
        return vec![update_frame(only)];
    }
    match yrs::merge_updates_v1(&updates) {
        Ok(merged) => vec![update_frame(&merged)],
        Err(failure) => {
            warn!(doc = %name, error = %failure, updates = updates.len(), "merging held updates failed; sending them one by one");
            updates.into_iter().map(update_frame).collect()
        }
    }
}

/// Offers a frame to every session but `except`. A session whose queue is
/// full (or gone) is removed from the document and its overflow token
/// tripped, so the gateway disconnects it: the client re-syncs when it
/// reconnects instead of silently missing this frame.
fn broadcast(
    name: &str,
    sessions: &mut HashMap<SessionId, SessionOutbox>,
    outbound: &Outbound,
    except: Option<SessionId>,
) {
    broadcast_to(name, sessions, outbound, except, |_| true);
}

/// [`broadcast`] to the sessions `wanted` accepts.
fn broadcast_to(
    name: &str,
    sessions: &mut HashMap<SessionId, SessionOutbox>,
    outbound: &Outbound,
    except: Option<SessionId>,
    wanted: impl Fn(&SessionId) -> bool,
) {
    sessions.retain(|id, outbox| {
        if Some(*id) == except || !wanted(id) {
            return true;
        }
        match outbox.frames.try_send(outbound.clone()) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                info!(doc = %name, session = %id, "session send queue full; disconnecting it");
                outbox.overflowed.cancel();
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}
