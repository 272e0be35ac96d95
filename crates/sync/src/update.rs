//! What "an update" is at each step of its path, and the one place its
//! bytes are decoded.
//!
//! - A **client update** ([`ClientUpdate`]): bytes from a client (a
//!   SyncStep2 or Update message) or from a service (the REST API),
//!   checked at the door: a plausible header, it decodes, `yrs` applies it
//!   to a scratch document without panicking. Not durable yet. It carries
//!   its decoded form onward, so nothing after the door decodes it again.
//! - A **submission** (`committer::Submission`): a client update, or a
//!   deletion, queued for group commit with its submitter's
//!   acknowledgement ([`PendingAck`](crate::session::PendingAck)).
//! - A **record** ([`Record`](crate::Record)): what the log carries.
//!   Another node receives it as a [`Delivery`](crate::Delivery); a load
//!   reads it back as a [`Replayed`](crate::Replayed) (from a bus) or a
//!   [`LoggedUpdate`](crate::LoggedUpdate) (from the embedded store, which
//!   appends a [`NewUpdate`](crate::store::NewUpdate)). Those names belong
//!   to the bus and store seams.
//! - A **committed update** ([`CommittedUpdate`]): a durable update with its
//!   log position, on its way into a document: from the committer (decoded
//!   already) or from the log (bytes, decoded once when applied).
//! - A **document record** ([`DocRecord`](crate::DocRecord)): a committed
//!   update or a deletion, in log order, as a loading document applies it
//!   (what a document receives while it loads waits in this form).
//! - A **held update** (`batching::HeldUpdate`): an applied update whose
//!   broadcast waits for the end of a batching window.
//!
//! Decodes per client update: one at the door ([`ClientUpdate::decode`],
//! whose result is applied to the document after the commit) and one by
//! the trial apply ([`ClientUpdate::trial`]: `yrs` consumes what it
//! applies, and the trial must happen before the commit). Both run on the
//! submitting session's task; the committer and the apply decode nothing.
//! (Before, the door, the trial and the apply each decoded the bytes, the
//! apply once more on a document with a tombstone, and the committer once
//! more for an update batched with its document's deletion.)

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use yrs::updates::decoder::Decode;
use yrs::{IdSet, StateVector, Update};

use crate::store::LogSeq;
use crate::ycheck::{self, ApplyFailure};

