//! Refusals as HTTP responses, and the one mapping from a failure to its
//! answer on every surface.
//!
//! A refusal carries a status and a JSON body
//! `{"error":{"code":N,"message":"...","details":"..."}}`. `message` is a
//! short fixed phrase per kind, `details` says what to do about it. Neither
//! ever carries an internal error's text: internal failures are logged once
//! where they are turned into a 5xx.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use weft_sync::{PublishError, SyncError};

use crate::auth::AuthError;
use crate::close::CloseReason;
pub use crate::close::close_code;
use crate::config::RETRY_AFTER_SECS;
use crate::limits::Refusal;

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
    pub(crate) fn method_not_allowed(details: impl Into<String>) -> Self {
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

/// 405 with the JSON body and the `Allow` header.
pub(crate) fn method_not_allowed(allowed: &'static str, details: &'static str) -> Response {
    let mut response = ApiError::method_not_allowed(details).into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// How a failure of the document layer is answered, decided once for every
/// surface: the HTTP refusal (REST API, upgrades), the close of a socket
/// (whose metric label is its code), and whether it is the server's fault
/// (logged at ERROR once, by the caller, with its cause) or not.
#[derive(Debug, Clone)]
pub(crate) struct FailureAnswer {
    /// The refusal of an HTTP request.
    pub(crate) refusal: ApiError,
    /// The close of a socket.
    pub(crate) close: CloseReason,
    /// An internal failure: the client sees only a generic 5xx.
    pub(crate) internal: bool,
}

impl FailureAnswer {
    const fn client(refusal: ApiError, close: CloseReason) -> Self {
        Self {
            refusal,
            close,
            internal: false,
        }
    }

    /// The answer to a failure of the document layer.
    pub(crate) fn sync(failure: &SyncError) -> Self {
        match failure {
            SyncError::InvalidUpdate(_) => Self::client(
                ApiError::bad_request("the body is not a Yjs v1 update that can be applied"),
                CloseReason::InvalidUpdate,
            ),
            SyncError::Deleted => Self::client(
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "the update builds on the history of a deleted document",
                ),
                CloseReason::DocumentDeleted,
            ),
            SyncError::ShuttingDown => Self::client(draining(), CloseReason::ServerRestarting),
            SyncError::NotConnected => Self::client(
                ApiError::unavailable(
                    "not ready",
                    "this node is not connected to its message bus yet; retry",
                ),
                CloseReason::LogUnavailable,
            ),
            SyncError::TooManyDocuments => Self::client(
                ApiError::unavailable(
                    "too many documents",
                    "this node holds as many documents as it may; retry later",
                ),
                CloseReason::DocumentUnavailable,
            ),
            SyncError::Publish(publish) => Self::publish(publish),
            SyncError::Load(_) | SyncError::Replay(_) => Self {
                refusal: ApiError::unavailable(
                    "document unavailable",
                    "the document could not be loaded; retry",
                ),
                close: CloseReason::DocumentUnavailable,
                internal: true,
            },
        }
    }

    /// The answer to an update that was not made durable.
    pub(crate) fn publish(failure: &PublishError) -> Self {
        match failure {
            PublishError::Stopped => Self::client(draining(), CloseReason::ServerRestarting),
            PublishError::Unavailable => Self::client(
                ApiError::unavailable("not ready", "the message bus is not connected; retry"),
                CloseReason::LogUnavailable,
            ),
            PublishError::Failed(_) => Self {
                refusal: ApiError::unavailable(
                    "unavailable",
                    "the update could not be stored; retry",
                ),
                close: CloseReason::UpdateNotStored,
                internal: true,
            },
        }
    }
}

/// 503: the node is shutting down.
pub(crate) fn draining() -> ApiError {
    ApiError::unavailable(
        "draining",
        "this node is shutting down; reconnect or retry elsewhere",
    )
}

impl From<&AuthError> for ApiError {
    /// 401 or 403 with what the client should do, never which check failed.
    fn from(refusal: &AuthError) -> Self {
        if matches!(refusal, AuthError::Unavailable) {
            return Self::unavailable("unavailable", refusal.details());
        }
        let status = refusal.status();
        let message = if status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "unauthorized"
        };
        Self::new(status, message, refusal.details())
    }
}

impl From<Refusal> for ApiError {
    /// 503 when the node is full (another node may take the client), 429
    /// when this address is over its own limits.
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NodeFull => Self::unavailable(
                "too many connections",
                "this node has as many sessions as it may hold; retry later or elsewhere",
            ),
            Refusal::TooManyFromIp => Self::too_many_requests(
                "too many open connections from this address",
                RETRY_AFTER_SECS,
            ),
            Refusal::UpgradeRateExceeded { retry_after_secs } => Self::too_many_requests(
                "too many connection attempts from this address; slow down",
                retry_after_secs,
            ),
        }
    }
}
