//! The Hocuspocus framing: one socket, many documents.
//!
//! ```text
//! frame = varstring(address) varuint(type) payload
//! type 0 sync, 1 awareness, 3 query-awareness: the y-websocket message of
//!        that tag follows the address unchanged
//! type 2 auth:      varuint(0) varstring(token) [varstring(provider version)]
//!                   (server to client: 1 varstring(reason) permission denied,
//!                    2 varstring("read-write" | "readonly") authenticated)
//! type 4 sync reply: a sync message, like type 0 (Hocuspocus servers accept
//!        it from clients as a reply that needs no SyncStep1 back)
//! type 5 stateless: varstring(payload)
//! type 7 close:     varstring(reason), the client detaches this document
//! type 8 sync status (server to client): varuint(1 applied | 0 not)
//! a lone byte 9 / 10: application ping / pong (no address)
//! ```
//!
//! The address is the document name, or `name\0session` for providers that
//! route by session; replies go to the same address.

use yrs::encoding::read::Cursor;
use yrs::encoding::write::Write;

use crate::DecodeError;
use crate::message::{Message, decode_frame_from, read_buf, read_var};

/// Type of an auth message.
pub const HOCUS_AUTH: u32 = 2;
/// Type of a sync reply (a sync message; Weft treats it as type 0).
pub const HOCUS_SYNC_REPLY: u32 = 4;
/// Type of a stateless message.
pub const HOCUS_STATELESS: u32 = 5;
/// Type of a close message.
pub const HOCUS_CLOSE: u32 = 7;
/// Type of a sync-status message.
pub const HOCUS_SYNC_STATUS: u32 = 8;
/// A lone application-level ping byte.
pub const HOCUS_PING: u8 = 9;
/// A lone application-level pong byte.
pub const HOCUS_PONG: u8 = 10;

/// Auth sub-type: a client's token.
const AUTH_TOKEN: u32 = 0;
/// Auth sub-type: permission denied (server to client).
const AUTH_PERMISSION_DENIED: u32 = 1;
/// Auth sub-type: authenticated, with the scope (server to client).
const AUTH_AUTHENTICATED: u32 = 2;

/// What a Hocuspocus client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HocusMessage {
    /// A y-websocket message for the address (sync, awareness,
    /// query-awareness; other tags as `Message::Unknown`).
    Yjs(Message),
    /// The client's token for the address (possibly empty).
    AuthToken(String),
    /// A stateless message for the document's other clients.
    Stateless(String),
    /// The client detaches the document.
    Close,
    /// An application-level ping (answered with a pong) or pong.
    Ping,
    /// An application-level pong.
    Pong,
}

/// Decodes one client frame into its address (empty for ping / pong) and
/// message. Never panics.
pub fn decode_hocus_frame(frame: &[u8]) -> Result<(String, HocusMessage), DecodeError> {
    match frame {
        [HOCUS_PING] => return Ok((String::new(), HocusMessage::Ping)),
        [HOCUS_PONG] => return Ok((String::new(), HocusMessage::Pong)),
        _ => {}
    }
    let mut cursor = Cursor::new(frame);
    let address = read_string(&mut cursor)?;
    let rest_start = cursor.next;
    let kind = read_var(&mut cursor)?;
    let message = match kind {
        HOCUS_AUTH => {
            let sub = read_var(&mut cursor)?;
            if sub != AUTH_TOKEN {
                return Err(DecodeError::UnknownAuthPermission(sub));
            }
            let token = read_string(&mut cursor)?;
            // An optional provider version follows; nothing else may.
            if cursor.next < frame.len() {
                read_string(&mut cursor)?;
            }
            ensure_consumed(frame, &cursor)?;
            HocusMessage::AuthToken(token)
        }
        HOCUS_STATELESS => {
            let payload = read_string(&mut cursor)?;
            ensure_consumed(frame, &cursor)?;
            HocusMessage::Stateless(payload)
        }
        HOCUS_CLOSE => {
            if cursor.next < frame.len() {
                read_string(&mut cursor)?;
            }
            ensure_consumed(frame, &cursor)?;
            HocusMessage::Close
        }
        HOCUS_SYNC_REPLY => {
            // The y-websocket sync tag (0) in front of the same payload.
            let mut sync = Vec::with_capacity(frame.len() - cursor.next + 1);
            sync.push(0);
            sync.extend_from_slice(&frame[cursor.next..]);
            HocusMessage::Yjs(decode_frame_from(&sync)?)
        }
        _ => HocusMessage::Yjs(decode_frame_from(&frame[rest_start..])?),
    };
    Ok((address, message))
}

/// The address alone, as it goes in front of a y-websocket frame: with it,
/// `encode_address(a) + frame == encode_addressed(a, frame)`.
pub fn encode_address(address: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(address.len() + 5);
    buf.write_string(address);
    buf
}

/// A y-websocket frame addressed to a document of a Hocuspocus socket (sync
/// and awareness share their tags and payloads between the protocols).
pub fn encode_addressed(address: &str, yjs_frame: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(address.len() + yjs_frame.len() + 5);
    buf.write_string(address);
    buf.extend_from_slice(yjs_frame);
    buf
}

