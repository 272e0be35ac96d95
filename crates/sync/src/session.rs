//! What a gateway session holds: a [`Session`] handle that speaks to its
//! document and, through the publisher, to the log.

use std::sync::Arc;

use tracing::debug_span;
use weft_protocol::{AwarenessUpdate, StateVector};

use crate::ack::AckWindow;
use crate::document::Document;
use crate::error::SyncError;
pub use crate::frames::{Outbound, SessionId, SessionOutbox};
pub use crate::publisher::PendingAck;
use crate::publisher::Publisher;
use crate::update::ClientUpdate;

/// A client's membership in one document. Dropping it leaves the document:
/// the client's awareness states are removed for everyone else, and the
/// document becomes a candidate for unloading once nobody holds it.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    document: Arc<Document>,
    publisher: Publisher,
    /// Who the session's updates are attributed to (see
    /// [`Session::set_author`]).
    author: Arc<str>,
}

impl Session {
    pub(crate) fn new(id: SessionId, document: Arc<Document>, publisher: Publisher) -> Self {
        Self {
            id,
            document,
            publisher,
            author: Arc::from(crate::store::ANONYMOUS),
        }
    }

    /// Attributes this session's updates to `author` (its token's `sub`);
    /// a session nobody names writes as
    /// [`ANONYMOUS`](crate::store::ANONYMOUS).
    pub fn set_author(&mut self, author: &str) {
        self.author = Arc::from(author);
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The document's name.
    pub fn doc_name(&self) -> &str {
        self.document.name()
    }

    /// What the server sends first: its SyncStep1 and, if anyone is present,
    /// the awareness states.
    pub fn greeting(&self) -> Vec<Outbound> {
        let mut frames = vec![self.document.sync_step1_frame()];
        if let Some(awareness) = self.document.awareness_frame() {
            frames.push(awareness);
        }
        frames
    }

    /// Answers a client's SyncStep1 with the SyncStep2 it lacks, or
    /// refuses ([`SyncError::Deleted`]) a client whose state names content
    /// of a deleted document: it holds history that must not come back.
    pub fn answer_sync_step1(&self, client_state: &StateVector) -> Result<Outbound, SyncError> {
        if self.document.refuses_state(client_state) {
            return Err(SyncError::Deleted);
        }
        Ok(self.document.sync_step2_frame(client_state))
    }

    /// Queues a frame for this session's own client (a reply). Returns
    /// `false` if the outbox is full or gone: the client is not reading and
    /// must be disconnected.
    pub fn send_to_self(&self, frame: Outbound) -> bool {
        self.document.send_to(self.id, frame)
    }

    /// Every present awareness state (the answer to a query-awareness), or
    /// `None` if nobody is present.
    pub fn awareness_frame(&self) -> Option<Outbound> {
        self.document.awareness_frame()
    }

    /// Merges the client's awareness update and relays what changed to the
    /// document's other sessions and the other nodes, coalesced per tick
    /// (see `awareness_tick`).
    pub fn apply_awareness(&self, update: AwarenessUpdate) {
        self.document.apply_awareness(update, self.id.into());
    }

    /// This session takes stateless messages (its protocol carries them).
    pub fn want_stateless(&self) {
        self.document.want_stateless(self.id);
    }

    /// Relays a stateless message to the document's other sessions that
    /// take them, on this node and, through the bus, on the others. Never
    /// stored.
    pub fn relay_stateless(&self, payload: &str) {
        self.document.broadcast_stateless(payload, Some(self.id));
        self.publisher
            .publish_stateless(&self.document.name_arc(), payload, self.id);
    }

    /// Submits a client's update (from a SyncStep2 or an Update message).
    ///
    /// Refuses bytes that are not a Yjs update, leaving the document
    /// untouched, and ([`SyncError::Deleted`]) an update that builds on
    /// content of a deleted document. An empty update (what a client sends
    /// when it lacks nothing) needs no commit and yields `None`. Otherwise
    /// the returned [`PendingAck`] resolves once the update is durable,
    /// applied, and broadcast to the other sessions.
    pub async fn submit_update(&self, update: Vec<u8>) -> Result<Option<PendingAck>, SyncError> {
        // Each update is its own trace (a session's would never end), linked
        // to the session's span.
        let span = debug_span!(parent: None, "update", doc = %self.document.name(), bytes = update.len(), session = %self.id);
        span.follows_from(tracing::Span::current());
        let update = ClientUpdate::decode(update)
            .map_err(SyncError::InvalidUpdate)?
            .with_author(self.author.clone());
        self.publisher
            .submit_update(&self.document, update, self.id, span)
            .await
    }

    /// Whether the document already holds everything in a client's update,
    /// which is not applied (a read-only session's): Hocuspocus answers
    /// such an update as synced, one that brings anything new as not
    /// applied. Refuses bytes that are not a Yjs update, as
    /// [`Session::submit_update`] does.
    pub fn holds_update(&self, update: &[u8]) -> Result<bool, SyncError> {
        let decoded = crate::update::decode_v1(update).map_err(SyncError::InvalidUpdate)?;
        Ok(self.document.holds(&decoded))
    }

    /// As [`Session::submit_update`] for a session that answers its client
    /// nothing: the outcome goes to a place in `window` (waiting for one if
    /// every place is taken), and only a failure wakes the session (see
    /// [`AckWindow`]). Returns whether the update was submitted (`false`:
    /// empty, nothing to commit).
    pub async fn submit_update_to(
        &self,
        update: Vec<u8>,
        window: &Arc<AckWindow>,
    ) -> Result<bool, SyncError> {
        let span = debug_span!(parent: None, "update", doc = %self.document.name(), bytes = update.len(), session = %self.id);
        span.follows_from(tracing::Span::current());
        let update = ClientUpdate::decode(update)
            .map_err(SyncError::InvalidUpdate)?
            .with_author(self.author.clone());
        self.publisher
            .submit_update_to(&self.document, update, self.id, span, window)
            .await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(removal) = self.document.remove_session(self.id) {
            self.publisher
                .publish_awareness(&self.document.name_arc(), &removal, self.id);
        }
    }
}
