//! The router: upgrade dispatch, health and readiness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};
use weft_sync::{Registry, SessionOutbox, SyncError};

use crate::auth::{Access, Authenticator, token_from_request};
use crate::config::{
    MAX_DOC_NAME_BYTES, MAX_REQUEST_BODY_BYTES, READ_BUFFER_BYTES, WRITE_BUFFER_BYTES,
};
use crate::editor;
use crate::hocuspocus::{HocusParts, run_hocus_session};
use crate::limits::{Admission, Refusal};
use crate::metrics::{Metrics, StatusLabel};
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
    /// Who may open which document.
    pub auth: Authenticator,
    /// Connection counts and upgrade rates.
    pub admission: Admission,
    /// The node's metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
}

/// Builds the router. Every path goes through [`dispatch`], which sends
/// upgrades to documents and plain requests to the service routes.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<AppState>, request: Request<Body>) -> Response {
    if crate::api::is_api_path(request.uri().path()) && !is_websocket_upgrade(&request) {
        // The API bounds request bodies itself (an update may be as large
        // as a WebSocket message).
        return crate::api::dispatch(state, request).await;
    }
    if let Some(declared) = declared_body_bytes(&request)
        && declared > MAX_REQUEST_BODY_BYTES
    {
        return ApiError::payload_too_large(format!(
            "a request body may be at most {MAX_REQUEST_BODY_BYTES} bytes; documents are edited over WebSocket"
        ))
        .into_response();
    }
    if is_websocket_upgrade(&request) {
        let metrics = state.metrics.clone();
        let response = upgrade(state, request).await;
        metrics
            .upgrades
            .get_or_create(&StatusLabel {
                status: response.status().as_u16(),
            })
            .inc();
        return response;
    }
    match (request.uri().path(), request.method()) {
        ("/healthz", &Method::GET | &Method::HEAD) => healthz(),
        ("/readyz", &Method::GET | &Method::HEAD) => readyz(&state).await,
        ("/metrics", &Method::GET | &Method::HEAD) => metrics(&state),
        ("/healthz" | "/readyz" | "/metrics", _) => {
            ApiError::method_not_allowed("service routes answer GET and HEAD").into_response()
        }
        (path, _)
            if editor::is_page_route(path)
                && request.method() != Method::GET
                && request.method() != Method::HEAD =>
        {
            ApiError::method_not_allowed("the editor page answers GET and HEAD").into_response()
        }
        (path, &Method::GET | &Method::HEAD) => editor::serve(path, request.headers())
            .unwrap_or_else(|| {
                ApiError::not_found(format!(
                    "no route {path}; documents are reached with a WebSocket upgrade"
                ))
                .into_response()
            }),
        (path, _) => ApiError::not_found(format!(
            "no route {path}; documents are reached with a WebSocket upgrade"
        ))
        .into_response(),
    }
}

/// The body size a request declares (`Content-Length`), if any.
pub(crate) fn declared_body_bytes(request: &Request<Body>) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
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
    if let Err(reason) = state.registry.check_ready().await {
        return ApiError::unavailable("not ready", reason).into_response();
    }
    axum::Json(serde_json::json!({ "status": "ready" })).into_response()
}

/// A router that answers only `GET /metrics` (`--metrics-listen`); any
/// other path is a JSON 404.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().fallback(move |request: Request<Body>| {
        let metrics = metrics.clone();
        async move {
            match (request.uri().path(), request.method()) {
                ("/metrics", &Method::GET | &Method::HEAD) => encode_metrics(&metrics),
                ("/metrics", _) => {
                    ApiError::method_not_allowed("/metrics answers GET and HEAD").into_response()
                }
                (path, _) => ApiError::not_found(format!(
                    "no route {path}; this listener serves /metrics only"
                ))
                .into_response(),
            }
        }
    })
}

fn metrics(state: &AppState) -> Response {
    encode_metrics(&state.metrics)
}