/// `Authenticated` with the scope the client got.
pub fn encode_authenticated(address: &str, read_only: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(address);
    buf.write_var(HOCUS_AUTH);
    buf.write_var(AUTH_AUTHENTICATED);
    buf.write_string(if read_only { "readonly" } else { "read-write" });
    buf
}

/// `PermissionDenied` with a reason.
pub fn encode_permission_denied(address: &str, reason: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(address);
    buf.write_var(HOCUS_AUTH);
    buf.write_var(AUTH_PERMISSION_DENIED);
    buf.write_string(reason);
    buf
}

/// A sync status: whether the client's update was applied (sent once it is
/// durable).
pub fn encode_sync_status(address: &str, applied: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(address);
    buf.write_var(HOCUS_SYNC_STATUS);
    buf.write_var(u32::from(applied));
    buf
}

/// `CLOSE` for one document: the provider detaches that document (its
/// `close` event carries `reason`); the socket and its other documents
/// stay open.
pub fn encode_close(address: &str, reason: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(address);
    buf.write_var(HOCUS_CLOSE);
    buf.write_string(reason);
    buf
}

/// A stateless message without its address: what a document broadcasts to
/// the Hocuspocus sessions it holds, each of which puts its address in
/// front ([`encode_addressed`]).
pub fn encode_stateless_body(payload: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_var(HOCUS_STATELESS);
    buf.write_string(payload);
    buf
}

/// A stateless message to a client.
pub fn encode_stateless(address: &str, payload: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(address);
    buf.write_var(HOCUS_STATELESS);
    buf.write_string(payload);
    buf
}

fn read_string(cursor: &mut Cursor<'_>) -> Result<String, DecodeError> {
    let bytes = read_buf(cursor)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidUtf8)
}

fn ensure_consumed(frame: &[u8], cursor: &Cursor<'_>) -> Result<(), DecodeError> {
    match frame.len() - cursor.next {
        0 => Ok(()),
        trailing => Err(DecodeError::TrailingBytes(trailing)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MSG_QUERY_AWARENESS, SyncMessage};

    fn auth_frame(address: &str, token: &str, version: Option<&str>) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.write_string(address);
        buf.write_var(HOCUS_AUTH);
        buf.write_var(AUTH_TOKEN);
        buf.write_string(token);
        if let Some(version) = version {
            buf.write_string(version);
        }
        buf
    }

    #[test]
    fn auth_tokens_with_and_without_provider_version() {
        for version in [None, Some("4.8.0")] {
            let (address, message) =
                decode_hocus_frame(&auth_frame("team/doc", "jwt", version)).unwrap();
            assert_eq!(address, "team/doc");
            assert_eq!(message, HocusMessage::AuthToken("jwt".to_owned()));
        }
    }

    #[test]
    fn yjs_messages_follow_the_address_unchanged() {
        let update = Message::Sync(SyncMessage::Update(vec![0, 0]));
        let frame = encode_addressed("d", &update.encode());
        assert_eq!(
            decode_hocus_frame(&frame).unwrap(),
            ("d".to_owned(), HocusMessage::Yjs(update))
        );
        let mut query = Vec::new();
        query.write_string("d");
        query.write_var(MSG_QUERY_AWARENESS);
        assert_eq!(
            decode_hocus_frame(&query).unwrap().1,
            HocusMessage::Yjs(Message::QueryAwareness)
        );
    }

    #[test]
    fn a_sync_reply_is_a_sync_message() {
        let update = Message::Sync(SyncMessage::Update(vec![0, 0]));
        let encoded = update.encode();
        let mut reply = Vec::new();
        reply.write_string("d");
        reply.write_var(HOCUS_SYNC_REPLY);
        reply.extend_from_slice(&encoded[1..]); // the sync payload after tag 0
        assert_eq!(
            decode_hocus_frame(&reply).unwrap(),
            ("d".to_owned(), HocusMessage::Yjs(update))
        );
        let mut truncated = Vec::new();
        truncated.write_string("d");
        truncated.write_var(HOCUS_SYNC_REPLY);
        assert!(decode_hocus_frame(&truncated).is_err());
    }

    #[test]
    fn stateless_close_ping_pong() {
        assert_eq!(
            decode_hocus_frame(&encode_stateless("d", "hi")).unwrap().1,
            HocusMessage::Stateless("hi".to_owned())
        );
        let mut close = Vec::new();
        close.write_string("d");
        close.write_var(HOCUS_CLOSE);
        close.write_string("bye");
        assert_eq!(decode_hocus_frame(&close).unwrap().1, HocusMessage::Close);
        assert_eq!(
            decode_hocus_frame(&[HOCUS_PING]).unwrap().1,
            HocusMessage::Ping
        );
        assert_eq!(
            decode_hocus_frame(&[HOCUS_PONG]).unwrap().1,
            HocusMessage::Pong
        );
    }

    #[test]
    fn malformed_frames_are_refused_not_panicked_on() {
        for frame in [
            &b""[..],
            &[0x05, b'a'][..],
            &[0x01, b'd', 0x02, 0x01, 0x00][..],
            &[0x01, b'd', 0x05, 0x7f][..],
            &[0x01, 0xff, 0x00][..],
        ] {
            assert!(decode_hocus_frame(frame).is_err(), "{frame:?}");
        }
        let mut trailing = auth_frame("d", "t", Some("v"));
        trailing.push(0);
        assert!(decode_hocus_frame(&trailing).is_err());
    }
}
