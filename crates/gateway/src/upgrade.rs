//! WebSocket upgrades: every check before the `101`, then the socket task.
//!
//! Before answering `101 Switching Protocols` the gateway checks, in order:
//! draining, the document name, the `Origin` allow-list, admission, the
//! token and its grant, and finally joins the document (loading it if
//! needed). So every refusal is an HTTP status with the JSON error body, and
//! no socket is opened for a client that may not have it. An upgrade at `/`
//! is a Hocuspocus socket: its documents (and their tokens) come in
//! messages, so only the node's and the origin's checks apply before it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::Either;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span};

use crate::auth::{Access, token_from_request};
use crate::cluster::{FORWARDED_FOR_HEADER, Route};
use crate::config::{MAX_DOC_NAME_BYTES, READ_BUFFER_BYTES, WRITE_BUFFER_BYTES};
use crate::error::{ApiError, FailureAnswer, draining};
use crate::forward::{ForwardFailure, OwnerSocket, connect_owner, fell_back};
use crate::live::{SessionGrant, unix_now};
use crate::metrics::StatusLabel;
use crate::socket::{
    Forwarder, Hocuspocus, Joined, Joiner, MoveWatch, SocketOutbox, SocketParts, Wire, YWebsocket,
};
use crate::state::AppState;

