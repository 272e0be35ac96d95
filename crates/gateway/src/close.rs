//! Why a socket closes: one [`CloseReason`] per way a session ends, with
//! its close code, the reason text sent in the close frame, and the metric
//! that counts it.
//!
//! This is a leaf module: the socket loop, the metrics and the error
//! mapping all take their close codes from here, and it imports none of
//! them.

/// WebSocket close codes Weft uses (RFC 6455 section 7.4.1 and the IANA
/// registry), in one place so docs and tests can rely on them.
pub mod close_code {
    /// The session ended normally.
    pub const NORMAL: u16 = 1000;
    /// The peer stopped answering heartbeats, or sent nothing for too long.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that is not a valid message of the socket's protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame, or a message type this endpoint does not speak.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// An update that is not a valid Yjs update.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The session broke a policy: more updates per second than allowed.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message larger than `--max-message-bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server could not make an update durable; reconnect and re-sync.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is restarting; reconnect (to another node).
    pub const SERVICE_RESTART: u16 = 1012;
    /// The client fell behind (its send queue filled); reconnect and re-sync.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The document was deleted (REST API), or the client holds history of
    /// a deleted document: drop the local copy (a fresh `Y.Doc` may start
    /// the name again). In the private-use range 4000-4999 (RFC 6455), after
    /// HTTP 410 Gone.
    pub const DOCUMENT_DELETED: u16 = 4410;
    /// The session's token expired (`exp` plus the leeway passed): reconnect
    /// with a fresh token. After HTTP 401, as Hocuspocus's `Unauthorized`.
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// A revocation, or a refreshed token, took the session's access away.
    /// After HTTP 403, as Hocuspocus's `Forbidden`.
    pub const ACCESS_REVOKED: u16 = 4403;
    /// The close reason sent with [`DOCUMENT_DELETED`], and the reason of the
    /// Hocuspocus `CLOSE` message that detaches one deleted document.
    pub const DOCUMENT_DELETED_REASON: &str = "document deleted";
}

/// Why the server closed a socket. Each variant has exactly one close code
/// ([`CloseReason::code`]), one short reason for the client
/// ([`CloseReason::reason`], at most 123 bytes on the wire) and one place in
/// the metrics ([`CloseReason::counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent no frame (not even a pong) for `--heartbeat-timeout`.
    HeartbeatTimeout,
    /// The client sent no message for `--idle-timeout` (pongs do not count).
    IdleTimeout,
    /// The socket failed while the server wrote to it.
    ConnectionLost,
    /// A frame that does not decode in the socket's protocol.
    MalformedFrame,
    /// A WebSocket protocol violation below the application protocol.
    WebSocketProtocol,
    /// A text frame: both protocols are binary.
    TextFrame,
    /// A message type the protocol does not have.
    UnknownMessage,
    /// An update that is not a Yjs update.
    InvalidUpdate,
    /// More updates per second than `--max-updates-per-second`.
    UpdateRate,
    /// A message larger than `--max-message-bytes`.
    MessageTooBig,
    /// The log refused an update or did not acknowledge it in time.
    UpdateNotStored,
    /// The node drains, or the committer stopped.
    ServerRestarting,
    /// The session's send queue filled.
    SendQueueFull,
    /// The log's bus is not connected.
    LogUnavailable,
    /// A document could not be joined (loaded) for this socket.
    DocumentUnavailable,
    /// The document was deleted, or the client holds its deleted history.
    DocumentDeleted,
    /// The token of one of the socket's sessions expired.
    TokenExpired,
    /// A revocation or a refreshed token took a session's access away.
    AccessRevoked,
}

/// The counter, besides the per-code one, that a close increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCounter {
    /// `weft_send_queue_overflows_total`.
    SendQueueOverflow,
    /// `weft_rate_limit_closes_total`.
    RateLimit,
}

