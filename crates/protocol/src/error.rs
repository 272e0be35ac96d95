//! Why a frame could not be decoded.

use thiserror::Error;

/// A frame that is not a valid y-websocket message.
///
/// Every variant is the peer's fault; none of them is an internal error.
/// Callers map [`DecodeError::Incomplete`] and the structural variants to a
/// protocol-error close code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ended in the middle of a value (a length prefix larger
    /// than what follows, a cut varint).
    #[error("frame ends before the message does")]
    Incomplete,
    /// A variable-length integer is longer than its type allows.
    #[error("variable-length integer is too long")]
    InvalidVarint,
    /// A sync message whose step is neither 0, 1 nor 2.
    #[error("unknown sync step {0}")]
    UnknownSyncStep(u32),
    /// An auth message whose permission byte is neither denied nor granted.
    #[error("unknown auth permission {0}")]
    UnknownAuthPermission(u32),
    /// A SyncStep1 whose state vector does not decode.
    #[error("state vector does not decode")]
    InvalidStateVector,
    /// An awareness payload that does not decode.
    #[error("awareness update does not decode")]
    InvalidAwareness,
    /// A string that is not UTF-8.
    #[error("string is not valid utf-8")]
    InvalidUtf8,
    /// Bytes after the end of the message: y-websocket sends one message per
    /// WebSocket frame, so trailing bytes mean the frame is not what it seems.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// Maps a `yrs` read error met while reading the framing itself.
    pub(crate) fn from_framing(source: &yrs::encoding::read::Error) -> Self {
        use yrs::encoding::read::{Error as ReadError, MalformedKind};
        match source {
            ReadError::InvalidVarInt => DecodeError::InvalidVarint,
            ReadError::Malformed(MalformedKind::Utf8) => DecodeError::InvalidUtf8,
            // EndOfBuffer, and allocation failures for a length larger than
            // the frame, both mean the frame is shorter than it claims.
            _ => DecodeError::Incomplete,
        }
    }
}
