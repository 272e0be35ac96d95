//! The y-websocket message: one per WebSocket binary frame.
//!
//! ```text
//! frame    = varuint(tag) payload
//! tag 0    sync:            varuint(step) varbuf(payload)
//!                           step 0 SyncStep1 (state vector), 1 SyncStep2
//!                           (update), 2 Update (update)
//! tag 1    awareness:       varbuf(awareness update)
//! tag 2    auth:            varuint(0) varstring(reason)  permission denied
//!                           varuint(1)                    permission granted
//! tag 3    query-awareness: (empty)
//! other    unknown:         varbuf(payload), kept as Message::Unknown
//! ```
//!
//! Update payloads are kept as opaque bytes: whether they are a valid Yjs
//! update is the document's concern, not the codec's.

use yrs::StateVector;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use crate::DecodeError;

/// Tag of [`Message::Sync`].
pub const MSG_SYNC: u32 = 0;
/// Tag of [`Message::Awareness`].
pub const MSG_AWARENESS: u32 = 1;
/// Tag of [`Message::Auth`].
pub const MSG_AUTH: u32 = 2;
/// Tag of [`Message::QueryAwareness`].
pub const MSG_QUERY_AWARENESS: u32 = 3;

/// Step of [`SyncMessage::SyncStep1`].
pub const MSG_SYNC_STEP_1: u32 = 0;
/// Step of [`SyncMessage::SyncStep2`].
pub const MSG_SYNC_STEP_2: u32 = 1;
/// Step of [`SyncMessage::Update`].
pub const MSG_SYNC_UPDATE: u32 = 2;

/// Permission byte of [`AuthMessage::PermissionDenied`] (y-protocols `auth.js`).
const AUTH_PERMISSION_DENIED: u32 = 0;
/// Permission byte of [`AuthMessage::PermissionGranted`] (as `yrs` writes it).
const AUTH_PERMISSION_GRANTED: u32 = 1;

/// One y-websocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The document sync protocol.
    Sync(SyncMessage),
    /// Presence (cursors, names) of one or more clients.
    Awareness(AwarenessUpdate),
    /// The y-protocols auth message.
    Auth(AuthMessage),
    /// A request for every known awareness state.
    QueryAwareness,
    /// A tag this codec does not know, with its length-prefixed payload, so
    /// a caller can decide what to do with an extension it does not speak.
    Unknown {
        /// The message tag.
        tag: u32,
        /// The payload after the tag, without its length prefix.
        payload: Vec<u8>,
    },
}

/// The three messages of the y-sync protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// "Here is what I have": the sender's state vector.
    SyncStep1(StateVector),
    /// "Here is what you lack": an update answering a SyncStep1.
    SyncStep2(Vec<u8>),
    /// An incremental update.
    Update(Vec<u8>),
}

/// The y-protocols auth message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMessage {
    /// The server refuses the client's request, with a human reason.
    PermissionDenied(String),
    /// The server grants access (no payload).
    PermissionGranted,
}

impl Message {
    /// Encodes the message as one WebSocket binary frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        match self {
            Message::Sync(sync) => {
                buf.write_var(MSG_SYNC);
                sync.encode_into(&mut buf);
            }
            Message::Awareness(update) => {
                buf.write_var(MSG_AWARENESS);
                buf.write_buf(update.encode_v1());
            }
            Message::Auth(AuthMessage::PermissionDenied(reason)) => {
                buf.write_var(MSG_AUTH);
                buf.write_var(AUTH_PERMISSION_DENIED);
                buf.write_string(reason);
            }
            Message::Auth(AuthMessage::PermissionGranted) => {
                buf.write_var(MSG_AUTH);
                buf.write_var(AUTH_PERMISSION_GRANTED);
            }
            Message::QueryAwareness => buf.write_var(MSG_QUERY_AWARENESS),
            Message::Unknown { tag, payload } => {
                buf.write_var(*tag);
                buf.write_buf(payload);
            }
        }
        buf
    }
}

impl SyncMessage {
    fn encode_into(&self, buf: &mut Vec<u8>) {
        match self {
            SyncMessage::SyncStep1(state_vector) => {
                buf.write_var(MSG_SYNC_STEP_1);
                buf.write_buf(state_vector.encode_v1());
            }
            SyncMessage::SyncStep2(update) => {
                buf.write_var(MSG_SYNC_STEP_2);
                buf.write_buf(update);
            }
            SyncMessage::Update(update) => {
                buf.write_var(MSG_SYNC_UPDATE);
                buf.write_buf(update);
            }
        }
    }

    /// Encodes this sync message as a whole frame (`Message::Sync(self)`).
    pub fn encode_frame(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.write_var(MSG_SYNC);
        self.encode_into(&mut buf);
        buf
    }
}

