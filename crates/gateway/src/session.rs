//! The socket loop of one y-websocket session.
//!
//! Two halves run in one task. The *reader* decodes client frames and acts
//! on them; the *writer* drains the session's bounded outbox to the socket,
//! pings on a timer, and writes the close frame the reader chose. The loop
//! is generic over `Sink`/`Stream` so tests can drive it without a socket.
//!
//! Every way a session ends has a close code (see [`crate::error::close_code`]):
//! a malformed frame ends only that session and leaves the document
//! untouched; a failed commit or a full send queue ends it so the client
//! reconnects and re-syncs, which is how no update is ever dropped silently.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use futures::future::FusedFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use weft_protocol::{AuthMessage, Message, SyncMessage, decode_frame};
use weft_sync::{Outbound, PublishError, Session, SyncError};

use crate::GatewayConfig;
use crate::auth::Access;
use crate::config::{CLOSE_GRACE, MAX_UPDATES_IN_FLIGHT};
use crate::error::{close_code, close_reason};
use crate::limits::{ConnectionPermit, UpdateRateLimiter};
use crate::metrics::Metrics;

/// Everything a session task needs, gathered before the upgrade.
#[derive(Debug)]
pub struct SessionParts {
    /// The joined document.
    pub session: Session,
    /// What the client may do: a read-only session's updates are ignored.
    pub access: Access,
    /// The session's place in the connection limits, held until it ends.
    pub permit: ConnectionPermit,
    /// Frames for this client (broadcasts and replies), bounded.
    pub outbox: mpsc::Receiver<Outbound>,
    /// Tripped by the document when the outbox overflowed.
    pub overflowed: CancellationToken,
    /// Tripped by the document when it was deleted.
    pub deleted: CancellationToken,
    /// Tripped when the node drains.
    pub stop: CancellationToken,
    /// Limits and timers.
    pub config: Arc<GatewayConfig>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

/// Why a session ended: the close frame to send, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The close code.
    pub code: u16,
    /// A short reason for the client (at most 123 bytes on the wire).
    pub reason: &'static str,
}

impl Closing {
    pub(crate) const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// Serves one upgraded socket until it closes.
pub async fn run_session(socket: WebSocket, parts: SessionParts) {
    let (sink, stream) = socket.split();
    let metrics = parts.metrics.clone();
    metrics.connections.inc();
    let closing = drive(sink, stream, parts).await;
    metrics.connections.dec();
    if let Some(closing) = &closing {
        metrics.closed(closing.code, closing.reason);
    }
    match closing {
        Some(closing) if closing.code != close_code::NORMAL => {
            info!(
                code = closing.code,
                reason = closing.reason,
                "session closed"
            );
        }
        _ => debug!("session closed"),
    }
}

/// Runs reader and writer until the session ends; returns the close sent.
pub async fn drive<W, R>(sink: W, mut stream: R, parts: SessionParts) -> Option<Closing>
where
    W: Sink<WsMessage> + Unpin,
    R: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
{
    let SessionParts {
        session,
        access,
        permit,
        outbox,
        overflowed,
        deleted,
        stop,
        config,
        metrics,
    } = parts;
    let (close_sender, close_receiver) = oneshot::channel();
    let mut greeting = session.greeting();
    if access == Access::Read {
        greeting.push(Bytes::from(
            Message::Auth(AuthMessage::PermissionDenied(READ_ONLY_REASON.to_owned())).encode(),
        ));
    }
    let writer = write_loop(sink, outbox, greeting, close_receiver, &config, &metrics).fuse();
    tokio::pin!(writer);
    let reader = read_loop(
        &mut stream,
        &session,
        access,
        Signals {
            overflowed: &overflowed,
            deleted: &deleted,
            stop: &stop,
        },
        &config,
        &metrics,
    );
    // Reader first: when the document drops a session's outbox (its send
    // queue overflowed), the writer ends too, but the reader knows why
    // (1013), so its answer must win over the writer's "connection lost".
    let closing = tokio::select! {
        biased;
        closing = reader => closing,
        () = &mut writer => Some(Closing::new(close_code::GOING_AWAY, "connection lost")),
    };
    if !writer.is_terminated() {
        let _writer_may_have_ended = close_sender.send(closing.clone());
        // Keep reading (and discarding) while the close frame goes out, until
        // the peer answers it: dropping a socket with unread input makes the
        // kernel reset the connection, and a client still writing (a flood)
        // would then see 1006 instead of our close code.
        let linger = futures::future::join(&mut writer, discard_until_close(&mut stream));
        if tokio::time::timeout(CLOSE_GRACE, linger).await.is_err() {
            debug!("peer did not complete the close handshake in time; dropping the connection");
        }
    }
    drop(permit);
    closing
}

/// What a read-only client is told right after the greeting.
const READ_ONLY_REASON: &str = "read-only: updates from this session are not applied";

/// Reads and drops frames until the peer's close frame or the end of the
/// stream (bounded in time by the caller).
pub(crate) async fn discard_until_close<R>(stream: &mut R)
where
    R: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        if matches!(message, WsMessage::Close(_)) {
            return;
        }
    }
}

