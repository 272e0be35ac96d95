//! The socket loop of one Hocuspocus connection (a WebSocket upgrade at
//! `/`): many documents over one socket, each behind its own address.
//!
//! Per document, the client's first message is its token (an auth message).
//! The token is checked with the same JWT claims as the y-websocket path;
//! the document is then joined and answered with `Authenticated` (scope
//! `read-write` or `readonly`), or refused with `PermissionDenied` while the
//! socket and its other documents stay open. Messages for an address that
//! is not authenticated are ignored.
//!
//! Each joined document has its own bounded outbox, forwarded into the
//! socket's bounded outbox with the address in front (sync and awareness
//! messages are the same bytes in both protocols). A full outbox anywhere
//! closes the socket (1013) so the client re-syncs, as on the y-websocket
//! path.
//!
//! A client's update is acknowledged with a sync status of 1 only once it
//! is durable (group commit, or the broker's `acks=all`), and with 0 when
//! it is not applied (a read-only scope). A failed publish closes the
//! socket with 1011: the provider reconnects and re-sends.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use weft_protocol::hocuspocus::{
    HOCUS_PONG, HocusMessage, decode_hocus_frame, encode_addressed, encode_authenticated,
    encode_close, encode_permission_denied, encode_sync_status,
};
use weft_protocol::{Message, SyncMessage};
use weft_sync::{Registry, Session, SessionOutbox, SyncError};

use crate::GatewayConfig;
use crate::auth::{Access, Authenticator};
use crate::config::{CLOSE_GRACE, MAX_DOC_NAME_BYTES, MAX_UPDATES_IN_FLIGHT};
use crate::error::{close_code, close_reason};
use crate::limits::{ConnectionPermit, UpdateRateLimiter};
use crate::metrics::Metrics;
use crate::session::{Closing, closing_for_publish, discard_until_close};

/// Most documents one Hocuspocus socket may hold at once.
const MAX_DOCUMENTS_PER_SOCKET: usize = 256;

