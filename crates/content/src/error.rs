//! The one error type of the crate: why content could not be read or
//! written. Every variant is the caller's input (a 4xx), except
//! [`ContentError::Panicked`], a defect of the CRDT library (a 5xx).

use weft_sync::InvalidUpdate;

/// Why content could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The stored document did not decode (never expected: it was applied).
    #[error("stored document does not decode: {0}")]
    Stored(#[from] InvalidUpdate),
    /// ProseMirror JSON that is not a document.
    #[error("not a ProseMirror document: {0}")]
    ProseMirror(String),
    /// Content nested deeper than [`crate::tree::MAX_DEPTH`].
    #[error("content is nested more than {0} levels deep")]
    TooDeep(usize),
    /// A root holds another kind of content than the operation writes.
    #[error("root {root} holds {holds}, not {wanted}")]
    WrongShape {
        /// The root's name.
        root: String,
        /// What it holds.
        holds: &'static str,
        /// What the operation writes.
        wanted: &'static str,
    },
    /// A JSON Patch that is not one.
    #[error("JSON Patch: {0}")]
    Patch(String),
    /// A JSON Patch that does not apply to the root's value (a failed
    /// `test`, a missing path).
    #[error("JSON Patch does not apply: {0}")]
    PatchFailed(String),
    /// A stream line's position or length outside the text.
    #[error("{0}")]
    OutOfRange(String),
    /// The CRDT library panicked on this content (caught).
    #[error("the document library failed on this content")]
    Panicked,
}
