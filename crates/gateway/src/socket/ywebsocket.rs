//! The y-websocket protocol (an upgrade at `/{doc}`): one document per
//! socket, named by the URL, joined before the `101`.

use bytes::Bytes;
use tracing::debug;
use weft_protocol::{AuthMessage, Message, SyncMessage, decode_frame};
use weft_sync::Outbound;

use super::wire::{Addressed, Inbound, Outgoing, Wire};
use crate::auth::Access;
use crate::close::CloseReason;

/// What a read-only client is told right after the greeting.
const READ_ONLY_REASON: &str = "read-only: updates from this session are not applied";

/// The y-websocket codec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct YWebsocket;

impl Wire for YWebsocket {
    const MULTIPLEXED: bool = false;
    const ACKNOWLEDGES: bool = false;
    const NAME: &'static str = "y-websocket";

    fn decode(&self, frame: &[u8]) -> Result<Addressed, CloseReason> {
        let message = decode_frame(frame).map_err(|failure| {
            debug!(error = %failure, bytes = frame.len(), "malformed frame");
            CloseReason::MalformedFrame
        })?;
        Ok(Addressed {
            address: String::new(),
            inbound: inbound_of(message)?,
        })
    }

    fn encode(&self, _address: &str, message: Outgoing<'_>) -> Option<Outbound> {
        let denied = |reason: &str| {
            Bytes::from(Message::Auth(AuthMessage::PermissionDenied(reason.to_owned())).encode())
        };
        match message {
            Outgoing::Document(frame) => Some(frame),
            Outgoing::PermissionDenied(reason) => Some(denied(reason)),
            // The protocol has no scope message: a read-only session is
            // told with the same permission-denied message as at its start.
            Outgoing::Scope(Access::Read) => Some(denied(READ_ONLY_REASON)),
            Outgoing::SyncStatus(_)
            | Outgoing::Detached(_)
            | Outgoing::Pong
            | Outgoing::Scope(Access::ReadWrite) => None,
        }
    }

    fn greeting(&self, address: &str, access: Access, document: Vec<Outbound>) -> Vec<Outbound> {
        let mut frames = document;
        if access == Access::Read {
            frames.extend(self.encode(address, Outgoing::PermissionDenied(READ_ONLY_REASON)));
        }
        frames
    }
}

/// A y-websocket message in the loop's words (shared with the Hocuspocus
/// codec, which carries the same messages behind an address).
pub(crate) fn inbound_of(message: Message) -> Result<Inbound, CloseReason> {
    Ok(match message {
        Message::Sync(SyncMessage::SyncStep1(client_state)) => Inbound::SyncStep1(client_state),
        Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
            Inbound::Update(update)
        }
        Message::Awareness(update) => Inbound::Awareness(update),
        Message::QueryAwareness => Inbound::QueryAwareness,
        Message::Auth(_) => {
            debug!("ignoring auth message from a client");
            Inbound::Ignored
        }
        Message::Unknown { tag, .. } => {
            debug!(tag, "unknown message type");
            return Err(CloseReason::UnknownMessage);
        }
    })
}
