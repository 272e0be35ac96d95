//! The Hocuspocus protocol (an upgrade at `/`): many documents over one
//! socket, each behind its own address.
//!
//! Per document, the client's first message is its token (an auth
//! message). The document is then joined and answered with
//! `Authenticated` (scope `read-write` or `readonly`), or refused with
//! `PermissionDenied` while the socket and its other documents stay open.
//! Messages for an address that is not authenticated are ignored.
//!
//! A client may send a document's token again at any time (the provider's
//! `sendToken()`): it is verified and applied to the session in band, and
//! answered with `Authenticated` and the new scope, or with
//! `PermissionDenied` and the document detached (see `documents.rs`).
//!
//! A client's update is acknowledged with a sync status of 1 only once it
//! is durable (group commit, or the broker's `acks=all`). A read-only
//! scope's update is never applied: answered 1 if the document already
//! holds all of it (as Hocuspocus answers a read-only SyncStep2, so the
//! provider's unsynced count returns to 0 after joining), else 0.

use bytes::Bytes;
use tracing::debug;
use weft_protocol::hocuspocus::{
    HOCUS_PONG, HocusMessage, decode_hocus_frame, encode_address, encode_addressed,
    encode_authenticated, encode_close, encode_permission_denied, encode_sync_status,
};
use weft_sync::Outbound;

use super::wire::{Addressed, Inbound, Joiner, Outgoing, Wire};
use super::ywebsocket::inbound_of;
use crate::auth::Access;
use crate::close::CloseReason;

/// The Hocuspocus codec, and what joining a document by its token takes.
#[derive(Debug, Clone)]
pub(crate) struct Hocuspocus {
    /// Joins documents as their tokens arrive.
    pub(crate) joiner: Joiner,
}

impl Wire for Hocuspocus {
    const MULTIPLEXED: bool = true;
    const ACKNOWLEDGES: bool = true;
    const NAME: &'static str = "hocuspocus";

    fn joiner(&self) -> Option<&Joiner> {
        Some(&self.joiner)
    }

    fn decode(&self, frame: &[u8]) -> Result<Addressed, CloseReason> {
        let (address, message) = decode_hocus_frame(frame).map_err(|failure| {
            debug!(error = %failure, bytes = frame.len(), "malformed hocuspocus frame");
            CloseReason::MalformedFrame
        })?;
        let inbound = match message {
            HocusMessage::Yjs(message) => inbound_of(message)?,
            HocusMessage::AuthToken(token) => Inbound::Token(token),
            HocusMessage::Stateless(payload) => Inbound::Stateless(payload),
            HocusMessage::Close => Inbound::Leave,
            HocusMessage::Ping => Inbound::Ping,
            HocusMessage::Pong => Inbound::Ignored,
        };
        Ok(Addressed { address, inbound })
    }

    fn encode(&self, address: &str, message: Outgoing<'_>) -> Option<Outbound> {
        let frame = match message {
            Outgoing::Document(frame) => encode_addressed(address, &frame),
            Outgoing::SyncStatus(applied) => encode_sync_status(address, applied),
            Outgoing::PermissionDenied(reason) => encode_permission_denied(address, reason),
            Outgoing::Detached(reason) => encode_close(address, reason),
            Outgoing::Pong => vec![HOCUS_PONG],
            Outgoing::Scope(access) => encode_authenticated(address, access == Access::Read),
        };
        Some(Bytes::from(frame))
    }

    fn prefix(&self, address: &str) -> Bytes {
        Bytes::from(encode_address(address))
    }

    fn greeting(&self, address: &str, access: Access, document: Vec<Outbound>) -> Vec<Outbound> {
        let mut frames = Vec::with_capacity(document.len() + 1);
        frames.push(Bytes::from(encode_authenticated(
            address,
            access == Access::Read,
        )));
        for frame in document {
            frames.push(Bytes::from(encode_addressed(address, &frame)));
        }
        frames
    }
}