/// Everything a Hocuspocus socket needs, gathered before the upgrade.
#[derive(Debug)]
pub struct HocusParts {
    /// The node's documents.
    pub registry: Registry,
    /// Who may open which document (checked per document).
    pub auth: Authenticator,
    /// The socket's place in the connection limits.
    pub permit: ConnectionPermit,
    /// Tripped when the node drains.
    pub stop: CancellationToken,
    /// Limits and timers.
    pub config: Arc<GatewayConfig>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

struct Joined {
    session: Session,
    access: Access,
}

/// Serves one upgraded Hocuspocus socket until it closes.
pub async fn run_hocus_session(socket: WebSocket, parts: HocusParts) {
    let metrics = parts.metrics.clone();
    metrics.connections.inc();
    let closing = drive(socket, parts).await;
    metrics.connections.dec();
    if let Some(closing) = &closing {
        metrics.closed(closing.code, closing.reason);
        if closing.code != close_code::NORMAL {
            info!(
                code = closing.code,
                reason = closing.reason,
                "hocuspocus session closed"
            );
        }
    }
}

async fn drive(socket: WebSocket, parts: HocusParts) -> Option<Closing> {
    let HocusParts {
        registry,
        auth,
        permit,
        stop,
        config,
        metrics,
    } = parts;
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing) = mpsc::channel::<Bytes>(config.send_queue_frames);
    let overflowed = CancellationToken::new();
    let mut documents: HashMap<String, Joined> = HashMap::new();
    let mut acks: FuturesUnordered<BoxFuture<'static, AckOutcome>> = FuturesUnordered::new();
    let mut rate = UpdateRateLimiter::new(config.max_updates_per_second);
    let mut deadline = Instant::now() + config.heartbeat_timeout;
    let mut idle_deadline = Instant::now() + config.idle_timeout;
    let mut ping = tokio::time::interval_at(
        Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let forwarders = tokio_util::task::TaskTracker::new();
    let (detach, mut detached) = mpsc::channel::<String>(MAX_DOCUMENTS_PER_SOCKET);
    let context = Context {
        registry: &registry,
        auth: &auth,
        config: &config,
        outbox: &outbox,
        overflowed: &overflowed,
        detach: &detach,
        forwarders: &forwarders,
    };
    let closing = loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                break Some(Closing::new(close_code::SERVICE_RESTART, "server restarting"));
            }
            () = overflowed.cancelled() => {
                break Some(Closing::new(close_code::TRY_AGAIN_LATER, close_reason::SEND_QUEUE_FULL));
            }
            Some(address) = detached.recv() => {
                // Deleted: its forwarder sent the client CLOSE for it.
                documents.remove(&address);
            }
            Some((address, outcome)) = acks.next(), if !acks.is_empty() => {
                match outcome {
                    Ok(_) => {
                        if !offer(&outbox, encode_sync_status(&address, true)) {
                            break Some(Closing::new(close_code::TRY_AGAIN_LATER, close_reason::SEND_QUEUE_FULL));
                        }
                    }
                    Err(failure) => {
                        info!(error = %failure, "update not committed; closing so the client re-sends it");
                        break Some(closing_for_publish(&failure));
                    }
                }
            }
            Some(frame) = outgoing.recv() => {
                metrics.messages_sent.inc();
                metrics.bytes_sent.inc_by(frame.len() as u64);
                if sink.send(WsMessage::Binary(frame)).await.is_err() {
                    break Some(Closing::new(close_code::GOING_AWAY, "connection lost"));
                }
            }
            _ = ping.tick() => {
                if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    break Some(Closing::new(close_code::GOING_AWAY, "connection lost"));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                break Some(Closing::new(close_code::GOING_AWAY, "heartbeat timeout"));
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                break Some(Closing::new(close_code::GOING_AWAY, "idle timeout"));
            }
            received = stream.next(), if acks.len() < MAX_UPDATES_IN_FLIGHT => {
                deadline = Instant::now() + config.heartbeat_timeout;
                let frame = match received {
                    None | Some(Err(_)) => break None,
                    Some(Ok(WsMessage::Binary(frame))) => frame,
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) => break Some(Closing::new(close_code::NORMAL, "")),
                    Some(Ok(WsMessage::Text(_))) => {
                        break Some(Closing::new(close_code::UNSUPPORTED_DATA, "text frames are not part of the protocol"));
                    }
                };
                idle_deadline = Instant::now() + config.idle_timeout;
                metrics.messages_received.inc();
                metrics.bytes_received.inc_by(frame.len() as u64);
                match handle(&frame, &context, &mut documents, &mut rate).await {
                    Ok(None) => {}
                    Ok(Some((address, ack))) => acks.push(async move { (address, ack.wait().await) }.boxed()),
                    Err(closing) => break Some(closing),
                }
            }
        }
    };
    // Leave every document (their forwarders end with their outboxes).
    drop(documents);
    drop(acks);
    forwarders.close();
    if let Some(closing) = &closing {
        let frame = CloseFrame {
            code: closing.code,
            reason: closing.reason.into(),
        };
        // Keep reading (and discarding) while the close frame goes out,
        // until the peer answers it, as on the y-websocket path: dropping a
        // socket with unread input makes the kernel reset the connection,
        // and a provider still sending updates would see 1006 instead of
        // the close code.
        let linger = futures::future::join(
            sink.send(WsMessage::Close(Some(frame))),
            discard_until_close(&mut stream),
        );
        let _peer_may_be_gone = tokio::time::timeout(CLOSE_GRACE, linger).await;
    }
    drop(permit);
    closing
}

struct Context<'a> {
    registry: &'a Registry,
    auth: &'a Authenticator,
    config: &'a GatewayConfig,
    outbox: &'a mpsc::Sender<Bytes>,
    overflowed: &'a CancellationToken,
    /// Addresses whose document was deleted, to leave.
    detach: &'a mpsc::Sender<String>,
    forwarders: &'a tokio_util::task::TaskTracker,
}

type Ack = (String, weft_sync::session::PendingAck);
/// An address and whether its update became durable.
type AckOutcome = (String, Result<weft_sync::LogSeq, weft_sync::PublishError>);