/// Encodes a sync Update frame straight from borrowed update bytes (the
/// broadcast path: one encoding per update, shared by every receiver).
pub fn encode_update_frame(update: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(update.len() + 8);
    buf.write_var(MSG_SYNC);
    buf.write_var(MSG_SYNC_UPDATE);
    buf.write_buf(update);
    buf
}

/// Decodes exactly one message from one WebSocket binary frame.
///
/// Never panics, whatever the input: every length is checked against the
/// frame before anything is allocated for it.
pub fn decode_frame(frame: &[u8]) -> Result<Message, DecodeError> {
    decode_frame_from(frame)
}

/// [`decode_frame`] for callers in this crate that strip an envelope first.
pub(crate) fn decode_frame_from(frame: &[u8]) -> Result<Message, DecodeError> {
    let mut cursor = Cursor::new(frame);
    let message = decode_message(&mut cursor)?;
    let trailing = frame.len() - cursor.next;
    if trailing > 0 {
        return Err(DecodeError::TrailingBytes(trailing));
    }
    Ok(message)
}

fn decode_message(cursor: &mut Cursor<'_>) -> Result<Message, DecodeError> {
    let tag: u32 = read_var(cursor)?;
    match tag {
        MSG_SYNC => Ok(Message::Sync(decode_sync(cursor)?)),
        MSG_AWARENESS => {
            let payload = read_buf(cursor)?;
            check_awareness(payload)?;
            let update =
                AwarenessUpdate::decode_v1(payload).map_err(|_| DecodeError::InvalidAwareness)?;
            Ok(Message::Awareness(update))
        }
        MSG_AUTH => Ok(Message::Auth(decode_auth(cursor)?)),
        MSG_QUERY_AWARENESS => Ok(Message::QueryAwareness),
        tag => {
            let payload = read_buf(cursor)?.to_vec();
            Ok(Message::Unknown { tag, payload })
        }
    }
}

fn decode_sync(cursor: &mut Cursor<'_>) -> Result<SyncMessage, DecodeError> {
    let step: u32 = read_var(cursor)?;
    match step {
        MSG_SYNC_STEP_1 => {
            let payload = read_buf(cursor)?;
            check_state_vector(payload)?;
            let state_vector =
                StateVector::decode_v1(payload).map_err(|_| DecodeError::InvalidStateVector)?;
            Ok(SyncMessage::SyncStep1(state_vector))
        }
        MSG_SYNC_STEP_2 => Ok(SyncMessage::SyncStep2(read_buf(cursor)?.to_vec())),
        MSG_SYNC_UPDATE => Ok(SyncMessage::Update(read_buf(cursor)?.to_vec())),
        step => Err(DecodeError::UnknownSyncStep(step)),
    }
}

fn decode_auth(cursor: &mut Cursor<'_>) -> Result<AuthMessage, DecodeError> {
    let permission: u32 = read_var(cursor)?;
    match permission {
        AUTH_PERMISSION_DENIED => {
            let reason =
                std::str::from_utf8(read_buf(cursor)?).map_err(|_| DecodeError::InvalidUtf8)?;
            Ok(AuthMessage::PermissionDenied(reason.to_owned()))
        }
        AUTH_PERMISSION_GRANTED => Ok(AuthMessage::PermissionGranted),
        other => Err(DecodeError::UnknownAuthPermission(other)),
    }
}

/// Reads a varuint that must fit in a `u32`: at most five bytes, at most
/// `u32::MAX`.
///
/// `yrs`'s own `read_var::<u32>` accepts up to ten bytes and wraps what does
/// not fit, so a tag of 2^32 would read as 0 (sync), and an awareness entry
/// count of 2^32 + 1 would pass [`check_entry_count`] as 1 while `yrs`, which
/// reads that count as a `usize`, tries to reserve room for four billion.
pub(crate) fn read_var(cursor: &mut Cursor<'_>) -> Result<u32, DecodeError> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = cursor
            .read_u8()
            .map_err(|error| DecodeError::from_framing(&error))?;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return u32::try_from(value).map_err(|_| DecodeError::InvalidVarint);
        }
    }
    Err(DecodeError::InvalidVarint)
}

pub(crate) fn read_buf<'a>(cursor: &mut Cursor<'a>) -> Result<&'a [u8], DecodeError> {
    let len = read_var(cursor)? as usize;
    let remaining = cursor.buf.len() - cursor.next;
    if len > remaining {
        return Err(DecodeError::Incomplete);
    }
    let start = cursor.next;
    cursor.next += len;
    Ok(&cursor.buf[start..start + len])
}

