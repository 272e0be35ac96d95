//! Weft's wire protocol: the y-websocket framing of the Yjs sync, awareness
//! and auth protocols, as a pure codec.
//!
//! This crate knows no sockets, no runtime and no logging. It turns one
//! WebSocket binary message into a [`Message`] and back. Callers do the I/O.
//!
//! The payload types come from `yrs` (`StateVector`, `AwarenessUpdate`), so
//! the bytes we accept are exactly the bytes `yrs` and Yjs produce. Framing
//! is written here rather than taken from `yrs::sync::Message` because that
//! codec writes unknown tags of 128 and above as a raw byte while reading
//! them as a varint, so they do not round-trip, and it cannot tell
//! truncated input from malformed input.
//!
//! # Layout
//!
//! - [`message`]: the [`Message`] enum, its tag constants, [`decode_frame`]
//!   and [`Message::encode`].
//! - [`hocuspocus`]: the Hocuspocus framing (an address per message, many
//!   documents per socket) around the same messages.
//! - [`error`]: [`DecodeError`], which says *why* a frame was refused so the
//!   caller can choose a close code.

pub mod error;
pub mod hocuspocus;
pub mod message;

pub use error::DecodeError;
pub use message::{
    AuthMessage, MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, MSG_SYNC_STEP_1,
    MSG_SYNC_STEP_2, MSG_SYNC_UPDATE, Message, SyncMessage, check_state_vector_v1, check_update_v1,
    decode_frame, encode_update_frame,
};
pub use yrs::StateVector;
pub use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
