//! Per-document forwarding on a Hocuspocus socket (`--cluster-mode
//! ownership`): a document whose partition another node owns is relayed
//! to that owner over an upstream Hocuspocus socket, one per owner per
//! client socket, while the socket's other documents are served here.
//!
//! The edge checks a document's token before it forwards it (as for any
//! document); the owner gets the client's `Authorization`, `Cookie` and
//! `Origin`, the cluster secret and the client's address on the upstream's
//! upgrade, and the client's own auth message for each document, so it
//! checks the token again. Hocuspocus frames begin with their document's
//! address, so the reader sends a forwarded address's frames to its
//! upstream as they are, and the upstream's frames go straight into the
//! socket's one bounded outbox (a full one closes the socket with 1013, as
//! for a document served here). Frames to an upstream wait in a bounded
//! queue ([`UPSTREAM_QUEUE_FRAMES`]); the reader waits for room, so a slow
//! owner slows its client down rather than growing a buffer.
//!
//! An upstream that closes or breaks (the owner moved the partition away
//! with 1012, drained, or went away) closes the whole client socket with
//! 1012: the provider reconnects and each document reaches its owner anew.
//! An owner that cannot be reached within the connect timeout leaves the
//! document to be served here (safe: updates are durable in the log first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{Future, FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, info};
use weft_sync::{FrameSender, QueuedBytes, SessionId};

use crate::close::close_code;
use crate::cluster::{Ownership, Route};
use crate::forward::{ForwardFailure, OwnerSocket, close, connect_owner_at, fell_back};
use crate::metrics::Metrics;

/// Most frames waiting to go to one upstream.
pub(crate) const UPSTREAM_QUEUE_FRAMES: usize = 64;

/// What a Hocuspocus socket needs to forward documents to their owners.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    /// Who owns what, and the cluster secret.
    pub(crate) ownership: Ownership,
    /// The Hocuspocus upgrade's path and query, asked of the owner.
    pub(crate) path: String,
    /// The client's address, for the owner's per-address limits.
    pub(crate) peer: IpAddr,
    /// The upstream socket's limits (the client socket's).
    pub(crate) socket_config: WebSocketConfig,
    /// The node's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

/// Where a document's frames go.
pub(crate) enum Placement {
    /// Served here.
    Here,
    /// Relayed to its owner.
    Forwarded,
    /// The owner refused the client's upstream (its status).
    Refused(u16),
}

/// The socket's end of the client's outbox, for upstream tasks.
#[derive(Debug, Clone)]
pub(crate) struct ClientOutbox {
    pub(crate) frames: FrameSender,
    pub(crate) queued: Arc<QueuedBytes>,
    pub(crate) overflowed: CancellationToken,
}

impl ClientOutbox {
    /// Queues `frame` for the client; `false` (and the socket overflowed)
    /// when the outbox is full.
    fn push(&self, frame: Bytes) -> bool {
        let len = frame.len();
        if !self.queued.try_add(len) {
            self.overflowed.cancel();
            return false;
        }
        if self.frames.try_send(frame).is_err() {
            self.queued.remove(len);
            self.overflowed.cancel();
            return false;
        }
        true
    }
}

/// One upstream socket to an owner; its task closes the owner's socket
/// once this queue is dropped (the client socket ended).
struct Upstream {
    frames: mpsc::Sender<Bytes>,
}

/// The upstreams of one Hocuspocus socket, and which addresses go where.
pub(crate) struct Upstreams {
    /// owner `host:port` -> its upstream.
    owners: HashMap<String, Upstream>,
    /// address -> owner `host:port`.
    routed: HashMap<String, String>,
    /// Tripped when any upstream ends: the client socket closes with 1012.
    ended: CancellationToken,
    /// Its wait, polled by the socket.
    ended_wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// address -> the token its partition's move trips, for documents
    /// served here; cancelled here when the document is left.
    moves: HashMap<String, CancellationToken>,
    /// One future per such document, resolving when it moved (or was left).
    moved: FuturesUnordered<BoxFuture<'static, (String, SessionId)>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        let ended = CancellationToken::new();
        Self {
            owners: HashMap::new(),
            routed: HashMap::new(),
            ended_wait: Box::pin(ended.clone().cancelled_owned()),
            ended,
            moves: HashMap::new(),
            moved: FuturesUnordered::new(),
        }
    }
}

impl Upstreams {
    /// Whether frames for `address` go to an owner.
    pub(crate) fn is_forwarded(&self, address: &str) -> bool {
        self.routed.contains_key(address)
    }

    /// Watches the partition of the document served here at `address`
    /// (session `id`): `moved` is tripped when it moves away.
    pub(crate) fn watch_move(&mut self, address: &str, moved: CancellationToken, id: SessionId) {
        let key = address.to_owned();
        self.moved.push(
            moved
                .clone()
                .cancelled_owned()
                .map(move |()| (key, id))
                .boxed(),
        );
        self.moves.insert(address.to_owned(), moved);
    }

    /// The next watched document whose partition moved, or that was left
    /// (the caller tells them apart by its session).
    pub(crate) fn poll_moved(
        &mut self,
        context: &mut Context<'_>,
    ) -> Poll<Option<(String, SessionId)>> {
        self.moved.poll_next_unpin(context)
    }