/// Why a peer's bytes are not an acceptable Yjs update.
#[derive(Debug, Error)]
pub enum InvalidUpdate {
    /// It declares more than its bytes can hold (refused before `yrs`
    /// allocates for it).
    #[error("implausible update header")]
    Implausible(#[from] weft_protocol::DecodeError),
    /// `yrs` could not decode it.
    #[error("yrs could not decode it")]
    Decode(#[from] yrs::encoding::read::Error),
    /// `yrs` panics applying it (to an empty document).
    #[error("yrs cannot apply it")]
    Unappliable(#[source] ApplyFailure),
}

/// Why a committed update was not applied to a document (see
/// [`Replica::fold`](crate::Replica::fold)).
#[derive(Debug, Error)]
pub enum Skipped {
    /// It builds on the document's deleted history (it reached the log,
    /// yet no client may see it).
    #[error("builds on deleted history")]
    DeletedHistory,
    /// Its bytes are not a plausible, decodable update.
    #[error(transparent)]
    Invalid(#[from] InvalidUpdate),
    /// `yrs` refused it or panicked on it.
    #[error(transparent)]
    Failed(#[from] ApplyFailure),
}

/// Decodes a v1 update, refusing an implausible header first. Every decode
/// of an update in this crate goes through here (tests count them).
pub(crate) fn decode_v1(bytes: &[u8]) -> Result<Update, InvalidUpdate> {
    weft_protocol::check_update_v1(bytes)?;
    ycheck::count_decode();
    Ok(Update::decode_v1(bytes)?)
}

/// Whether a document with `state` (its state vector) already holds all
/// of `update`: every block it inserts lies below the state, and every
/// deletion it names is in `deleted` (the document's delete set, built
/// only when the update deletes something: building it walks the
/// document). Yjs's `snapshotContainsUpdate`, which Hocuspocus asks of a
/// read-only client's SyncStep2 before answering it as synced. Skipped
/// ranges carry nothing and count as held.
pub(crate) fn held_by(
    update: &Update,
    state: &StateVector,
    deleted: impl FnOnce() -> IdSet,
) -> bool {
    for (client, ranges) in update.insertions(true).iter() {
        let held_up_to = state.get(client);
        if ranges.iter().any(|range| range.end > held_up_to) {
            return false;
        }
    }
    let deletions = update.delete_set();
    if deletions.is_empty() {
        return true;
    }
    let not_deleted = deletions.diff(&deleted());
    not_deleted
        .iter()
        .all(|(_client, ranges)| ranges.is_empty())
}

/// An update from outside, checked at the door and decoded once.
#[derive(Debug)]
pub struct ClientUpdate {
    bytes: Bytes,
    decoded: Update,
    /// Who sent it (see [`ClientUpdate::with_author`]); `None`: nobody
    /// said, which the log records as unknown.
    author: Option<Arc<str>>,
}

impl ClientUpdate {
    /// Decodes bytes from a client or a service: refused if the header is
    /// implausible or `yrs` cannot decode them.
    pub fn decode(bytes: impl Into<Bytes>) -> Result<Self, InvalidUpdate> {
        let bytes = bytes.into();
        let decoded = decode_v1(&bytes)?;
        Ok(Self {
            bytes,
            decoded,
            author: None,
        })
    }

    /// The same update, attributed to `author` (a token's `sub`, or
    /// [`ANONYMOUS`](crate::store::ANONYMOUS) on an open node): the log
    /// records it with the update.
    #[must_use]
    pub fn with_author(mut self, author: Arc<str>) -> Self {
        self.author = Some(author);
        self
    }

    /// Who sent it, if known.
    pub fn author(&self) -> Option<&Arc<str>> {
        self.author.as_ref()
    }

    /// Whether it inserts and deletes nothing (what a client sends when it
    /// lacks nothing): no commit needed.
    pub fn is_empty(&self) -> bool {
        self.decoded.is_empty()
    }

    /// Applies it to a scratch document to see whether `yrs` panics on it
    /// (see [`ycheck`]). Costs a second decode: `yrs` consumes what it
    /// applies, and this decoded form is kept for the document.
    pub fn trial(&self) -> Result<(), InvalidUpdate> {
        ycheck::trial_apply(&self.bytes).map_err(InvalidUpdate::Unappliable)
    }

    /// The encoded update, as the log stores it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Moves the encoded update out, for the record the committer
    /// publishes (a clone of bytes made from a `Vec` allocates), leaving it
    /// empty until [`ClientUpdate::put_bytes`] returns them.
    pub(crate) fn take_bytes(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    /// Returns the bytes [`ClientUpdate::take_bytes`] took.
    pub(crate) fn put_bytes(&mut self, bytes: Bytes) {
        self.bytes = bytes;
    }

    /// The decoded update.
    pub fn decoded(&self) -> &Update {
        &self.decoded
    }
}

/// A record of one document, in log order: what a loading document
/// applies.
#[derive(Debug)]
pub enum DocRecord {
    /// An update (or a snapshot's state, at the position it covers).
    Update(CommittedUpdate),
    /// A deletion.
    Delete {
        /// Its log position.
        position: LogSeq,
        /// The deleted state vector (v1).
        state_vector: Vec<u8>,
        /// When (ms since the Unix epoch, 0 if unknown).
        deleted_at_ms: i64,
    },
}

impl DocRecord {
    pub(crate) fn position(&self) -> LogSeq {
        match self {
            Self::Update(update) => update.position,
            Self::Delete { position, .. } => *position,
        }
    }
}

/// A durable update with its log position, on its way into a document.
#[derive(Debug)]
pub struct CommittedUpdate {
    /// Its position in the log (embedded: sequence number; Kafka: offset).
    pub position: LogSeq,
    /// The encoded update: what sessions are sent.
    pub bytes: Bytes,
    /// Its decoded form, if the committer had it (a client update of this
    /// node); `None` for one read from the log, decoded when applied.
    decoded: Option<Update>,
}

impl CommittedUpdate {
    /// A client update the log acknowledged at `position`.
    pub fn committed(position: LogSeq, update: ClientUpdate) -> Self {
        Self {
            position,
            bytes: update.bytes,
            decoded: Some(update.decoded),
        }
    }

    /// An update read from the log (another node's, a replay, a load).
    pub fn from_log(position: LogSeq, bytes: impl Into<Bytes>) -> Self {
        Self {
            position,
            bytes: bytes.into(),
            decoded: None,
        }
    }

    /// Its decoded form, decoding it now if it came from the log.
    pub(crate) fn decode(&mut self) -> Result<&Update, InvalidUpdate> {
        let decoded = match self.decoded.take() {
            Some(decoded) => decoded,
            None => decode_v1(&self.bytes)?,
        };
        Ok(self.decoded.insert(decoded))
    }

    /// Its decoded form, if it has one yet (see [`CommittedUpdate::decode`]).
    pub(crate) fn decoded(&self) -> Option<&Update> {
        self.decoded.as_ref()
    }

    /// Takes the decoded form for applying (`yrs` consumes it), decoding it
    /// now if needed.
    pub(crate) fn take_decoded(&mut self) -> Result<Update, InvalidUpdate> {
        match self.decoded.take() {
            Some(decoded) => Ok(decoded),
            None => decode_v1(&self.bytes),
        }
    }
}
