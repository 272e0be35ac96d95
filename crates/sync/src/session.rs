//! What a gateway session holds: its id, its outbox, and a [`Session`]
//! handle that speaks to the document.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug_span;
use weft_protocol::{AwarenessUpdate, Message, StateVector};
use yrs::Update;
use yrs::updates::decoder::Decode;

use crate::bus::RecordKind;
use crate::document::Document;
use crate::registry::RegistryInner;
use crate::{InvalidUpdate, LogSeq, PublishError, SyncError};

/// Identifies one session (one client connection to one document) within
/// this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// Wraps a raw id (the registry allocates them; tests name them).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw id, as published in a record's `origin_session`.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// One encoded frame on its way to a client.
pub type Outbound = Bytes;

/// The sending half a document uses to reach one session.
///
/// The queue is bounded. When a broadcast finds it full, the document trips
/// `overflowed` and stops sending to the session; the gateway then closes
/// the connection, and the client re-syncs when it reconnects. An update is
/// never dropped while the session stays open.
#[derive(Debug, Clone)]
pub struct SessionOutbox {
    /// Frames to write to the socket, in order.
    pub frames: mpsc::Sender<Outbound>,
    /// Cancelled when the session fell behind and must be disconnected.
    pub overflowed: CancellationToken,
    /// Cancelled when the document was deleted: the gateway closes the
    /// session with "document deleted" (the client must drop its copy).
    pub deleted: CancellationToken,
}

/// Resolves once a submitted update is durable and applied.
#[derive(Debug)]
pub struct PendingAck(oneshot::Receiver<Result<LogSeq, PublishError>>);

impl PendingAck {
    pub(crate) fn new(receiver: oneshot::Receiver<Result<LogSeq, PublishError>>) -> Self {
        Self(receiver)
    }

    /// Waits for the update to be committed (or to fail).
    pub async fn wait(self) -> Result<LogSeq, PublishError> {
        self.0.await.unwrap_or(Err(PublishError::Stopped))
    }
}

/// A client's membership in one document. Dropping it leaves the document:
/// the client's awareness states are removed for everyone else, and the
/// document becomes a candidate for unloading once nobody holds it.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    document: Arc<Document>,
    registry: Arc<RegistryInner>,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        document: Arc<Document>,
        registry: Arc<RegistryInner>,
    ) -> Self {
        Self {
            id,
            document,
            registry,
        }
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
    /// document's other sessions.
    pub fn apply_awareness(&self, update: AwarenessUpdate) {
        if let Some(changed) = self.document.apply_awareness(update, self.id.into()) {
            self.registry
                .publish_awareness(&self.document.name_arc(), &changed, self.id);
        }
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
        self.registry
            .publish_stateless(&self.document.name_arc(), payload, self.id);
    }

    /// Submits a client's update (from a SyncStep2 or an Update message).
    ///
    /// Refuses bytes that are not a Yjs update, leaving the document
    /// untouched, and ([`SyncError::Deleted`]) an update that builds on
    /// content of a deleted document. An empty update (what a client sends when it lacks
    /// nothing) needs no commit and yields `None`. Otherwise the returned
    /// [`PendingAck`] resolves once the update is durable, applied, and
    /// broadcast to the other sessions.
    pub async fn submit_update(&self, update: Vec<u8>) -> Result<Option<PendingAck>, SyncError> {
        // Each update is its own trace (a session's would never end), linked
        // to the session's span.
        let span = debug_span!(parent: None, "update", doc = %self.document.name(), bytes = update.len(), session = %self.id);
        span.follows_from(tracing::Span::current());
        let decoded = decode_client_update(&update)?;
        if self.document.refuses_update(&decoded) {
            return Err(SyncError::Deleted);
        }
        if decoded.is_empty() {
            return Ok(None);
        }
        crate::ycheck::trial_apply(&update)
            .map_err(|failure| SyncError::InvalidUpdate(InvalidUpdate::Unappliable(failure)))?;
        let receiver = self
            .registry
            .committer
            .submit(
                self.document.name_arc(),
                RecordKind::Update,
                Bytes::from(update),
                self.id,
                span,
            )
            .await;
        Ok(Some(PendingAck(receiver)))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(removal) = self.document.remove_session(self.id) {
            self.registry
                .publish_awareness(&self.document.name_arc(), &removal, self.id);
        }
    }
}

/// Decodes an update from outside (a client, a service): refused
/// ([`SyncError::InvalidUpdate`]) if its header is implausible or it does
/// not decode.
pub(crate) fn decode_client_update(update: &[u8]) -> Result<Update, SyncError> {
    weft_protocol::check_update_v1(update)
        .map_err(|error| SyncError::InvalidUpdate(error.into()))?;
    Update::decode_v1(update).map_err(|error| SyncError::InvalidUpdate(error.into()))
}

/// Encodes a message as the frame it travels in.
pub(crate) fn frame(message: &Message) -> Outbound {
    Bytes::from(message.encode())
}

/// Encodes an update broadcast.
pub(crate) fn update_frame(update: &[u8]) -> Outbound {
    Bytes::from(weft_protocol::encode_update_frame(update))
}
