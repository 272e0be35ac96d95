//! Refusals as HTTP responses, and WebSocket close codes.
//!
//! A refusal carries a status and a JSON body
//! `{"error":{"code":N,"message":"...","details":"..."}}`. `message` is a
//! short fixed phrase per kind, `details` says what to do about it. Neither
//! ever carries an internal error's text: internal failures are logged once
//! where they are turned into a 5xx.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::config::RETRY_AFTER_SECS;

/// An HTTP refusal.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: &'static str,
    details: String,
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: BodyError<'a>,
}

#[derive(Serialize)]
struct BodyError<'a> {
    code: u16,
    message: &'a str,
    details: &'a str,
}

impl ApiError {
    /// A refusal with the given status.
    pub fn new(status: StatusCode, message: &'static str, details: impl Into<String>) -> Self {
        Self {
            status,
            message,
            details: details.into(),
            retry_after_secs: None,
        }
    }

    /// 400: the request is not something the server can serve.
    pub fn bad_request(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad request", details)
    }

    /// 404: no such route.
    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", details)
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            details,
        )
    }

    /// 413: the request declares a body larger than any route accepts.
    pub fn payload_too_large(details: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request too large", details)
    }

    /// 503 with `Retry-After`: come back later (draining, not ready).
    pub fn unavailable(message: &'static str, details: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            details: details.into(),
            retry_after_secs: Some(RETRY_AFTER_SECS),
        }
    }

    /// 429 with `Retry-After`: this client is over a rate or count limit.
    pub fn too_many_requests(details: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many requests",
            details: details.into(),
            retry_after_secs: Some(retry_after_secs.max(1)),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: BodyError {
                code: self.status.as_u16(),
                message: self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// WebSocket close codes Weft uses (RFC 6455 section 7.4.1 and the IANA
/// registry), in one place so docs and tests can rely on them.
pub mod close_code {
    /// The session ended normally.
    pub const NORMAL: u16 = 1000;
    /// The peer stopped answering heartbeats.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that is not a valid y-websocket message.
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
    /// The close reason sent with [`DOCUMENT_DELETED`], and the reason of the
    /// Hocuspocus `CLOSE` message that detaches one deleted document.
    pub const DOCUMENT_DELETED_REASON: &str = "document deleted";
}

/// Close reasons that metrics count on their own.
pub mod close_reason {
    /// The session's send queue filled (with close code 1013).
    pub const SEND_QUEUE_FULL: &str = "send queue full; reconnect";
    /// More updates per second than allowed (with close code 1008).
    pub const UPDATE_RATE: &str = "update rate exceeded";
}