/// Whether a request asks for a WebSocket.
pub(crate) fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Answers an upgrade request (counted by status in `weft_upgrades_total`).
pub(crate) async fn upgrade(state: AppState, request: Request<Body>) -> Response {
    let metrics = state.metrics.clone();
    let (parts, _body) = request.into_parts();
    let response = if parts.uri.path() == "/" {
        hocuspocus_upgrade(state, parts).await
    } else {
        document_upgrade(state, parts).await
    };
    metrics
        .upgrades
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    response
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

/// An upgrade at `/{doc}`: the y-websocket protocol.
async fn document_upgrade(state: AppState, mut parts: Parts) -> Response {
    let doc = match doc_name(parts.uri.path()) {
        Ok(doc) => doc,
        Err(refusal) => return refusal.into_response(),
    };
    let forwarded = state
        .ownership
        .as_ref()
        .is_some_and(|ownership| ownership.is_forwarded(&parts.headers));
    let peer = if forwarded {
        forwarded_for(&parts).unwrap_or_else(|| peer_ip(&parts))
    } else {
        peer_ip(&parts)
    };
    let span = info_span!(
        "upgrade",
        doc = %doc,
        peer = %peer,
        auth = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let response = async move {
        if state.lifecycle.is_draining() {
            return Err(draining());
        }
        check_origin(&parts, &state.config.allowed_origins)?;
        let permit = state.admission.admit(peer).map_err(ApiError::from)?;
        revocations_loaded(&state)?;
        // After admission, so failed attempts count against the upgrade rate.
        let token = token_from_request(&parts);
        let context = state.auth.context(&parts.headers, peer);
        let revocations = state.revocations.current();
        let checked =
            SessionGrant::check(&state.auth, &revocations, token.as_deref(), &doc, unix_now(), &context).await;
        let (grant, author) = match checked {
            Ok(checked) => checked,
            Err(refusal) => {
                tracing::Span::current().record("auth", "refused");
                info!(status = refusal.status().as_u16(), reason = %refusal, "upgrade refused");
                return Err(ApiError::from(&refusal));
            }
        };
        let SessionGrant { access, token } = grant;
        let granted = if access == Access::Read { "read" } else { "write" };
        tracing::Span::current().record("auth", granted);
        if let Some(ownership) = state.ownership.as_ref().filter(|_| !forwarded)
            && let Route::Forward(address) = ownership.route(&doc)
        {
            match connect_owner(&address, &parts, peer, ownership.secret(), socket_config(state.config.max_message_bytes)).await {
                Ok(owner) => {
                    let upgrade = websocket_upgrade(&mut parts, &state)?;
                    info!(owner = %address, "session forwarded to the document's owner");
                    return Ok(start_relay(&state, upgrade, owner, permit, &address));
                }
                Err(ForwardFailure::Refused(status)) => {
                    info!(owner = %address, status = status.as_u16(), "the owner refused the forwarded session");
                    return Err(ApiError::new(status, "refused by the document's owner", format!("the node that owns this document answered {status}")));
                }
                Err(ForwardFailure::Unreachable(reason)) => fell_back(&address, &reason, &state.metrics),
            }
        }
        let upgrade = websocket_upgrade(&mut parts, &state)?;
        let stop = match &state.ownership {
            Some(ownership) => ownership.session_stop(&doc, state.lifecycle.sessions_stop()),
            None => state.lifecycle.sessions_stop().child_token(),
        };
        let outbox = SocketOutbox::new(state.config.send_queue_frames, state.config.send_queue_bytes);
        let deleted = CancellationToken::new();
        let mut session = match state.registry.join(&doc, outbox.direct(deleted.clone())).await {
            Ok(session) => session,
            Err(failure) => {
                let answer = FailureAnswer::sync(&failure);
                if answer.internal {
                    error!(error = %failure, error.source = ?std::error::Error::source(&failure), "join document failed");
                }
                return Err(answer.refusal);
            }
        };
        session.set_author(&author);
        info!(session = %session.id(), read_only = access == Access::Read, "session open");
        // The session is a span of its own (the upgrade's ends with the 101),
        // linked to the upgrade's.
        let session_span = info_span!(parent: None, "session", doc = %doc, session = %session.id(), peer = %peer);
        session_span.follows_from(tracing::Span::current());
        let joined = Joined { doc: doc.into(), session, access, token, deleted };
        let socket = socket_parts(&state, YWebsocket, Some(joined), outbox, permit, stop);
        Ok(start(&state, upgrade, session_span, move |websocket| crate::socket::run(websocket, socket)))
    }
    .instrument(span.clone())
    .await
    .unwrap_or_else(IntoResponse::into_response);
    span.record("status", response.status().as_u16());
    response
}

/// An upgrade at `/`: the Hocuspocus protocol. Documents (and their
/// tokens) come in messages, so only the node's and the origin's admission
/// apply here; each document is authorised when its token arrives.
async fn hocuspocus_upgrade(state: AppState, mut parts: Parts) -> Response {
    let forwarded = state
        .ownership
        .as_ref()
        .is_some_and(|ownership| ownership.is_forwarded(&parts.headers));
    let peer = if forwarded {
        forwarded_for(&parts).unwrap_or_else(|| peer_ip(&parts))
    } else {
        peer_ip(&parts)
    };
    let span = info_span!(
        "upgrade",
        protocol = "hocuspocus",
        peer = %peer,
        status = tracing::field::Empty,
    );
    let response = async move {
        if state.lifecycle.is_draining() {
            return Err(draining());
        }
        if let Err(reason) = state.registry.check_ready().await {
            return Err(ApiError::unavailable("not ready", reason));
        }
        check_origin(&parts, &state.config.allowed_origins)?;
        let permit = state.admission.admit(peer).map_err(ApiError::from)?;
        revocations_loaded(&state)?;
        let upgrade = websocket_upgrade(&mut parts, &state)?;
        let wire = Hocuspocus {
            joiner: Joiner {
                registry: state.registry.clone(),
                auth: state.auth.clone(),
                context: Arc::new(state.auth.context(&parts.headers, peer)),
                revocations: state.revocations.clone(),
                // A socket another node forwarded is served here, never
                // forwarded on.
                forwarder: state
                    .ownership
                    .clone()
                    .filter(|_| !forwarded)
                    .map(|ownership| Forwarder {
                        ownership,
                        path: parts
                            .uri
                            .path_and_query()
                            .map_or("/", PathAndQuery::as_str)
                            .to_owned(),
                        peer,
                        socket_config: socket_config(state.config.max_message_bytes),
                        metrics: state.metrics.clone(),
                    }),
                moves: state.ownership.clone().map(|ownership| MoveWatch {
                    ownership,
                    drain: state.lifecycle.sessions_stop().clone(),
                }),
            },
        };
        let outbox = SocketOutbox::new(
            state.config.send_queue_frames,
            state.config.send_queue_bytes,
        );
        let stop = state.lifecycle.sessions_stop().child_token();
        let socket = socket_parts(&state, wire, None, outbox, permit, stop);
        let session_span =
            info_span!(parent: None, "session", protocol = "hocuspocus", peer = %peer);
        session_span.follows_from(tracing::Span::current());
        Ok(start(&state, upgrade, session_span, move |websocket| {
            crate::socket::run(websocket, socket)
        }))
    }
    .instrument(span.clone())
    .await
    .unwrap_or_else(IntoResponse::into_response);
    span.record("status", response.status().as_u16());
    response
}

fn socket_parts<W: Wire>(
    state: &AppState,
    wire: W,
    joined: Option<Joined>,
    outbox: SocketOutbox,
    permit: crate::limits::ConnectionPermit,
    stop: CancellationToken,
) -> SocketParts<W> {
    SocketParts {
        wire,
        joined,
        outbox,
        permit,
        stop,
        config: state.config.clone(),
        metrics: state.metrics.clone(),
        revocations: state.revocations.subscribe(),
    }
}

/// Answers `101` and relays the socket to the owner (counted in
/// `weft_forwarded_sessions`).
fn start_relay(
    state: &AppState,
    upgrade: Handshake,
    owner: OwnerSocket,
    permit: crate::limits::ConnectionPermit,
    address: &str,
) -> Response {
    let stop = state.lifecycle.sessions_stop().child_token();
    let config = state.config.clone();
    let metrics = state.metrics.clone();
    let span = info_span!(parent: None, "relay", owner = %address);
    span.follows_from(tracing::Span::current());
    start(state, upgrade, span, move |client| async move {
        let _permit = permit;
        metrics.forwards.inc();
        metrics.forwarded_sessions.inc();
        let end = crate::forward::relay(client, owner, stop, &config, &metrics).await;
        metrics.forwarded_sessions.dec();
        debug!(?end, "forwarded session ended");
    })
}

/// The client's address a forwarding node of this cluster names.
fn forwarded_for(parts: &Parts) -> Option<IpAddr> {
    parts
        .headers
        .get(FORWARDED_FOR_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Refuses upgrades (503) until the node has read every stored revocation,
/// so a token revoked before a restart is not let in after it.
fn revocations_loaded(state: &AppState) -> Result<(), ApiError> {
    if state.revocations.is_loaded() {
        return Ok(());
    }
    Err(ApiError::unavailable(
        "not ready",
        "the revocations are still being read; retry shortly",
    ))
}

/// Answers `101` and runs the socket as a tracked task in `span`.
///
/// The session counts as open from before the `101` (a tracker token taken
/// now, held until the socket ends): the connection is handed over only
/// after the response is sent, and a drain starting in between must still
/// wait for this session. If the handshake never completes, the task ends
/// and drops the token.
fn start<F, Fut>(state: &AppState, upgrade: Handshake, span: tracing::Span, serve: F) -> Response
where
    F: FnOnce(WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let open = state.lifecycle.tracker().token();
    let Handshake {
        accept,
        on_upgrade,
        config,
    } = upgrade;
    // Not an `async` block: it would hold `serve` (the session's parts) and
    // `config` beside the session's future for the session's life.
    let task = on_upgrade
        .then(move |upgraded| match upgraded {
            Ok(upgraded) => Either::Left(
                WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .then(serve),
            ),
            Err(failure) => {
                debug!(error = %failure, "the connection was not upgraded");
                Either::Right(std::future::ready(()))
            }
        })
        .map(move |()| drop(open));
    tokio::spawn(task.instrument(span));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// A valid WebSocket handshake (RFC 6455 section 4.2.1), not yet answered.
struct Handshake {
    /// The `Sec-WebSocket-Accept` of the `101`.
    accept: HeaderValue,
    /// The connection, once the `101` is sent.
    on_upgrade: OnUpgrade,
    /// The socket's buffer and message sizes.
    config: WebSocketConfig,
}

/// The WebSocket handshake of a request, with Weft's buffer and message
/// sizes (tungstenite's default read buffer is 128 KiB a connection), or the
/// refusal of an invalid handshake (the status and details name what is
/// wrong).
fn websocket_upgrade(parts: &mut Parts, state: &AppState) -> Result<Handshake, ApiError> {
    let invalid = |status, details: &str| {
        ApiError::new(status, "invalid websocket upgrade", details.to_owned())
    };
    if parts.method != Method::GET {
        return Err(invalid(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request method must be `GET`",
        ));
    }
    if !header_contains(&parts.headers, &header::CONNECTION, "upgrade") {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'",
        ));
    }
    if !header_is(&parts.headers, &header::UPGRADE, "websocket") {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "`Upgrade` header did not include 'websocket'",
        ));
    }
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header missing",
        ));
    };
    if !header_is(&parts.headers, &header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Version` header did not include '13'",
        ));
    }
    // Base64 is always a valid header value.
    let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
        .map_err(|_| invalid(StatusCode::BAD_REQUEST, "invalid `Sec-WebSocket-Key`"))?;
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(invalid(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ));
    };
    Ok(Handshake {
        accept,
        on_upgrade,
        config: socket_config(state.config.max_message_bytes),
    })
}

/// A socket's buffer and message sizes: a 1 KiB read buffer, no write
/// buffer (the writer flushes; a large message goes as fragments), and
/// messages and frames up to `max_message` bytes.
pub(crate) fn socket_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        // tungstenite requires it above the write buffer's size.
        .max_write_buffer_size(max_message.saturating_mul(2).max(WRITE_BUFFER_BYTES + 1))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Whether header `name` is `value`, ignoring ASCII case.
fn header_is(headers: &HeaderMap, name: &HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|header| header.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether header `name` contains `value` (lower case), ignoring ASCII case:
/// `Connection: keep-alive, Upgrade` asks for an upgrade.
fn header_contains(headers: &HeaderMap, name: &HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .and_then(|header| header.to_str().ok())
        .is_some_and(|header| header.to_ascii_lowercase().contains(value))
}

/// The connecting peer's address. Behind a proxy this is the proxy: per-IP
/// limits then count the proxy as one client (forwarded headers are not
/// trusted, since any client could set them).
fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

fn check_origin(parts: &Parts, allowed: &[String]) -> Result<(), ApiError> {
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
