//! What differs between the two wire protocols, and nothing else: how a
//! client's binary frame decodes into an [`Inbound`] message, and how the
//! server's messages are encoded. The socket loop does
//! the rest the same way for both.

use bytes::Bytes;
use weft_protocol::{AwarenessUpdate, StateVector};
use weft_sync::{Outbound, Registry};

use crate::auth::{Access, Authenticator};
use crate::close::CloseReason;
use crate::live::Revocations;

/// One client message, in the words of the socket loop. `address` names the
/// document it is for: always empty on a y-websocket socket (one document,
/// named by the URL), the Hocuspocus document address otherwise.
#[derive(Debug)]
pub(crate) struct Addressed {
    /// The document the message is for.
    pub(crate) address: String,
    /// The message.
    pub(crate) inbound: Inbound,
}

/// What a client can say, whatever its protocol.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// "Here is my state vector; send me what I lack."
    SyncStep1(StateVector),
    /// An update (a sync Update or a SyncStep2): to commit.
    Update(Vec<u8>),
    /// The client's awareness states.
    Awareness(AwarenessUpdate),
    /// "Send me everyone's awareness."
    QueryAwareness,
    /// A message for the document's other clients, never stored.
    Stateless(String),
    /// The token for the address: join its document (Hocuspocus).
    Token(String),
    /// The client detaches the document (Hocuspocus).
    Leave,
    /// An application-level ping, answered with [`Outgoing::Pong`].
    Ping,
    /// Nothing to do (an application-level pong, an auth message a server
    /// does not take).
    Ignored,
}

/// What joining a document by its token takes (Hocuspocus).
#[derive(Debug, Clone)]
pub(crate) struct Joiner {
    /// The node's documents.
    pub(crate) registry: Registry,
    /// Who may open which document (checked per document).
    pub(crate) auth: Authenticator,
    /// The upgrade's headers and peer, for a permission service.
    pub(crate) context: std::sync::Arc<crate::auth::RequestContext>,
    /// The node's revocations, checked with every token.
    pub(crate) revocations: Revocations,
    /// Forwards documents other nodes own (`--cluster-mode ownership`,
    /// on a socket no node forwarded here).
    pub(crate) forwarder: Option<super::upstream::Forwarder>,
    /// Closes the socket when a document served here moves to another
    /// node (`--cluster-mode ownership`).
    pub(crate) moves: Option<MoveWatch>,
}

/// What tells a Hocuspocus socket its documents' partitions moved.
#[derive(Debug, Clone)]
pub(crate) struct MoveWatch {
    /// Who owns what.
    pub(crate) ownership: crate::cluster::Ownership,
    /// The node's drain token (the partitions' tokens are its children).
    pub(crate) drain: tokio_util::sync::CancellationToken,
}

/// What the server says, whatever the protocol.
#[derive(Debug)]
pub(crate) enum Outgoing<'a> {
    /// A y-websocket frame of the document (sync or awareness).
    Document(Outbound),
    /// Whether the client's update was applied (`true` once durable).
    SyncStatus(bool),
    /// The document could not be opened, with why.
    PermissionDenied(&'a str),
    /// The document was closed for the client (deleted), with why.
    Detached(&'a str),
    /// The answer to [`Inbound::Ping`].
    Pong,
    /// What the client may now do with the document (after a refreshed
    /// token or a revocation changed it).
    Scope(Access),
}

/// A wire protocol: a pure codec, plus whether one socket carries one
/// document (joined before the upgrade) or many (joined by their tokens).
pub(crate) trait Wire: Clone + Send + Sync + 'static {
    /// `true`: many documents over one socket, each joined by its own token
    /// message; a deleted one is detached and the socket stays open.
    /// `false`: one document, joined before the upgrade; its deletion closes
    /// the socket (4410).
    const MULTIPLEXED: bool;

    /// The protocol's name, for logs.
    const NAME: &'static str;

    /// Whether the client is told when its update is durable (Hocuspocus's
    /// sync status). Where it is not (y-websocket), a durable update wakes
    /// nothing on the socket's side: only a failure does (see
    /// `weft_sync::AckWindow`).
    const ACKNOWLEDGES: bool;

    /// What joins documents by their tokens, on a multiplexed protocol.
    fn joiner(&self) -> Option<&Joiner> {
        None
    }

    /// Decodes one binary frame. A frame that is not a message closes with
    /// [`CloseReason::MalformedFrame`], an unknown message type with
    /// [`CloseReason::UnknownMessage`].
    fn decode(&self, frame: &[u8]) -> Result<Addressed, CloseReason>;

    /// Encodes `message` for the document at `address`; `None` when the
    /// protocol has no such message (a y-websocket client gets no sync
    /// status).
    fn encode(&self, address: &str, message: Outgoing<'_>) -> Option<Outbound>;

    /// What goes in front of each of a document's frames at `address`
    /// (the document builds an addressed broadcast frame once and shares
    /// it); empty when frames go as they are.
    fn prefix(&self, _address: &str) -> Bytes {
        Bytes::new()
    }

    /// The first frames of a freshly joined document: the document's own
    /// greeting (its SyncStep1 and awareness) framed for the protocol, and
    /// what the client may do.
    fn greeting(&self, address: &str, access: Access, document: Vec<Outbound>) -> Vec<Outbound>;
}
