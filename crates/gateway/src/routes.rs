//! The router: upgrade dispatch, health and readiness.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::{Method, Request, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};
use weft_sync::{Registry, SessionOutbox, SyncError};

use crate::config::{MAX_DOC_NAME_BYTES, READ_BUFFER_BYTES, WRITE_BUFFER_BYTES};
use crate::session::{SessionParts, run_session};
use crate::{ApiError, GatewayConfig, Lifecycle};

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The node's documents.
    pub registry: Registry,
    /// Draining state and the session tracker.
    pub lifecycle: Lifecycle,
    /// Session limits and timers.
    pub config: Arc<GatewayConfig>,
}

/// Builds the router. Every path goes through [`dispatch`], which sends
/// upgrades to documents and plain requests to the service routes.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<AppState>, request: Request<Body>) -> Response {
    if is_websocket_upgrade(&request) {
        return upgrade(state, request).await;
    }
    match (request.uri().path(), request.method()) {
        ("/healthz", &Method::GET | &Method::HEAD) => healthz(),
        ("/readyz", &Method::GET | &Method::HEAD) => readyz(&state).await,
        ("/healthz" | "/readyz", _) => {
            ApiError::method_not_allowed("service routes answer GET and HEAD").into_response()
        }
        (path, _) => ApiError::not_found(format!(
            "no route {path}; documents are reached with a WebSocket upgrade"
        ))
        .into_response(),
    }
}

fn is_websocket_upgrade(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(state: &AppState) -> Response {
    if state.lifecycle.is_draining() {
        return ApiError::unavailable("draining", "this node is shutting down").into_response();
    }
    if !state.registry.check_store().await {
        return ApiError::unavailable("not ready", "the document store does not answer")
            .into_response();
    }
    axum::Json(serde_json::json!({ "status": "ready" })).into_response()
}

/// The document a request path names: the path without its leading `/`,
/// percent-decoded.
fn doc_name(path: &str) -> Result<String, ApiError> {
    let encoded = path.strip_prefix('/').unwrap_or(path);
    if encoded.is_empty() {
        return Err(ApiError::bad_request(
            "connect to /{document}; the path names the document",
        ));
    }
    let name = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the document name is not valid UTF-8 once decoded"))?;
    if name.len() > MAX_DOC_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "document names are at most {MAX_DOC_NAME_BYTES} bytes"
        )));
    }
    Ok(name.into_owned())
}

async fn upgrade(state: AppState, request: Request<Body>) -> Response {
    let (mut parts, _body) = request.into_parts();
    let doc = match doc_name(parts.uri.path()) {
        Ok(doc) => doc,
        Err(refusal) => return refusal.into_response(),
    };
    let span = info_span!("upgrade", doc = %doc);
    async move {
        if state.lifecycle.is_draining() {
            return ApiError::unavailable("draining", "this node is shutting down; reconnect")
                .into_response();
        }
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => {
                let status = rejection.status();
                return ApiError::new(status, "invalid websocket upgrade", rejection.body_text())
                    .into_response();
            }
        };
        let (frames, outbox) = mpsc::channel(state.config.send_queue_frames);
        let overflowed = CancellationToken::new();
        let session = match state
            .registry
            .join(&doc, SessionOutbox { frames, overflowed: overflowed.clone() })
            .await
        {
            Ok(session) => session,
            Err(SyncError::ShuttingDown) => {
                return ApiError::unavailable("draining", "this node is shutting down; reconnect")
                    .into_response();
            }
            Err(failure) => {
                error!(error = %failure, error.source = ?std::error::Error::source(&failure), "join document failed");
                return ApiError::unavailable("document unavailable", "the document could not be loaded; retry")
                    .into_response();
            }
        };
        info!(session = %session.id(), "session open");
        let parts = SessionParts {
            session,
            outbox,
            overflowed,
            stop: state.lifecycle.sessions_stop().clone(),
            config: state.config.clone(),
        };
        let tracker = state.lifecycle.tracker().clone();
        let session_span = tracing::Span::current();
        upgrade
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_write_buffer_size(state.config.max_message_bytes.saturating_mul(2))
            .max_message_size(state.config.max_message_bytes)
            .max_frame_size(state.config.max_message_bytes)
            .on_upgrade(move |socket| {
                tracker.track_future(run_session(socket, parts).instrument(session_span))
            })
    }
    .instrument(span)
    .await
}