fn encode_metrics(metrics: &Metrics) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            error!(error = %error, "encode metrics");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "metrics could not be encoded",
            )
            .into_response()
        }
    }
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
    if request.uri().path() == "/" {
        return hocuspocus_upgrade(state, request).await;
    }
    let (mut parts, _body) = request.into_parts();
    let doc = match doc_name(parts.uri.path()) {
        Ok(doc) => doc,
        Err(refusal) => return refusal.into_response(),
    };
    let peer = peer_ip(&parts);
    let span = info_span!(
        "upgrade",
        doc = %doc,
        peer = %peer,
        auth = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let response = async move {
        if state.lifecycle.is_draining() {
            return ApiError::unavailable("draining", "this node is shutting down; reconnect")
                .into_response();
        }
        if let Err(refusal) = check_origin(&parts, &state.config.allowed_origins) {
            return refusal.into_response();
        }
        let permit = match state.admission.admit(peer) {
            Ok(permit) => permit,
            Err(refusal) => return admission_refusal(refusal).into_response(),
        };
        // After admission, so failed attempts count against the upgrade rate.
        let token = token_from_request(&parts);
        let access = match state.auth.authorize(token.as_deref(), &doc) {
            Ok(access) => {
                let granted = if access == Access::Read { "read" } else { "write" };
                tracing::Span::current().record("auth", granted);
                access
            }
            Err(refusal) => {
                tracing::Span::current().record("auth", "refused");
                info!(status = refusal.status().as_u16(), reason = %refusal, "upgrade refused");
                return ApiError::new(refusal.status(), refusal_message(refusal.status()), refusal.details())
                    .into_response();
            }
        };
        let upgrade = match websocket_upgrade(&mut parts, &state).await {
            Ok(upgrade) => upgrade,
            Err(refusal) => return refusal,
        };
        let (frames, outbox) = mpsc::channel(state.config.send_queue_frames);
        let overflowed = CancellationToken::new();
        let deleted = CancellationToken::new();
        let session = match state
            .registry
            .join(
                &doc,
                SessionOutbox { frames, overflowed: overflowed.clone(), deleted: deleted.clone() },
            )
            .await
        {
            Ok(session) => session,
            Err(SyncError::ShuttingDown) => {
                return ApiError::unavailable("draining", "this node is shutting down; reconnect")
                    .into_response();
            }
            Err(SyncError::NotConnected) => {
                return ApiError::unavailable(
                    "not ready",
                    "this node is not connected to its message bus yet; retry",
                )
                .into_response();
            }
            Err(SyncError::TooManyDocuments) => {
                return ApiError::unavailable(
                    "too many documents",
                    "this node holds as many documents as it may; retry later",
                )
                .into_response();
            }
            Err(failure) => {
                error!(error = %failure, error.source = ?std::error::Error::source(&failure), "join document failed");
                return ApiError::unavailable("document unavailable", "the document could not be loaded; retry")
                    .into_response();
            }
        };
        info!(session = %session.id(), read_only = access == Access::Read, "session open");
        // The session is a span of its own (the upgrade's ends with the 101),
        // linked to the upgrade's.
        let session_span = info_span!(parent: None, "session", doc = %doc, session = %session.id(), peer = %peer);
        session_span.follows_from(tracing::Span::current());
        let parts = SessionParts {
            session,
            access,
            permit,
            outbox,
            overflowed,
            deleted,
            stop: state.lifecycle.sessions_stop().clone(),
            config: state.config.clone(),
            metrics: state.metrics.clone(),
        };
        let tracker = state.lifecycle.tracker().clone();
        upgrade.on_upgrade(move |socket| {
                tracker.track_future(run_session(socket, parts).instrument(session_span))
            })
    }
    .instrument(span.clone())
    .await;
    span.record("status", response.status().as_u16());
    response
}

/// The WebSocket handshake of a request, with Weft's buffer and message
/// sizes (tungstenite's default read buffer is 128 KiB a connection), or the
/// refusal of an invalid handshake.
async fn websocket_upgrade(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
) -> Result<WebSocketUpgrade, Response> {
    let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
        .await
        .map_err(|rejection| {
            ApiError::new(
                rejection.status(),
                "invalid websocket upgrade",
                rejection.body_text(),
            )
            .into_response()
        })?;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(state.config.max_message_bytes.saturating_mul(2))
        .max_message_size(state.config.max_message_bytes)
        .max_frame_size(state.config.max_message_bytes))
}

/// The connecting peer's address. Behind a proxy this is the proxy: per-IP
/// limits then count the proxy as one client (forwarded headers are not
/// trusted, since any client could set them).
fn peer_ip(parts: &axum::http::request::Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

fn check_origin(parts: &axum::http::request::Parts, allowed: &[String]) -> Result<(), ApiError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    if allowed.iter().any(|allowed| allowed == origin) {
        return Ok(());
    }
    info!(origin, "upgrade refused: origin not allowed");
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this origin may not open sessions on this server",
    ))
}

fn refusal_message(status: StatusCode) -> &'static str {
    if status == StatusCode::FORBIDDEN {
        "forbidden"
    } else {
        "unauthorized"
    }
}

fn admission_refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NodeFull => ApiError::unavailable(
            "too many connections",
            "this node has as many sessions as it may hold; retry later or elsewhere",
        ),
        Refusal::TooManyFromIp => ApiError::too_many_requests(
            "too many open connections from this address",
            crate::config::RETRY_AFTER_SECS,
        ),
        Refusal::UpgradeRateExceeded { retry_after_secs } => ApiError::too_many_requests(
            "too many connection attempts from this address; slow down",
            retry_after_secs,
        ),
    }
}

/// A WebSocket upgrade at `/`: the Hocuspocus protocol. Documents (and
/// their tokens) come in messages, so only the node's and the origin's
/// admission apply here; each document is authorised when its token
/// arrives.
async fn hocuspocus_upgrade(state: AppState, request: Request<Body>) -> Response {
    let (mut parts, _body) = request.into_parts();
    let peer = peer_ip(&parts);
    let span = info_span!(
        "upgrade",
        protocol = "hocuspocus",
        peer = %peer,
        status = tracing::field::Empty,
    );
    let response = async move {
        if state.lifecycle.is_draining() {
            return ApiError::unavailable("draining", "this node is shutting down; reconnect")
                .into_response();
        }
        if let Err(reason) = state.registry.check_ready().await {
            return ApiError::unavailable("not ready", reason).into_response();
        }
        if let Err(refusal) = check_origin(&parts, &state.config.allowed_origins) {
            return refusal.into_response();
        }
        let permit = match state.admission.admit(peer) {
            Ok(permit) => permit,
            Err(refusal) => return admission_refusal(refusal).into_response(),
        };
        let upgrade = match websocket_upgrade(&mut parts, &state).await {
            Ok(upgrade) => upgrade,
            Err(refusal) => return refusal,
        };
        let hocus = HocusParts {
            registry: state.registry.clone(),
            auth: state.auth.clone(),
            permit,
            stop: state.lifecycle.sessions_stop().clone(),
            config: state.config.clone(),
            metrics: state.metrics.clone(),
        };
        let tracker = state.lifecycle.tracker().clone();
        let session_span =
            info_span!(parent: None, "session", protocol = "hocuspocus", peer = %peer);
        session_span.follows_from(tracing::Span::current());
        upgrade.on_upgrade(move |socket| {
            tracker.track_future(run_hocus_session(socket, hocus).instrument(session_span))
        })
    }
    .instrument(span.clone())
    .await;
    span.record("status", response.status().as_u16());
    response
}
