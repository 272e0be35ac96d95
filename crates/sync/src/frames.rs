//! The words every other module shares: document names, session ids, the
//! outbox a session is reached through, and the frames that travel in it.
//!
//! Imports only the outbox queue (`outbox.rs`, a leaf).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::outbox::FrameSender;
use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
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
/// The queue is bounded twice: in frames (the channel's capacity) and in
/// bytes ([`QueuedBytes`]). When a broadcast finds either bound reached,
/// the document trips `overflowed` and stops sending to the session; the
/// gateway then closes the connection, and the client re-syncs when it
/// reconnects. An update is never dropped while the session stays open.
#[derive(Debug, Clone)]
pub struct SessionOutbox {
    /// Frames to write to the socket, in order.
    pub frames: FrameSender,
    /// The bytes queued for the session and not yet written, against the
    /// session's bound. The writer takes a frame's length off once the
    /// frame has left for the kernel.
    pub queued: Arc<QueuedBytes>,
    /// Cancelled when the session fell behind and must be disconnected.
    pub overflowed: CancellationToken,
    /// Cancelled when the document was deleted: the gateway closes the
    /// session with "document deleted" (the client must drop its copy).
    pub deleted: CancellationToken,
    /// Bytes the protocol puts in front of every frame of this document
    /// (a Hocuspocus document address); empty for none. A broadcast builds
    /// the prefixed frame once per distinct prefix and shares it between
    /// the sessions that have that prefix, instead of a copy per session.
    pub prefix: Bytes,
}

impl SessionOutbox {
    /// `frame` as this session's protocol sends it: behind the session's
    /// prefix (a copy), or itself when there is none.
    pub fn framed(&self, frame: &Outbound) -> Outbound {
        prefixed(&self.prefix, frame)
    }

    /// Queues a frame if both bounds allow it, counting its bytes; a frame
    /// refused is not counted.
    pub fn try_queue(&self, frame: Outbound) -> Result<(), TrySendError<Outbound>> {
        let len = frame.len();
        if !self.queued.try_add(len) {
            return Err(TrySendError::Full(frame));
        }
        self.frames.try_send(frame).inspect_err(|_| {
            self.queued.remove(len);
        })
    }
}

/// The bytes one session holds queued, bounded by `--send-queue-bytes`.
///
/// Frames are [`Bytes`] shared by every session of a document, so a frame
/// is charged in full to each session that queues it: the bound is what a
/// stalled session may keep alive on its own, and a frame shared by many
/// stalled sessions counts against each of them (an upper bound of the
/// memory each holds). A frame stays counted until the writer has handed it
/// to the kernel, so it covers the copy in the WebSocket write buffer too.
#[derive(Debug)]
pub struct QueuedBytes {
    queued: AtomicUsize,
    limit: usize,
}

impl QueuedBytes {
    /// A counter bounded by `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            limit,
        })
    }

    /// Counts `len` more bytes, unless the total would pass the bound. A
    /// session with nothing queued takes any one frame, however large: a
    /// frame up to `--max-message-bytes` (larger than the bound) must still
    /// reach a client that keeps up.
    pub fn try_add(&self, len: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let total = queued.saturating_add(len);
                (queued == 0 || total <= self.limit).then_some(total)
            })
            .is_ok()
    }

    /// Counts `len` more bytes whatever the bound: a frame already admitted
    /// that changed size on its way (a Hocuspocus address added in front).
    pub fn add(&self, len: usize) {
        self.queued.fetch_add(len, Ordering::AcqRel);
    }

    /// Takes `len` bytes off: they were written, or never queued.
    pub fn remove(&self, len: usize) {
        let outcome = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(len))
            });
        debug_assert!(
            outcome.is_ok_and(|queued| queued >= len),
            "more bytes written than queued"
        );
    }

    /// The bytes counted now.
    pub fn get(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// `frame` behind `prefix`, in one allocation; `frame` itself (shared, no
/// copy) when the prefix is empty.
pub(crate) fn prefixed(prefix: &Bytes, frame: &Outbound) -> Outbound {
    if prefix.is_empty() {
        return frame.clone();
    }
    let mut joined = Vec::with_capacity(prefix.len() + frame.len());
    joined.extend_from_slice(prefix);
    joined.extend_from_slice(frame);
    Bytes::from(joined)
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