/// What ends a session from outside its socket.
struct Signals<'a> {
    /// The document found the session's send queue full.
    overflowed: &'a CancellationToken,
    /// The document was deleted.
    deleted: &'a CancellationToken,
    /// The node drains.
    stop: &'a CancellationToken,
}

async fn read_loop<R>(
    stream: &mut R,
    session: &Session,
    access: Access,
    signals: Signals<'_>,
    config: &GatewayConfig,
    metrics: &Metrics,
) -> Option<Closing>
where
    R: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
{
    let Signals {
        overflowed,
        deleted,
        stop,
    } = signals;
    let mut acks = FuturesUnordered::new();
    let mut deadline = Instant::now() + config.heartbeat_timeout;
    let mut idle_deadline = Instant::now() + config.idle_timeout;
    let mut rate = UpdateRateLimiter::new(config.max_updates_per_second);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                return Some(Closing::new(close_code::SERVICE_RESTART, "server restarting"));
            }
            () = overflowed.cancelled() => {
                return Some(Closing::new(close_code::TRY_AGAIN_LATER, close_reason::SEND_QUEUE_FULL));
            }
            () = deleted.cancelled() => {
                return Some(document_deleted());
            }
            Some(acked) = acks.next(), if !acks.is_empty() => {
                if let Err(failure) = acked {
                    info!(error = %failure, "update not committed; closing so the client re-sends it");
                    return Some(closing_for_publish(&failure));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Some(Closing::new(close_code::GOING_AWAY, "heartbeat timeout"));
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                return Some(Closing::new(close_code::GOING_AWAY, "idle timeout"));
            }
            received = stream.next(), if acks.len() < MAX_UPDATES_IN_FLIGHT => {
                deadline = Instant::now() + config.heartbeat_timeout;
                let message = match received {
                    None => return None,
                    Some(Err(failure)) => return closing_for_read_error(failure),
                    Some(Ok(message)) => message,
                };
                if !matches!(message, WsMessage::Ping(_) | WsMessage::Pong(_)) {
                    idle_deadline = Instant::now() + config.idle_timeout;
                    metrics.messages_received.inc();
                    metrics.bytes_received.inc_by(message_len(&message));
                }
                let policy = Policy { access, rate: &mut rate };
                match handle_message(message, session, policy).await {
                    Handled::Continue => {}
                    Handled::Pending(ack) => {
                        let submitted = Instant::now();
                        let histogram = &metrics.update_commit_seconds;
                        acks.push(ack.wait().inspect(move |outcome| {
                            if outcome.is_ok() {
                                histogram.observe(submitted.elapsed().as_secs_f64());
                            }
                        }));
                    }
                    Handled::Close(closing) => return closing,
                }
            }
        }
    }
}

enum Handled {
    Continue,
    Pending(weft_sync::session::PendingAck),
    Close(Option<Closing>),
}

/// What a session may do, checked per message.
struct Policy<'a> {
    access: Access,
    rate: &'a mut UpdateRateLimiter,
}

async fn handle_message(message: WsMessage, session: &Session, policy: Policy<'_>) -> Handled {
    let frame = match message {
        WsMessage::Binary(frame) => frame,
        WsMessage::Ping(_) | WsMessage::Pong(_) => return Handled::Continue,
        WsMessage::Close(_) => return Handled::Close(None),
        WsMessage::Text(_) => {
            return Handled::Close(Some(Closing::new(
                close_code::UNSUPPORTED_DATA,
                "text frames are not part of the protocol",
            )));
        }
    };
    let decoded = match decode_frame(&frame) {
        Ok(decoded) => decoded,
        Err(failure) => {
            debug!(error = %failure, bytes = frame.len(), "malformed frame");
            return Handled::Close(Some(Closing::new(
                close_code::PROTOCOL_ERROR,
                "malformed message",
            )));
        }
    };
    match decoded {
        Message::Sync(SyncMessage::SyncStep1(client_state)) => {
            match session.answer_sync_step1(&client_state) {
                Ok(frame) => reply(session, frame),
                Err(_) => {
                    info!("client holds history of a deleted document; refused");
                    Handled::Close(Some(document_deleted()))
                }
            }
        }
        Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
            if policy.access == Access::Read {
                debug!(
                    bytes = update.len(),
                    "ignoring an update from a read-only session"
                );
                return Handled::Continue;
            }
            if !policy.rate.try_acquire(Instant::now()) {
                info!("update rate exceeded; closing so the client re-syncs");
                return Handled::Close(Some(Closing::new(
                    close_code::POLICY_VIOLATION,
                    close_reason::UPDATE_RATE,
                )));
            }
            match session.submit_update(update).await {
                Ok(Some(ack)) => Handled::Pending(ack),
                Ok(None) => Handled::Continue,
                Err(SyncError::InvalidUpdate(failure)) => {
                    debug!(error = %failure, "update does not decode");
                    Handled::Close(Some(Closing::new(
                        close_code::INVALID_PAYLOAD,
                        "invalid update",
                    )))
                }
                Err(SyncError::Deleted) => {
                    info!("update builds on a deleted document's history; refused");
                    Handled::Close(Some(document_deleted()))
                }
                Err(_) => Handled::Close(Some(Closing::new(
                    close_code::SERVICE_RESTART,
                    "server restarting",
                ))),
            }
        }
        Message::Awareness(update) => {
            session.apply_awareness(update);
            Handled::Continue
        }
        Message::QueryAwareness => match session.awareness_frame() {
            Some(frame) => reply(session, frame),
            None => Handled::Continue,
        },
        Message::Auth(_) => {
            debug!("ignoring auth message from a client");
            Handled::Continue
        }
        Message::Unknown { tag, .. } => {
            debug!(tag, "unknown message type");
            Handled::Close(Some(Closing::new(
                close_code::UNSUPPORTED_DATA,
                "unknown message type",
            )))
        }
    }
}

