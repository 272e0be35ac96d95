//! The socket loop, one for both wire protocols.
//!
//! Two halves run in one task, each with its own waker (`halves.rs`), so a
//! frame queued for the client polls the writer alone. The *reader* (`reader.rs`) decodes client
//! frames with the socket's `Wire` (`wire.rs`) and acts on them; the
//! *writer* (`writer.rs`) drains the socket's bounded outbox, pings on a
//! timer, and writes the close frame the reader chose. Heartbeats, the idle
//! timeout, the update rate, acknowledgements, the message size and the
//! close are the same code for y-websocket (`ywebsocket.rs`) and Hocuspocus
//! (`hocuspocus.rs`) sockets; only the codec differs. The documents a
//! socket holds, and its one outbox, are in `documents.rs`; a Hocuspocus
//! socket's documents that other nodes own (`--cluster-mode ownership`)
//! are relayed to them over upstreams (`upstream.rs`).
//!
//! The loop (`drive`) is generic over a `Stream` of inbound WebSocket
//! messages and a `Sink` of outbound ones, so tests drive it through
//! channels (`tests.rs`); a tokio-tungstenite `WebSocketStream` over the
//! upgraded connection is one instance (`run`).
//!
//! Every way a socket ends has a [`CloseReason`]: a malformed frame ends
//! only that socket and leaves its documents untouched; a failed commit or
//! a full send queue ends it so the client reconnects and re-syncs, which
//! is how no update is ever dropped silently.

mod documents;
mod halves;
mod hocuspocus;
mod reader;
mod upstream;
mod wire;
mod writer;
mod ywebsocket;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures::future::FusedFuture;
use futures::{FutureExt, Sink, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub(crate) use self::documents::{Joined, SocketOutbox};
use self::halves::Half;
pub(crate) use self::hocuspocus::Hocuspocus;
pub(crate) use self::upstream::Forwarder;
pub(crate) use self::wire::{Joiner, MoveWatch, Wire};
pub(crate) use self::ywebsocket::YWebsocket;
use crate::close::CloseReason;
use crate::config::{CLOSE_GRACE, GatewayConfig};
use crate::limits::ConnectionPermit;
use crate::live::RevocationList;
use crate::metrics::Metrics;

/// Everything a socket task needs, gathered before the upgrade.
#[derive(Debug)]
pub(crate) struct SocketParts<W> {
    /// The wire protocol.
    pub(crate) wire: W,
    /// The document joined before the upgrade (y-websocket), at address `""`.
    pub(crate) joined: Option<Joined>,
    /// The socket's outbox (the joined document writes into it).
    pub(crate) outbox: SocketOutbox,
    /// The socket's place in the connection limits, held until it ends.
    pub(crate) permit: ConnectionPermit,
    /// Tripped when the node drains.
    pub(crate) stop: CancellationToken,
    /// Limits and timers.
    pub(crate) config: Arc<GatewayConfig>,
    /// The node's metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The node's revocations, as they change.
    pub(crate) revocations: watch::Receiver<Arc<RevocationList>>,
}

/// Serves one upgraded socket until it closes.
///
/// Not an `async fn`: the socket is split and the session's future made
/// here, so the future this returns holds the socket and its parts once
/// (inside `drive`'s future), not a second time as its own arguments. The
/// session's task lives as long as the session: every byte of it is idle
/// memory. The connection counts from here (the caller runs it at once).
pub(crate) fn run<W, T>(
    socket: WebSocketStream<T>,
    parts: SocketParts<W>,
) -> impl Future<Output = ()> + use<W, T>
where
    W: Wire,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (sink, stream) = socket.split();
    let metrics = parts.metrics.clone();
    metrics.connections.inc();
    // `map`, not an `async` block awaiting `drive`: a block would hold the
    // session's future twice (as the block's capture and as the future
    // it awaits).
    drive(sink, stream, parts).map(move |closing| {
        metrics.connections.dec();
        closed(closing, W::NAME, &metrics);
    })
}

/// Counts and logs how a session ended.
fn closed(closing: Option<CloseReason>, protocol: &'static str, metrics: &Metrics) {
    match closing {
        Some(reason) => {
            metrics.closed(reason);
            info!(
                code = reason.code(),
                reason = reason.reason(),
                protocol,
                "session closed"
            );
        }
        None => debug!(protocol, "session closed by the peer"),
    }
}

/// Runs reader and writer until the socket ends; returns the close the
/// server sent (`None`: the peer closed, or the connection dropped).
///
/// Not an `async fn`, for the same reason as [`run`]: the parts are taken
/// apart before the future is made, so it holds each piece once instead
/// of the parts as its argument and the pieces again.
pub(crate) fn drive<W, S, R>(
    sink: S,
    mut stream: R,
    parts: SocketParts<W>,
) -> impl Future<Output = Option<CloseReason>> + use<W, S, R>
where
    W: Wire,
    S: Sink<WsMessage> + Unpin,
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    let SocketParts {
        wire,
        joined,
        outbox,
        permit,
        stop,
        config,
        metrics,
        revocations,
    } = parts;
    let mut documents = documents::Documents::new(&outbox);
    let greeting = match joined {
        Some(joined) => {
            let greeting = wire.greeting("", joined.access, joined.session.greeting());
            documents.insert(String::new(), joined);
            greeting
        }
        None => Vec::new(),
    };
    let SocketOutbox {
        receiver,
        queued,
        overflowed,
        ..
    } = outbox;
    async move {
        let (close_sender, close_receiver) = oneshot::channel();
        let writer = writer::write_loop(
            sink,
            receiver,
            &queued,
            greeting,
            close_receiver,
            &config,
            &metrics,
        )
        .fuse();
        tokio::pin!(writer);
        let closing = {
            let reader = reader::Reader {
                wire: &wire,
                documents: &mut documents,
                config: &config,
                metrics: &metrics,
            }
            .read_loop(&mut stream, &overflowed, &stop, revocations);
            tokio::pin!(reader);
            // Each half is polled only when its own waker fired (`halves.rs`):
            // a frame queued for the client polls the writer alone. When both
            // are due the reader goes first: when the socket's outbox
            // overflows the writer may end too, but the reader knows why (1013).
            match halves::first_of(reader, writer.as_mut()).await {
                Half::Reader(closing) => closing,
                Half::Writer => Some(CloseReason::ConnectionLost),
            }
        };
        documents.leave_all();
        if !writer.is_terminated() {
            let _writer_may_have_ended = close_sender.send(closing);
            // Keep reading (and discarding) while the close frame goes out, until
            // the peer answers it: dropping a socket with unread input makes the
            // kernel reset the connection, and a client still writing (a flood)
            // would then see 1006 instead of our close code.
            let linger = futures::future::join(&mut writer, discard_until_close(&mut stream));
            if tokio::time::timeout(CLOSE_GRACE, linger).await.is_err() {
                debug!(
                    "peer did not complete the close handshake in time; dropping the connection"
                );
            }
        }
        drop(permit);
        closing
    }
}

/// Reads and drops frames until the peer's close frame or the end of the
/// stream (bounded in time by the caller).
async fn discard_until_close<R>(stream: &mut R)
where
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        if matches!(message, WsMessage::Close(_)) {
            return;
        }
    }
}
