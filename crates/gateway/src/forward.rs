//! Forwarding a y-websocket session to its document's owner
//! (`--cluster-mode ownership`): a client that lands on a node that does
//! not own the document is relayed, frame for frame, to the node that does.
//!
//! The edge checks what it checks for any upgrade (draining, origin,
//! admission, the token and its grant) before connecting to the owner, so
//! a client that may not open the document is refused here. The owner is
//! then asked for the same path and query with the client's
//! `Authorization`, `Cookie` and `Origin`, plus the cluster secret and the
//! client's address ([`CLUSTER_SECRET_HEADER`], [`FORWARDED_FOR_HEADER`]):
//! the owner checks the token again (it also follows the token's expiry
//! and revocations while connected), counts the client's own address
//! against its per-address limits, and never forwards the session on. A
//! refusal by the owner reaches the client as the owner's status; an owner
//! that cannot be reached within [`CONNECT_TIMEOUT`] leaves the session to
//! be served here (always safe: updates are durable in the log first).
//!
//! The relay is one task with bounded buffers on both sockets: a message
//! is read from one side only once the previous one was written to the
//! other. Pings are each hop's own; the relay pings the client itself and
//! closes both sides if the client goes silent for `--heartbeat-timeout`.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::close::close_code;
use crate::cluster::{CLUSTER_SECRET_HEADER, FORWARDED_FOR_HEADER};
use crate::config::GatewayConfig;
use crate::metrics::Metrics;

/// How long connecting to the owner may take before the session is served
/// here instead.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket to an owner.
pub(crate) type OwnerSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the owner did not take a forwarded session.
#[derive(Debug)]
pub(crate) enum ForwardFailure {
    /// It answered with this status (a refusal to pass on).
    Refused(axum::http::StatusCode),
    /// It could not be reached: serve the session here.
    Unreachable(String),
}

/// Opens the session at the owner `address` for the upgrade `parts`.
pub(crate) async fn connect_owner(
    address: &str,
    parts: &Parts,
    peer: IpAddr,
    secret: &str,
    socket_config: WebSocketConfig,
) -> Result<OwnerSocket, ForwardFailure> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    connect_owner_at(address, path, &parts.headers, peer, secret, socket_config).await
}

/// Opens a socket at the owner `address` for `path`, with the client's
/// credentials from `client_headers` (a Hocuspocus socket's upstream).
pub(crate) async fn connect_owner_at(
    address: &str,
    path: &str,
    client_headers: &HeaderMap,
    peer: IpAddr,
    secret: &str,
    socket_config: WebSocketConfig,
) -> Result<OwnerSocket, ForwardFailure> {
    let mut request = format!("ws://{address}{path}")
        .into_client_request()
        .map_err(|error| ForwardFailure::Unreachable(error.to_string()))?;
    let headers = request.headers_mut();
    for name in [header::AUTHORIZATION, header::COOKIE, header::ORIGIN] {
        for value in client_headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let secret_value = secret.parse().map_err(|_| {
        ForwardFailure::Unreachable("the cluster secret is not a header value".to_owned())
    })?;
    headers.insert(CLUSTER_SECRET_HEADER, secret_value);
    if let Ok(value) = peer.to_string().parse() {
        headers.insert(FORWARDED_FOR_HEADER, value);
    }
    let connecting =
        tokio_tungstenite::connect_async_with_config(request, Some(socket_config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(WsError::Http(response))) => Err(ForwardFailure::Refused(response.status())),
        Ok(Err(error)) => Err(ForwardFailure::Unreachable(error.to_string())),
        Err(_) => Err(ForwardFailure::Unreachable(format!(
            "no answer within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// How a relay ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayEnd {
    /// The client closed or went away.
    Client,
    /// The owner closed (its close code passed on) or went away.
    Owner,
    /// The client sent nothing for the heartbeat timeout.
    ClientSilent,
    /// This node drains.
    Draining,
}

/// Relays messages between `client` and `owner` until either ends, this
/// node drains (`stop`: the client gets 1012 and reconnects), or the client
/// goes silent.
pub(crate) async fn relay<C, O>(
    client: WebSocketStream<C>,
    owner: WebSocketStream<O>,
    stop: CancellationToken,
    config: &GatewayConfig,
    metrics: &Metrics,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_sink, mut client_stream) = client.split();
    let (mut owner_sink, mut owner_stream) = owner.split();
    let mut pings = tokio::time::interval(config.heartbeat_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let end = loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _sent = client_sink.send(close(close_code::SERVICE_RESTART, "server restarting")).await;
                let _sent = owner_sink.send(close(close_code::GOING_AWAY, "client relay closing")).await;
                break RelayEnd::Draining;
            }
            _ = pings.tick() => {
                if heard.elapsed() >= config.heartbeat_timeout {
                    let _sent = client_sink.send(close(close_code::GOING_AWAY, "heartbeat timeout")).await;
                    let _sent = owner_sink.send(close(close_code::NORMAL, "client gone")).await;
                    break RelayEnd::ClientSilent;
                }
                if client_sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    let _sent = owner_sink.send(close(close_code::NORMAL, "client gone")).await;
                    break RelayEnd::Client;
                }
            }
            from_client = client_stream.next() => {
                heard = Instant::now();
                match from_client {
                    Some(Ok(message @ (WsMessage::Binary(_) | WsMessage::Text(_)))) => {
                        metrics.forwarded_bytes.inc_by(message.len() as u64);
                        if owner_sink.send(message).await.is_err() {
                            let _sent = client_sink.send(close(close_code::SERVICE_RESTART, "owner gone; reconnect")).await;
                            break RelayEnd::Owner;
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let _sent = owner_sink.send(WsMessage::Close(frame)).await;
                        break RelayEnd::Client;
                    }
                    Some(Ok(_ping_pong_or_frame)) => {}
                    Some(Err(_)) | None => {
                        let _sent = owner_sink.send(close(close_code::NORMAL, "client gone")).await;
                        break RelayEnd::Client;
                    }
                }
            }
            from_owner = owner_stream.next() => {
                match from_owner {
                    Some(Ok(message @ (WsMessage::Binary(_) | WsMessage::Text(_)))) => {
                        metrics.forwarded_bytes.inc_by(message.len() as u64);
                        if client_sink.send(message).await.is_err() {
                            let _sent = owner_sink.send(close(close_code::NORMAL, "client gone")).await;
                            break RelayEnd::Client;
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        // The owner's code (1012 when the document moved)
                        // tells the client what to do.
                        let _sent = client_sink.send(WsMessage::Close(frame)).await;
                        break RelayEnd::Owner;
                    }
                    Some(Ok(_ping_pong_or_frame)) => {}
                    Some(Err(_)) | None => {
                        let _sent = client_sink.send(close(close_code::SERVICE_RESTART, "owner gone; reconnect")).await;
                        break RelayEnd::Owner;
                    }
                }
            }
        }
    };
    // Let each side see its close; bounded, since a peer may never answer.
    let _closed = tokio::time::timeout(crate::config::CLOSE_GRACE, async {
        let _client = client_sink.close().await;
        let _owner = owner_sink.close().await;
    })
    .await;
    debug!(?end, "relay ended");
    end
}

pub(crate) fn close(code: u16, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Logs a forward that fell back to serving here.
pub(crate) fn fell_back(address: &str, reason: &str, metrics: &Metrics) {
    metrics.forward_fallbacks.inc();
    info!(
        owner = address,
        reason, "owner unreachable; serving the session here"
    );
}