/// Acts on one client frame: `Ok(Some(..))` is an update to acknowledge
/// once durable; `Err` closes the socket.
async fn handle(
    frame: &[u8],
    context: &Context<'_>,
    documents: &mut HashMap<String, Joined>,
    rate: &mut UpdateRateLimiter,
) -> Result<Option<Ack>, Closing> {
    let (address, message) = decode_hocus_frame(frame).map_err(|failure| {
        debug!(error = %failure, bytes = frame.len(), "malformed hocuspocus frame");
        Closing::new(close_code::PROTOCOL_ERROR, "malformed message")
    })?;
    let message = match message {
        HocusMessage::Ping => {
            send(context.outbox, vec![HOCUS_PONG])?;
            return Ok(None);
        }
        HocusMessage::Pong => return Ok(None),
        HocusMessage::AuthToken(token) => {
            authenticate(&address, &token, context, documents).await?;
            return Ok(None);
        }
        HocusMessage::Close => {
            documents.remove(&address);
            return Ok(None);
        }
        HocusMessage::Stateless(payload) => {
            match documents.get(&address) {
                Some(joined) => joined.session.relay_stateless(&payload),
                None => debug!(
                    address,
                    "stateless message for a document this socket has not authenticated; ignored"
                ),
            }
            return Ok(None);
        }
        HocusMessage::Yjs(message) => message,
    };
    let Some(joined) = documents.get(&address) else {
        debug!(
            address,
            "message for a document this socket has not authenticated; ignored"
        );
        return Ok(None);
    };
    match message {
        Message::Sync(SyncMessage::SyncStep1(client_state)) => {
            let Ok(reply) = joined.session.answer_sync_step1(&client_state) else {
                info!(
                    address,
                    "client holds history of a deleted document; refused"
                );
                return detach_deleted(&address, context, documents);
            };
            send(context.outbox, encode_addressed(&address, &reply))?;
            Ok(None)
        }
        Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
            if joined.access == Access::Read {
                send(context.outbox, encode_sync_status(&address, false))?;
                return Ok(None);
            }
            if !rate.try_acquire(Instant::now()) {
                info!("update rate exceeded; closing so the client re-syncs");
                return Err(Closing::new(
                    close_code::POLICY_VIOLATION,
                    close_reason::UPDATE_RATE,
                ));
            }
            match joined.session.submit_update(update).await {
                Ok(Some(ack)) => Ok(Some((address, ack))),
                Ok(None) => {
                    send(context.outbox, encode_sync_status(&address, true))?;
                    Ok(None)
                }
                Err(SyncError::InvalidUpdate(failure)) => {
                    debug!(error = %failure, "update does not decode");
                    Err(Closing::new(close_code::INVALID_PAYLOAD, "invalid update"))
                }
                Err(SyncError::Deleted) => {
                    info!(
                        address,
                        "update builds on a deleted document's history; refused"
                    );
                    detach_deleted(&address, context, documents)
                }
                Err(_) => Err(Closing::new(
                    close_code::SERVICE_RESTART,
                    "server restarting",
                )),
            }
        }
        Message::Awareness(update) => {
            joined.session.apply_awareness(update);
            Ok(None)
        }
        Message::QueryAwareness => {
            if let Some(awareness) = joined.session.awareness_frame() {
                send(context.outbox, encode_addressed(&address, &awareness))?;
            }
            Ok(None)
        }
        Message::Auth(_) => Ok(None),
        Message::Unknown { tag, .. } => {
            debug!(tag, "unknown hocuspocus message type");
            Err(Closing::new(
                close_code::UNSUPPORTED_DATA,
                "unknown message type",
            ))
        }
    }
}

