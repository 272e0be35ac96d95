//! One loaded document: its content ([`Replica`]) with the sessions that
//! share it, their awareness states, and broadcasting.
//!
//! All state sits behind one `parking_lot::Mutex`, never held across an
//! `.await`: applying an update, answering a SyncStep1 and fanning a frame
//! out to the sessions' bounded queues are all short and synchronous.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, info, trace};
use weft_protocol::{AwarenessUpdate, StateVector};

use crate::awareness::{AwarenessTable, Owner};
use crate::awareness_tick::{AwarenessTick, TickAction};
use crate::batching::{self, BroadcastBatching, HeldUpdate};
use crate::bus::MessageBus;
use crate::fanout::Sessions;
use crate::frames::{
    DocName, Outbound, SessionId, SessionOutbox, awareness_frame, stateless_frame,
    sync_step1_frame, sync_step2_frame, update_frame,
};
use crate::replica::{Applied, DocRecord, ReadState, Replica, RereadOutcome};
use crate::reread::Reread;
use crate::snapshot_policy::Dirty;
use crate::store::{LogSeq, SnapshotStore, StoreError, StoredDoc};
use crate::update::CommittedUpdate;

mod tick;

#[derive(Debug)]
struct LiveState {
    replica: Replica,
    /// `Some` until the stored content is applied: committed records that
    /// arrive meanwhile wait here, so none falls between the store read and
    /// the live stream.
    pending: Option<Vec<DocRecord>>,
    sessions: Sessions,
    awareness: AwarenessTable,
    /// Awareness changes waiting for their tick ([`crate::awareness_tick`]).
    awareness_tick: AwarenessTick,
    /// When the last session left; `None` while any session is here.
    idle_since: Option<Instant>,
    /// This instance was deleted and dropped from the registry: its
    /// sessions were told, and nothing more is applied to it.
    deleted: bool,
    /// When an update was last broadcast.
    last_broadcast: Option<Instant>,
    /// Applied updates waiting for the end of the batching window; a flush
    /// is scheduled whenever this is not empty.
    held: Vec<HeldUpdate>,
    /// Reading the document again from the log, to find what it lacks.
    reread: Reread,
    /// The whole document as a SyncStep2 frame, encoded for the first
    /// client that asked for all of it since the document last changed and
    /// shared (the same `Bytes`) with every later one: a join storm on a
    /// large document encodes it once, not once per client. Cleared by
    /// anything that changes the content, and when the last session
    /// leaves (an idle document does not keep a second copy of itself).
    full_state: Option<Outbound>,
}

/// A loaded document.
#[derive(Debug)]
pub struct Document {
    name: DocName,
    batching: BroadcastBatching,
    /// Where the end of a broadcast batching window is awaited: the
    /// node's tracker, so a stopping node waits for a held broadcast.
    tasks: TaskTracker,
    /// Where this node's clients' awareness goes to the other nodes, once
    /// per tick.
    bus: Arc<dyn MessageBus>,
    state: parking_lot::Mutex<LiveState>,
    loaded: OnceCell<()>,
    /// Serialises snapshot writes of this document.
    snapshotting: tokio::sync::Mutex<()>,
}

