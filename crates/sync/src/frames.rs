//! The words every other module shares: document names, session ids, the
//! outbox a session is reached through, and the frames that travel in it.
//!
//! A leaf: it imports nothing else of this crate.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weft_protocol::{AwarenessUpdate, Message, StateVector, SyncMessage};

/// A document's name, as the client gave it (URL-decoded).
pub type DocName = Arc<str>;

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

/// Encodes a message as the frame it travels in.
pub(crate) fn frame(message: &Message) -> Outbound {
    Bytes::from(message.encode())
}

/// The frame of an update broadcast.
pub(crate) fn update_frame(update: &[u8]) -> Outbound {
    Bytes::from(weft_protocol::encode_update_frame(update))
}

/// The frame of an awareness change.
pub(crate) fn awareness_frame(update: AwarenessUpdate) -> Outbound {
    frame(&Message::Awareness(update))
}

/// The server's SyncStep1: its state vector.
pub(crate) fn sync_step1_frame(state_vector: StateVector) -> Outbound {
    frame(&Message::Sync(SyncMessage::SyncStep1(state_vector)))
}

/// A SyncStep2: what the client lacks, as one update.
pub(crate) fn sync_step2_frame(diff: Vec<u8>) -> Outbound {
    frame(&Message::Sync(SyncMessage::SyncStep2(diff)))
}

/// The frame of a stateless message (Hocuspocus).
pub(crate) fn stateless_frame(payload: &str) -> Outbound {
    Outbound::from(weft_protocol::hocuspocus::encode_stateless_body(payload))
}