/// Checks what `yrs` would otherwise trust in a Yjs v1 update before it
/// decodes it: the leading client count. `yrs` reserves a hash table for
/// that many clients up front, so five bytes declaring 2^28 clients cost
/// half a gigabyte of memory and a quarter second per frame. Each client
/// section takes at least three bytes (block count, client id, clock), so a
/// count above a third of the payload cannot be honest.
///
/// This is a guard, not a validator: the update still has to decode.
pub fn check_update_v1(update: &[u8]) -> Result<(), DecodeError> {
    let mut cursor = Cursor::new(update);
    check_entry_count(&mut cursor, 3)?;
    Ok(())
}

/// Largest client id a Yjs peer can produce (JavaScript's safe integer
/// range). `yrs` asserts ids fit in 53 bits rather than refusing them.
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Walks a v1 state vector before `yrs` decodes it: the entry count must fit
/// in the payload (each entry takes at least two bytes, so a few bytes cannot
/// make the decoder reserve gigabytes) and every client id must be a valid
/// Yjs id.
fn check_state_vector(payload: &[u8]) -> Result<(), DecodeError> {
    let mut cursor = Cursor::new(payload);
    let entries = check_entry_count(&mut cursor, 2).map_err(|_| DecodeError::InvalidStateVector)?;
    for _ in 0..entries {
        let client: u64 = cursor
            .read_var()
            .map_err(|_| DecodeError::InvalidStateVector)?;
        let _clock: u32 = cursor
            .read_var()
            .map_err(|_| DecodeError::InvalidStateVector)?;
        if client > MAX_CLIENT_ID {
            return Err(DecodeError::InvalidStateVector);
        }
    }
    Ok(())
}

/// The same walk, for a v1 state vector read from elsewhere than a frame
/// (a stored tombstone, a delete record).
pub fn check_state_vector_v1(payload: &[u8]) -> Result<(), DecodeError> {
    check_state_vector(payload)
}

/// Like [`check_state_vector`], for an awareness update (entries of client
/// id, clock and a JSON string: at least three bytes each); each state
/// must be valid JSON.
fn check_awareness(payload: &[u8]) -> Result<(), DecodeError> {
    let mut cursor = Cursor::new(payload);
    let entries = check_entry_count(&mut cursor, 3).map_err(|_| DecodeError::InvalidAwareness)?;
    for _ in 0..entries {
        let client: u64 = cursor
            .read_var()
            .map_err(|_| DecodeError::InvalidAwareness)?;
        let _clock: u32 = cursor
            .read_var()
            .map_err(|_| DecodeError::InvalidAwareness)?;
        let json = cursor
            .read_string()
            .map_err(|_| DecodeError::InvalidAwareness)?;
        if client > MAX_CLIENT_ID {
            return Err(DecodeError::InvalidAwareness);
        }
        // Yjs clients `JSON.parse` every relayed state; one invalid state
        // would throw in every other client of the document.
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            return Err(DecodeError::InvalidAwareness);
        }
    }
    if cursor.next != payload.len() {
        return Err(DecodeError::InvalidAwareness);
    }
    Ok(())
}

fn check_entry_count(
    cursor: &mut Cursor<'_>,
    min_entry_bytes: usize,
) -> Result<usize, DecodeError> {
    let entries = read_var(cursor)? as usize;
    let remaining = cursor.buf.len() - cursor.next;
    if entries > remaining / min_entry_bytes {
        return Err(DecodeError::Incomplete);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> (Result<u32, DecodeError>, usize) {
        let mut cursor = Cursor::new(bytes);
        let value = read_var(&mut cursor);
        (value, cursor.next)
    }

    #[test]
    fn read_var_reads_u32_range_and_stops_after_the_last_byte() {
        assert_eq!(read(&[0x00, 0xaa]), (Ok(0), 1));
        assert_eq!(read(&[0x7f]), (Ok(127), 1));
        assert_eq!(read(&[0x80, 0x01, 0xaa]), (Ok(128), 2));
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0xaa]),
            (Ok(u32::MAX), 5)
        );
        // Padding within five bytes, as lib0 accepts.
        assert_eq!(read(&[0x81, 0x80, 0x80, 0x80, 0x00]), (Ok(1), 5));
    }

    #[test]
    fn read_var_refuses_what_does_not_fit_in_u32() {
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0x1f]).0,
            Err(DecodeError::InvalidVarint)
        );
        assert_eq!(
            read(&[0x80, 0x80, 0x80, 0x80, 0x10]).0,
            Err(DecodeError::InvalidVarint)
        );
        assert_eq!(
            read(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).0,
            Err(DecodeError::InvalidVarint)
        );
        assert_eq!(read(&[0xff; 11]).0, Err(DecodeError::InvalidVarint));
    }

    #[test]
    fn read_var_cut_short_is_incomplete() {
        assert_eq!(read(&[]).0, Err(DecodeError::Incomplete));
        assert_eq!(read(&[0x80]).0, Err(DecodeError::Incomplete));
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff]).0,
            Err(DecodeError::Incomplete)
        );
    }
}