impl CloseReason {
    /// The close code sent (the `code` label of `weft_session_closes_total`).
    pub const fn code(self) -> u16 {
        use close_code::*;
        match self {
            Self::HeartbeatTimeout | Self::IdleTimeout | Self::ConnectionLost => GOING_AWAY,
            Self::MalformedFrame | Self::WebSocketProtocol => PROTOCOL_ERROR,
            Self::TextFrame | Self::UnknownMessage => UNSUPPORTED_DATA,
            Self::InvalidUpdate => INVALID_PAYLOAD,
            Self::UpdateRate => POLICY_VIOLATION,
            Self::MessageTooBig => MESSAGE_TOO_BIG,
            Self::UpdateNotStored => INTERNAL_ERROR,
            Self::ServerRestarting => SERVICE_RESTART,
            Self::SendQueueFull | Self::LogUnavailable | Self::DocumentUnavailable => {
                TRY_AGAIN_LATER
            }
            Self::DocumentDeleted => DOCUMENT_DELETED,
            Self::TokenExpired => TOKEN_EXPIRED,
            Self::AccessRevoked => ACCESS_REVOKED,
        }
    }

    /// The reason text of the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::IdleTimeout => "idle timeout",
            Self::ConnectionLost => "connection lost",
            Self::MalformedFrame => "malformed message",
            Self::WebSocketProtocol => "websocket protocol error",
            Self::TextFrame => "text frames are not part of the protocol",
            Self::UnknownMessage => "unknown message type",
            Self::InvalidUpdate => "invalid update",
            Self::UpdateRate => "update rate exceeded",
            Self::MessageTooBig => "message too big",
            Self::UpdateNotStored => "update could not be stored",
            Self::ServerRestarting => "server restarting",
            Self::SendQueueFull => "send queue full; reconnect",
            Self::LogUnavailable => "update log unavailable; reconnect",
            Self::DocumentUnavailable => "document unavailable; retry",
            Self::DocumentDeleted => close_code::DOCUMENT_DELETED_REASON,
            Self::TokenExpired => "token expired",
            Self::AccessRevoked => "access revoked",
        }
    }

    /// The dedicated counter this close increments, if any.
    pub const fn counter(self) -> Option<CloseCounter> {
        match self {
            Self::SendQueueFull => Some(CloseCounter::SendQueueOverflow),
            Self::UpdateRate => Some(CloseCounter::RateLimit),
            _ => None,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_a_close_frame_and_counters_follow_the_reason() {
        let all = [
            CloseReason::HeartbeatTimeout,
            CloseReason::IdleTimeout,
            CloseReason::ConnectionLost,
            CloseReason::MalformedFrame,
            CloseReason::WebSocketProtocol,
            CloseReason::TextFrame,
            CloseReason::UnknownMessage,
            CloseReason::InvalidUpdate,
            CloseReason::UpdateRate,
            CloseReason::MessageTooBig,
            CloseReason::UpdateNotStored,
            CloseReason::ServerRestarting,
            CloseReason::SendQueueFull,
            CloseReason::LogUnavailable,
            CloseReason::DocumentUnavailable,
            CloseReason::DocumentDeleted,
            CloseReason::TokenExpired,
            CloseReason::AccessRevoked,
        ];
        for reason in all {
            assert!(reason.reason().len() <= 123, "{reason}");
            assert_ne!(reason.code(), close_code::NORMAL);
        }
        assert_eq!(CloseReason::SendQueueFull.code(), 1013);
        assert_eq!(
            CloseReason::SendQueueFull.counter(),
            Some(CloseCounter::SendQueueOverflow)
        );
        assert_eq!(CloseReason::UpdateRate.code(), 1008);
        assert_eq!(
            CloseReason::UpdateRate.counter(),
            Some(CloseCounter::RateLimit)
        );
        assert_eq!(CloseReason::DocumentDeleted.code(), 4410);
        assert_eq!(CloseReason::MessageTooBig.code(), 1009);
        assert_eq!(CloseReason::TokenExpired.code(), 4401);
        assert_eq!(CloseReason::TokenExpired.reason(), "token expired");
        assert_eq!(CloseReason::AccessRevoked.code(), 4403);
    }
}