/// Queues a reply. Replies share the bounded outbox with broadcasts, so a
/// client that does not read cannot make the server buffer replies either.
fn reply(session: &Session, frame: Outbound) -> Handled {
    if session.send_to_self(frame) {
        Handled::Continue
    } else {
        Handled::Close(Some(Closing::new(
            close_code::TRY_AGAIN_LATER,
            close_reason::SEND_QUEUE_FULL,
        )))
    }
}

/// The close of a session whose document was deleted, or whose client
/// holds a deleted document's history.
pub(crate) const fn document_deleted() -> Closing {
    Closing::new(
        close_code::DOCUMENT_DELETED,
        close_code::DOCUMENT_DELETED_REASON,
    )
}

pub(crate) fn closing_for_publish(failure: &PublishError) -> Closing {
    match failure {
        PublishError::Stopped => Closing::new(close_code::SERVICE_RESTART, "server restarting"),
        PublishError::Failed(_) => {
            Closing::new(close_code::INTERNAL_ERROR, "update could not be stored")
        }
        PublishError::Unavailable => Closing::new(
            close_code::TRY_AGAIN_LATER,
            "update log unavailable; reconnect",
        ),
    }
}

fn closing_for_read_error(failure: axum::Error) -> Option<Closing> {
    let inner = failure.into_inner();
    match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
            Some(Closing::new(close_code::MESSAGE_TOO_BIG, "message too big"))
        }
        Some(tokio_tungstenite::tungstenite::Error::Protocol(_)) => Some(Closing::new(
            close_code::PROTOCOL_ERROR,
            "websocket protocol error",
        )),
        _ => {
            debug!(error = %inner, "connection lost");
            None
        }
    }
}

async fn write_loop<W>(
    mut sink: W,
    mut outbox: mpsc::Receiver<Outbound>,
    greeting: Vec<Outbound>,
    mut close: oneshot::Receiver<Option<Closing>>,
    config: &GatewayConfig,
    metrics: &Metrics,
) where
    W: Sink<WsMessage> + Unpin,
{
    for frame in greeting {
        count_sent(metrics, &frame);
        if sink.feed(WsMessage::Binary(frame)).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(
        Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            closing = &mut close => {
                if let Ok(Some(closing)) = closing {
                    let frame = CloseFrame { code: closing.code, reason: closing.reason.into() };
                    let _peer_may_be_gone = sink.send(WsMessage::Close(Some(frame))).await;
                } else {
                    let _peer_may_be_gone = sink.close().await;
                }
                return;
            }
            frame = outbox.recv() => {
                let Some(frame) = frame else { return };
                if write_batch(&mut sink, &mut outbox, frame, metrics).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes `first` and every frame already queued behind it, then flushes
/// once: under fan-out a slow flush per frame would be the bottleneck.
async fn write_batch<W>(
    sink: &mut W,
    outbox: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
    metrics: &Metrics,
) -> Result<(), W::Error>
where
    W: Sink<WsMessage> + Unpin,
{
    count_sent(metrics, &first);
    sink.feed(WsMessage::Binary(first)).await?;
    while let Ok(frame) = outbox.try_recv() {
        count_sent(metrics, &frame);
        sink.feed(WsMessage::Binary(frame)).await?;
    }
    sink.flush().await
}

fn count_sent(metrics: &Metrics, frame: &Outbound) {
    metrics.messages_sent.inc();
    metrics.bytes_sent.inc_by(frame.len() as u64);
}

/// The payload size of a received message.
fn message_len(message: &WsMessage) -> u64 {
    let len = match message {
        WsMessage::Binary(bytes) | WsMessage::Ping(bytes) | WsMessage::Pong(bytes) => bytes.len(),
        WsMessage::Text(text) => text.len(),
        WsMessage::Close(_) => 0,
    };
    len as u64
}
