//! Errors of the document layer.

use thiserror::Error;

use crate::bus::BusError;
use crate::store::StoreError;
use crate::update::InvalidUpdate;

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
    /// Reading the document's records back from the bus failed.
    #[error("replay document")]
    Replay(#[source] BusError),
    /// The bus is not subscribed yet (cluster mode: the broker has not
    /// answered); the node is not ready.
    #[error("message bus not connected")]
    NotConnected,
    /// The registry is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
    /// The document was deleted and the peer holds (or builds on) deleted
    /// history; the session must be closed with "document deleted".
    #[error("document deleted")]
    Deleted,
    /// The update or deletion was not made durable.
    #[error("publish")]
    Publish(#[from] PublishError),
}

/// Why an update was not made durable. The submitting session must be
/// closed so its client re-sends the update after reconnecting.
#[derive(Debug, Error, Clone)]
pub enum PublishError {
    /// The log refused the update or did not acknowledge it in time (a
    /// store failure, a broker error).
    #[error("publish update: {0}")]
    Failed(String),
    /// The bus is not connected to its broker (start-up, broker gone).
    #[error("bus not connected")]
    Unavailable,
    /// The committer stopped before the update was committed.
    #[error("committer stopped")]
    Stopped,
}

impl From<BusError> for PublishError {
    fn from(error: BusError) -> Self {
        match error {
            BusError::NotConnected => Self::Unavailable,
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                Self::Failed(text)
            }
        }
    }
}