impl Document {
    pub(crate) fn new(
        name: DocName,
        batching: BroadcastBatching,
        tasks: TaskTracker,
        bus: Arc<dyn MessageBus>,
    ) -> Self {
        Self {
            batching,
            tasks,
            bus,
            state: parking_lot::Mutex::new(LiveState {
                replica: Replica::new(name.clone()),
                pending: Some(Vec::new()),
                sessions: Sessions::default(),
                awareness: AwarenessTable::default(),
                awareness_tick: AwarenessTick::default(),
                idle_since: Some(Instant::now()),
                deleted: false,
                last_broadcast: None,
                held: Vec::new(),
                reread: Reread::default(),
                full_state: None,
            }),
            name,
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
                let mut state = self.state.lock();
                let buffered = state.pending.take().unwrap_or_default();
                state.replica.load(stored, buffered, Instant::now());
                state.full_state = None;
                drop(state);
                debug!(doc = %self.name, updates, elapsed_ms = started.elapsed().as_millis() as u64, "document loaded");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Applies a durable update and broadcasts it to every session but its
    /// origin (`None`: an update from another node, for every session).
    ///
    /// Applied even if an update at a later position was applied already
    /// (see [`Replica::apply`]). The broadcast may be held for a moment and
    /// merged with the next updates ([`BroadcastBatching`]).
    pub(crate) fn deliver(
        self: &Arc<Self>,
        mut update: CommittedUpdate,
        origin: Option<SessionId>,
    ) {
        let mut state = self.state.lock();
        if let Some(pending) = state.pending.as_mut() {
            pending.push(DocRecord::Update(update));
            return;
        }
        if state.deleted {
            return;
        }
        let now = Instant::now();
        let seq = update.position;
        // Whatever the outcome, the content may have changed (an update
        // yrs holds back for a missing dependency changes what an encode
        // of the whole state returns too).
        state.full_state = None;
        let applied = debug_span!("apply", doc = %self.name, seq, bytes = update.bytes.len())
            .in_scope(|| state.replica.apply(&mut update, now));
        trace!(doc = %self.name, seq, own = origin.is_some(), ?applied, missing = state.replica.missing_since().is_some(), "update applied");
        if applied != Applied::News {
            // Refused, or held already (this node's own update read back
            // from the log, a record both replayed and delivered): every
            // session has it or got it when the document first did.
            return;
        }
        if !state.held.is_empty()
            || self
                .batching
                .holds(state.sessions.len(), state.last_broadcast, now)
        {
            if state.held.is_empty() {
                let flush_at = state.last_broadcast.unwrap_or(now) + self.batching.window;
                let document = Arc::clone(self);
                self.tasks.spawn(async move {
                    tokio::time::sleep_until(flush_at).await;
                    document.flush_held();
                });
            }
            state.held.push(HeldUpdate {
                update: update.bytes,
                origin,
            });
            return;
        }
        state.last_broadcast = Some(now);
        let outbound = update_frame(&update.bytes);
        debug_span!("broadcast", doc = %self.name, sessions = state.sessions.len())
            .in_scope(|| state.sessions.broadcast(&self.name, &outbound, origin));
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
        let _span =
            debug_span!("broadcast", doc = %self.name, sessions = state.sessions.len(), updates = held.len())
                .entered();
        batching::flush(&self.name, &mut state.sessions, &held);
    }

    /// Whether the document has held updates it cannot integrate for
    /// `grace` and may be read again from the log now; if so, the re-read
    /// is the caller's to run (and to finish with [`Document::reread`] or
    /// [`Document::reread_failed`]).
    pub(crate) fn claim_reread(&self, now: Instant, grace: Duration) -> bool {
        let mut state = self.state.lock();
        if state.pending.is_some() || state.deleted {
            return false;
        }
        let missing_since = state.replica.missing_since();
        state.reread.claim(missing_since, now, grace)
    }

    /// Applies what a re-read from the log (`stored`, as a load reads it)
    /// holds that the document lacks, and broadcasts that to every session.
    pub(crate) fn reread(&self, stored: StoredDoc) -> RereadOutcome {
        let mut state = self.state.lock();
        let now = Instant::now();
        if state.deleted || state.pending.is_some() || state.replica.missing_since().is_none() {
            // Nothing waits any more: what was missing arrived while the
            // log was read (it was on its way, not missed).
            state.reread.finished(false, now);
            return RereadOutcome {
                gained: false,
                still_missing: false,
                waited_for: Vec::new(),
                waited: Duration::ZERO,
                gained_at: Vec::new(),
            };
        }
        let (outcome, diff) = state.replica.merge_log(stored, now);
        state.full_state = None;
        state
            .reread
            .finished(outcome.still_missing && !outcome.gained, now);
        if let Some(diff) = diff {
            state.last_broadcast = Some(now);
            state
                .sessions
                .broadcast(&self.name, &update_frame(&diff), None);
        }
        outcome
    }

    /// A re-read could not read the log: it is tried again after the
    /// usual wait.
    pub(crate) fn reread_failed(&self) {
        self.state.lock().reread.failed(Instant::now());
    }

    /// A durable deletion at `seq`. A loading document keeps it in order
    /// with its other records and stays; a loaded one tells its sessions
    /// (they close with "document deleted"), stops applying anything, and
    /// returns `true`: the registry drops it, and the next join loads the
    /// document afresh (the empty document and its tombstone).
    pub(crate) fn delete(&self, seq: LogSeq, deleted_state_vector: &[u8]) -> bool {
        let mut state = self.state.lock();
        if let Some(pending) = state.pending.as_mut() {
            pending.push(DocRecord::Delete {
                position: seq,
                state_vector: deleted_state_vector.to_vec(),
                deleted_at_ms: crate::clock::unix_millis(),
            });
            return false;
        }
        state.deleted = true;
        state.full_state = None;
        state.sessions.tell_deleted();
        state.replica.clear_dirty();
        state.idle_since = Some(Instant::now());
        info!(doc = %self.name, seq, "document deleted; its sessions are closed");
        true
    }

    /// Whether a client with this state vector must be refused: the
    /// document was deleted and the client holds deleted history (or this
    /// instance itself was deleted).
    pub(crate) fn refuses_state(&self, client_state: &StateVector) -> bool {
        let state = self.state.lock();
        state.deleted || state.replica.refuses_state(client_state)
    }

    /// Whether an update must be refused (see [`Document::refuses_state`]).
    pub(crate) fn refuses_update(&self, update: &yrs::Update) -> bool {
        let state = self.state.lock();
        state.deleted || state.replica.refuses_update(update)
    }

    /// Whether the document already holds all of `update` (see
    /// [`Replica::holds`]).
    pub(crate) fn holds(&self, update: &yrs::Update) -> bool {
        self.state.lock().replica.holds(update)
    }

    /// The document as a reader sees it.
    pub(crate) fn read_state(&self) -> ReadState {
        self.state.lock().replica.read_state()
    }

    /// What a deletion of this document must name: its state vector and
    /// any earlier tombstone's.
    pub(crate) fn deletion_state_vector(&self) -> StateVector {
        self.state.lock().replica.deletion_state_vector()
    }

    /// Whether the document holds anything (a non-empty state vector).
    pub(crate) fn has_content(&self) -> bool {
        self.state.lock().replica.has_content()
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
        state.sessions.remove(id);
        let removal = state.awareness.remove_session(id);
        if let Some(removal) = &removal {
            let outbound = awareness_frame(removal.clone());
            state.sessions.broadcast(&self.name, &outbound, None);
        }
        if state.sessions.is_empty() {
            state.idle_since = Some(Instant::now());
            state.full_state = None;
        }
        removal
    }

    /// Removes the awareness states that incarnations of another node other
    /// than `keep` set (all, for `None`), and tells this node's sessions.
    pub(crate) fn remove_peer(&self, node: &str, keep: Option<u64>) {
        let mut state = self.state.lock();
        if let Some(removal) = state.awareness.remove_peer(node, keep) {
            debug!(doc = %self.name, node, clients = removal.clients.len(), "peer's awareness states removed");
            let outbound = awareness_frame(removal);
            state.sessions.broadcast(&self.name, &outbound, None);
        }
    }

    pub(crate) fn sync_step1_frame(&self) -> Outbound {
        sync_step1_frame(self.state.lock().replica.state_vector())
    }

    /// The SyncStep2 answering a client's SyncStep1: what it lacks. A
    /// client that holds nothing gets the shared frame of the whole
    /// document ([`LiveState::full_state`]), encoded at most once per
    /// version; any other gets its own diff.
    pub(crate) fn sync_step2_frame(&self, client_state: &StateVector) -> Outbound {
        let mut state = self.state.lock();
        if !client_state.is_empty() {
            return sync_step2_frame(state.replica.diff(client_state));
        }
        if let Some(frame) = &state.full_state {
            return frame.clone();
        }
        let frame = sync_step2_frame(state.replica.diff(client_state));
        state.full_state = Some(frame.clone());
        frame
    }

    pub(crate) fn awareness_frame(&self) -> Option<Outbound> {
        self.state.lock().awareness.snapshot().map(awareness_frame)
    }

    /// Merges an awareness update and relays what changed: at once if the
    /// document sent no awareness in the last tick, otherwise with
    /// everything else that changes until the tick ends, as one frame
    /// ([`crate::awareness_tick`]). This node's own clients' changes go to
    /// the other nodes the same way.
    pub(crate) fn apply_awareness(self: &Arc<Self>, update: AwarenessUpdate, origin: Owner) {
        let mut state = self.state.lock();
        let Some(changed) = state.awareness.apply(update, origin) else {
            return;
        };
        let now = Instant::now();
        let sessions = state.sessions.len();
        match state
            .awareness_tick
            .hold(changed.clients.into_keys(), sessions, now)
        {
            TickAction::Wait => {}
            TickAction::FlushAt(at) => {
                let document = Arc::clone(self);
                self.tasks.spawn(async move {
                    tokio::time::sleep_until(at).await;
                    document.flush_awareness();
                });
            }
            TickAction::FlushNow => {
                let local = self.send_awareness_tick(&mut state, now);
                drop(state);
                self.publish_awareness(local);
            }
        }
    }

    /// Marks a session as one that receives stateless messages.
    pub(crate) fn want_stateless(&self, id: SessionId) {
        self.state.lock().sessions.want_stateless(id);
    }

    /// Sends a stateless message to every session that takes them but
    /// `except`. Never stored.
    pub(crate) fn broadcast_stateless(&self, payload: &str, except: Option<SessionId>) {
        let outbound = stateless_frame(payload);
        self.state
            .lock()
            .sessions
            .broadcast_stateless(&self.name, &outbound, except);
    }

    pub(crate) fn send_to(&self, id: SessionId, outbound: Outbound) -> bool {
        self.state.lock().sessions.send_to(id, outbound)
    }

    /// Number of sessions attached.
    pub fn session_count(&self) -> usize {
        self.state.lock().sessions.len()
    }

    pub(crate) fn dirty(&self) -> Option<Dirty> {
        self.state.lock().replica.dirty()
    }

    /// Changes not yet snapshotted, and the stored snapshot's size.
    pub(crate) fn dirty_and_snapshot_bytes(&self) -> (Option<Dirty>, usize) {
        let state = self.state.lock();
        (state.replica.dirty(), state.replica.snapshot_bytes())
    }

    pub(crate) fn idle_since(&self) -> Option<Instant> {
        self.state.lock().idle_since
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.initialized()
    }

    /// Writes a snapshot of the document folded from the log `log` if
    /// anything changed since the last; returns its size in bytes if one
    /// was written.
    pub(crate) async fn save_snapshot(
        &self,
        store: &dyn SnapshotStore,
        log: &str,
    ) -> Result<Option<usize>, StoreError> {
        let _one_writer = self.snapshotting.lock().await;
        let snapshot = {
            let state = self.state.lock();
            if state.pending.is_some() {
                return Ok(None);
            }
            state.replica.snapshot()
        };
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        let started = Instant::now();
        let covers = snapshot.covers.offset;
        let bytes = snapshot.state.len();
        let outcome = store.save_snapshot(log, &self.name, &snapshot).await?;
        self.state.lock().replica.snapshot_saved(covers, bytes);
        debug!(doc = %self.name, covers, bytes, ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot saved");
        Ok(Some(bytes))
    }
}