/// Checks the token for the document at `address` and joins it.
async fn authenticate(
    address: &str,
    token: &str,
    context: &Context<'_>,
    documents: &mut HashMap<String, Joined>,
) -> Result<(), Closing> {
    if documents.contains_key(address) {
        debug!(
            address,
            "token for a document already authenticated; ignored"
        );
        return Ok(());
    }
    // `name\0session`: the document is the name; replies keep the address.
    let doc = address.split('\0').next().unwrap_or(address);
    if doc.is_empty() || doc.len() > MAX_DOC_NAME_BYTES {
        send(
            context.outbox,
            encode_permission_denied(address, "invalid document name"),
        )?;
        return Ok(());
    }
    if documents.len() >= MAX_DOCUMENTS_PER_SOCKET {
        send(
            context.outbox,
            encode_permission_denied(address, "too many documents on one connection"),
        )?;
        return Ok(());
    }
    let token = Some(token).filter(|token| !token.is_empty());
    let access = match context.auth.authorize(token, doc) {
        Ok(access) => access,
        Err(refusal) => {
            info!(doc, status = refusal.status().as_u16(), reason = %refusal, "hocuspocus document refused");
            send(
                context.outbox,
                encode_permission_denied(address, refusal.details()),
            )?;
            return Ok(());
        }
    };
    let (frames, mut receiver) = mpsc::channel(context.config.send_queue_frames);
    let deleted = CancellationToken::new();
    let session = match context
        .registry
        .join(
            doc,
            SessionOutbox {
                frames,
                overflowed: context.overflowed.clone(),
                deleted: deleted.clone(),
            },
        )
        .await
    {
        Ok(session) => session,
        Err(failure) => {
            info!(doc, error = %failure, "join document failed; closing so the client retries");
            return Err(Closing::new(
                close_code::TRY_AGAIN_LATER,
                "document unavailable; retry",
            ));
        }
    };
    send(
        context.outbox,
        encode_authenticated(address, access == Access::Read),
    )?;
    for frame in session.greeting() {
        send(context.outbox, encode_addressed(address, &frame))?;
    }
    // Broadcasts of this document, addressed, into the socket's outbox. A
    // full socket outbox makes this wait, so the document's own outbox
    // fills and trips `overflowed`: the socket is closed, nothing dropped.
    // When the document is deleted, the forwarder tells the client (CLOSE
    // for this address: the provider detaches the document, the socket
    // stays) and has the socket leave the document.
    let outbox = context.outbox.clone();
    let detach = context.detach.clone();
    let prefix = address.to_owned();
    context.forwarders.spawn(async move {
        loop {
            tokio::select! {
                frame = receiver.recv() => {
                    let Some(frame) = frame else { return };
                    if outbox.send(Bytes::from(encode_addressed(&prefix, &frame))).await.is_err() {
                        return;
                    }
                }
                () = deleted.cancelled() => {
                    let close = encode_close(&prefix, close_code::DOCUMENT_DELETED_REASON);
                    if outbox.send(Bytes::from(close)).await.is_ok() {
                        let _socket_may_be_gone = detach.send(prefix).await;
                    }
                    return;
                }
            }
        }
    });
    session.want_stateless();
    info!(doc, session = %session.id(), read_only = access == Access::Read, "hocuspocus document open");
    documents.insert(address.to_owned(), Joined { session, access });
    Ok(())
}

/// Leaves the document at `address` and tells the client with CLOSE: it
/// was deleted, or the client holds its deleted history.
fn detach_deleted(
    address: &str,
    context: &Context<'_>,
    documents: &mut HashMap<String, Joined>,
) -> Result<Option<Ack>, Closing> {
    documents.remove(address);
    send(
        context.outbox,
        encode_close(address, close_code::DOCUMENT_DELETED_REASON),
    )?;
    Ok(None)
}

/// Queues a frame for the client; a full outbox closes the socket.
fn send(outbox: &mpsc::Sender<Bytes>, frame: Vec<u8>) -> Result<(), Closing> {
    if offer(outbox, frame) {
        Ok(())
    } else {
        Err(Closing::new(
            close_code::TRY_AGAIN_LATER,
            close_reason::SEND_QUEUE_FULL,
        ))
    }
}

fn offer(outbox: &mpsc::Sender<Bytes>, frame: Vec<u8>) -> bool {
    outbox.try_send(Bytes::from(frame)).is_ok()
}