    /// Ready once an upstream ended.
    pub(crate) fn poll_ended(&mut self, context: &mut Context<'_>) -> Poll<()> {
        if self.ended.is_cancelled() {
            return Poll::Ready(());
        }
        self.ended_wait.as_mut().poll(context)
    }

    /// The document at `address` was left: stop watching its partition.
    pub(crate) fn left(&mut self, address: &str) {
        if let Some(moved) = self.moves.remove(address) {
            moved.cancel();
        }
    }

    /// How many addresses are forwarded.
    pub(crate) fn len(&self) -> usize {
        self.routed.len()
    }

    /// Places `doc` (at `address`, first frame `auth`): relayed to its
    /// owner over the socket's upstream to it (opened now if need be), or
    /// served here when this node owns it or the owner is unreachable.
    pub(crate) async fn place(
        &mut self,
        forwarder: &Forwarder,
        client_headers: &axum::http::HeaderMap,
        outbox: &ClientOutbox,
        address: &str,
        doc: &str,
        auth: Bytes,
    ) -> Placement {
        let Route::Forward(owner) = forwarder.ownership.route(doc) else {
            return Placement::Here;
        };
        if !self.owners.contains_key(&owner) {
            let connecting = connect_owner_at(
                &owner,
                &forwarder.path,
                client_headers,
                forwarder.peer,
                forwarder.ownership.secret(),
                forwarder.socket_config,
            );
            match connecting.await {
                Ok(socket) => {
                    info!(
                        owner,
                        doc, "hocuspocus upstream to the document's owner open"
                    );
                    let upstream = self.open(socket, outbox, &forwarder.metrics);
                    self.owners.insert(owner.clone(), upstream);
                }
                Err(ForwardFailure::Refused(status)) => {
                    info!(
                        owner,
                        doc,
                        status = status.as_u16(),
                        "the owner refused the hocuspocus upstream"
                    );
                    return Placement::Refused(status.as_u16());
                }
                Err(ForwardFailure::Unreachable(reason)) => {
                    fell_back(&owner, &reason, &forwarder.metrics);
                    return Placement::Here;
                }
            }
        }
        self.routed.insert(address.to_owned(), owner);
        if self.relay(address, auth).await {
            Placement::Forwarded
        } else {
            self.routed.remove(address);
            Placement::Here
        }
    }

    /// Sends a client frame for a forwarded `address` to its owner, waiting
    /// for room in the upstream's queue; `false` when the upstream is gone
    /// (the socket then closes through [`Upstreams::ended`]).
    pub(crate) async fn relay(&mut self, address: &str, frame: Bytes) -> bool {
        let Some(upstream) = self
            .routed
            .get(address)
            .and_then(|owner| self.owners.get(owner))
        else {
            return false;
        };
        if upstream.frames.send(frame).await.is_err() {
            self.ended.cancel();
            return false;
        }
        true
    }

    /// The client detached a forwarded `address` (after its close message
    /// was relayed).
    pub(crate) fn forget(&mut self, address: &str) {
        self.routed.remove(address);
    }

    fn open(&self, socket: OwnerSocket, outbox: &ClientOutbox, metrics: &Arc<Metrics>) -> Upstream {
        let (frames, receiver) = mpsc::channel(UPSTREAM_QUEUE_FRAMES);
        tokio::spawn(run_upstream(
            socket,
            receiver,
            outbox.clone(),
            self.ended.clone(),
            metrics.clone(),
        ));
        Upstream { frames }
    }
}

/// Relays one upstream until the client socket drops its queue, the owner
/// closes, or the client's outbox overflows.
async fn run_upstream(
    socket: OwnerSocket,
    mut from_client: mpsc::Receiver<Bytes>,
    outbox: ClientOutbox,
    ended: CancellationToken,
    metrics: Arc<Metrics>,
) {
    metrics.forwards.inc();
    metrics.forwarded_sessions.inc();
    let (mut owner_sink, mut owner_stream) = socket.split();
    loop {
        tokio::select! {
            frame = from_client.recv() => {
                let Some(frame) = frame else {
                    let closing = owner_sink.send(close(close_code::NORMAL, "client gone"));
                    let _sent = tokio::time::timeout(crate::config::CLOSE_GRACE, closing).await;
                    break;
                };
                metrics.forwarded_bytes.inc_by(frame.len() as u64);
                if owner_sink.send(WsMessage::Binary(frame)).await.is_err() {
                    ended.cancel();
                    break;
                }
            }
            from_owner = owner_stream.next() => match from_owner {
                Some(Ok(WsMessage::Binary(frame))) => {
                    metrics.forwarded_bytes.inc_by(frame.len() as u64);
                    if !outbox.push(frame) {
                        let _sent = owner_sink.send(close(close_code::NORMAL, "client too slow")).await;
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    debug!(?frame, "the owner closed a hocuspocus upstream");
                    ended.cancel();
                    break;
                }
                Some(Ok(_other)) => {}
                Some(Err(_)) | None => {
                    ended.cancel();
                    break;
                }
            },
        }
    }
    let _closed = tokio::time::timeout(crate::config::CLOSE_GRACE, owner_sink.close()).await;
    metrics.forwarded_sessions.dec();
}
