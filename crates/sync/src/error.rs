//! Errors of the document layer.

use thiserror::Error;

use crate::StoreError;

/// What can go wrong when a session talks to its document.
#[derive(Debug, Error)]
pub enum SyncError {
    /// The peer sent bytes that are not a Yjs update. The document is
    /// untouched; the session should be closed as a protocol error.
    #[error("update does not decode")]
    InvalidUpdate(#[source] InvalidUpdate),
    /// The document could not be loaded from the store.
    #[error("load document")]
    Load(#[source] StoreError),
    /// The node holds `max_documents` documents; this one would be one more.
    #[error("too many documents loaded")]
    TooManyDocuments,
    /// The registry is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
}

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
    Unappliable(#[source] crate::ycheck::ApplyFailure),
}

/// Why an update was not made durable. The submitting session must be
/// closed so its client re-sends the update after reconnecting.
#[derive(Debug, Error, Clone)]
pub enum PublishError {
    /// The store refused the append.
    #[error("append update to log: {0}")]
    Store(String),
    /// The committer stopped before the update was committed.
    #[error("committer stopped")]
    Stopped,
}
