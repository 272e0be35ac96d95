//! The reading half of a socket: decodes client frames with the socket's
//! wire protocol and acts on them, and ends the socket with the reason why.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};
use tracing::{debug, info};
use weft_sync::{AckWindow, LogSeq, PublishError, SyncError};

use super::documents::{Documents, Gone};
use super::wire::{Addressed, Inbound, Outgoing, Wire};
use crate::auth::Access;
use crate::close::CloseReason;
use crate::config::{GatewayConfig, MAX_UPDATES_IN_FLIGHT};
use crate::error::FailureAnswer;
use crate::limits::UpdateRateLimiter;
use crate::live::{RevocationList, unix_now};
use crate::metrics::Metrics;

/// An address and whether its update became durable.
type AckOutcome = (String, Result<LogSeq, PublishError>);

/// The acknowledgements a socket waits for, in any order.
type Acks = FuturesUnordered<BoxFuture<'static, AckOutcome>>;

/// What the reader works with.
pub(super) struct Reader<'a, W> {
    pub(super) wire: &'a W,
    pub(super) documents: &'a mut Documents,
    pub(super) config: &'a GatewayConfig,
    pub(super) metrics: &'a Metrics,
}

impl<W: Wire> Reader<'_, W> {
    /// Reads until the socket must close; `None` when the peer closed or
    /// the connection dropped.
    pub(super) async fn read_loop<R>(
        mut self,
        stream: &mut R,
        overflowed: &CancellationToken,
        stop: &CancellationToken,
        mut revocations: watch::Receiver<Arc<RevocationList>>,
    ) -> Option<CloseReason>
    where
        R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        // Made on the first acknowledged update (Hocuspocus): an empty set
        // still allocates its queue, and every idle session would hold it.
        let mut acks: Option<Acks> = None;
        // A protocol that tells its client nothing of a durable update
        // (y-websocket) submits through a window: acknowledgements wake
        // this task only when one fails. Made on the first update: a
        // session that only reads never needs one.
        let mut window: Option<Arc<AckWindow>> = None;
        let mut rate = UpdateRateLimiter::new(self.config.max_updates_per_second);
        let started = Instant::now();
        let mut heartbeat_deadline = started + self.config.heartbeat_timeout;
        let mut idle_deadline = started + self.config.idle_timeout;
        // One timer for both deadlines, armed at the earlier. A frame only
        // moves the deadlines (two plain `Instant`s); when the timer fires
        // before either has passed, it is re-armed. A timer per deadline
        // made afresh on each turn of the loop cost two registrations with
        // the runtime's timer wheel, and two removals, per frame.
        let timer = tokio::time::sleep_until(heartbeat_deadline.min(idle_deadline));
        tokio::pin!(timer);
        // One more timer for the earliest token expiry of the socket's
        // sessions, re-armed only when a document comes, goes or gets a new
        // token.
        let first_expiry = self.documents.earliest_expiry();
        let mut expiring = first_expiry.is_some();
        let _ = self.documents.take_tokens_changed();
        // Boxed: every idle session's task holds its timers.
        let mut expiry_timer = Box::pin(tokio::time::sleep_until(first_expiry.unwrap_or(started)));
        // The list a socket started with may already hold revocations made
        // since its upgrade was checked.
        revocations.mark_changed();
        // In one reused box, not in the task: every idle session holds it.
        let mut revocation_changes = ReusableBoxFuture::new(next_change(revocations));
        let mut watching = true;
        loop {
            let outcome = tokio::select! {
                biased;
                () = stop.cancelled() => Err(CloseReason::ServerRestarting),
                () = overflowed.cancelled() => Err(CloseReason::SendQueueFull),
                () = &mut expiry_timer, if expiring => {
                    info!("token expired; closing so the client reconnects with a fresh one");
                    Err(CloseReason::TokenExpired)
                }
                (changed, mut revocations) = &mut revocation_changes, if watching => match changed {
                    Ok(()) => {
                        let list = revocations.borrow_and_update().clone();
                        revocation_changes.set(next_change(revocations));
                        self.revise(&list)
                    }
                    Err(_) => {
                        // The node's list is gone (shutting down): nothing
                        // more will change.
                        watching = false;
                        Ok(())
                    }
                },
                (address, gone) = self.documents.next_gone() => match gone {
                    Gone::Deleted => {
                        info!(address, "document deleted");
                        self.deleted(&address)
                    }
                    Gone::UpstreamEnded => {
                        info!("an upstream to a document's owner ended; closing so the client reconnects");
                        Err(CloseReason::ServerRestarting)
                    }
                    Gone::Moved => {
                        info!(address, "document moved to another node; closing so the client reconnects");
                        Err(CloseReason::ServerRestarting)
                    }
                },
                failure = window_failed(window.as_deref()), if window.is_some() => {
                    info!(error = %failure, "update not committed; closing so the client re-sends it");
                    Err(FailureAnswer::publish(&failure).close)
                }
                () = window_room(window.as_deref()), if !has_room(window.as_deref()) => Ok(()),
                Some((address, acked)) = next_ack(&mut acks), if acks.as_ref().is_some_and(|acks| !acks.is_empty()) => match acked {
                    Ok(_) => self.documents.send(self.wire.encode(&address, Outgoing::SyncStatus(true))),
                    Err(failure) => {
                        info!(error = %failure, "update not committed; closing so the client re-sends it");
                        Err(FailureAnswer::publish(&failure).close)
                    }
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= heartbeat_deadline {
                        Err(CloseReason::HeartbeatTimeout)
                    } else if now >= idle_deadline {
                        Err(CloseReason::IdleTimeout)
                    } else {
                        timer.as_mut().reset(heartbeat_deadline.min(idle_deadline));
                        Ok(())
                    }
                }
                received = stream.next(), if acks.as_ref().map_or(0, Acks::len) < MAX_UPDATES_IN_FLIGHT && has_room(window.as_deref()) => {
                    let now = Instant::now();
                    heartbeat_deadline = now + self.config.heartbeat_timeout;
                    let frame = match received {
                        None => return None,
                        Some(Err(failure)) => return close_for_read_error(failure),
                        Some(Ok(WsMessage::Binary(frame))) => frame,
                        // A raw frame is never read (tungstenite reassembles).
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                        Some(Ok(WsMessage::Close(_))) => return None,
                        Some(Ok(WsMessage::Text(_))) => return Some(CloseReason::TextFrame),
                    };
                    idle_deadline = now + self.config.idle_timeout;
                    self.metrics.messages_received.inc();
                    self.metrics.bytes_received.inc_by(frame.len() as u64);
                    match self.wire.decode(&frame) {
                        // Boxed: only a socket forwarding documents takes
                        // this path, and every idle session holds the loop.
                        Ok(message) if self.for_upstream(&message) => Box::pin(self.upstream(message, frame)).await,
                        Ok(message) => self.handle(message, &mut rate, &mut acks, &mut window).await,
                        Err(reason) => Err(reason),
                    }
                }
            };
            if let Err(reason) = outcome {
                return Some(reason);
            }
            if self.documents.take_tokens_changed() {
                let expiry = self.documents.earliest_expiry();
                expiring = expiry.is_some();
                if let Some(deadline) = expiry {
                    expiry_timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Applies the node's revocations to every session of the socket: one
    /// that keeps no access closes the socket with 4403 (a one-document
    /// socket) or is detached with `PermissionDenied` (Hocuspocus: the
    /// socket's other documents stay); one left read-only is told so.
    fn revise(&mut self, list: &RevocationList) -> Result<(), CloseReason> {
        if list.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        let mut revoked = Vec::new();
        let mut downgraded = Vec::new();
        for (address, joined) in self.documents.iter_mut() {
            match joined.grant().revised(list, &joined.doc, now) {
                None => revoked.push(address.clone()),
                Some(access) if access < joined.access => {
                    joined.access = access;
                    downgraded.push(address.clone());
                }
                Some(_) => {}
            }
        }
        for address in downgraded {
            info!(address, "access revoked down to read-only");
            self.reply(&address, Outgoing::Scope(Access::Read))?;
        }
        for address in revoked {
            info!(address, "access revoked");
            if !W::MULTIPLEXED {
                return Err(CloseReason::AccessRevoked);
            }
            self.documents.remove(&address);
            self.reply(
                &address,
                Outgoing::PermissionDenied(CloseReason::AccessRevoked.reason()),
            )?;
        }
        Ok(())
    }

    /// Whether `message` goes to (or may open) an upstream to its
    /// document's owner: one for a forwarded address, or the token of a
    /// document not held yet on a socket that forwards (`upstream.rs`).
    fn for_upstream(&self, message: &Addressed) -> bool {
        if !W::MULTIPLEXED {
            return false;
        }
        let forwarded = self
            .documents
            .upstreams
            .as_ref()
            .is_some_and(|upstreams| upstreams.is_forwarded(&message.address));
        forwarded
            || (matches!(message.inbound, Inbound::Token(_))
                && self.documents.get(&message.address).is_none()
                && self
                    .wire
                    .joiner()
                    .is_some_and(|joiner| joiner.forwarder.is_some()))
    }

    /// A message for [`Reader::for_upstream`]: relayed to the owner as it
    /// came (`frame`; tokens refreshed in band included), or the token that
    /// joins its document, here or at its owner.
    async fn upstream(
        &mut self,
        message: Addressed,
        frame: bytes::Bytes,
    ) -> Result<(), CloseReason> {
        let Addressed { address, inbound } = message;
        if let Some(upstreams) = self
            .documents
            .upstreams
            .as_deref_mut()
            .filter(|upstreams| upstreams.is_forwarded(&address))
        {
            let leave = matches!(inbound, Inbound::Leave);
            if !upstreams.relay(&address, frame).await {
                return Err(CloseReason::ServerRestarting);
            }
            if leave {
                upstreams.forget(&address);
            }
            return Ok(());
        }
        match (inbound, self.wire.joiner()) {
            (Inbound::Token(token), Some(joiner)) => {
                self.documents
                    .join(self.wire, joiner, &address, &token, Some(frame))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Acts on one client message.
    async fn handle(
        &mut self,
        message: Addressed,
        rate: &mut UpdateRateLimiter,
        acks: &mut Option<Acks>,
        window: &mut Option<Arc<AckWindow>>,
    ) -> Result<(), CloseReason> {
        let Addressed { address, inbound } = message;
        let inbound = match inbound {
            Inbound::Ignored => return Ok(()),
            Inbound::Ping => return self.documents.send(self.wire.encode("", Outgoing::Pong)),
            Inbound::Leave => {
                self.documents.remove(&address);
                return Ok(());
            }
            Inbound::Token(token) => {
                let Some(joiner) = self.wire.joiner() else {
                    return Ok(());
                };
                // Boxed: a join (loading the document) is a large future, and
                // an unboxed one would be held by every idle session's task.
                return Box::pin(
                    self.documents
                        .join(self.wire, joiner, &address, &token, None),
                )
                .await;
            }
            other => other,
        };
        let Some(joined) = self.documents.get(&address) else {
            debug!(
                address,
                "message for a document this socket has not authenticated; ignored"
            );
            return Ok(());
        };
        match inbound {
            Inbound::SyncStep1(client_state) => {
                match joined.session.answer_sync_step1(&client_state) {
                    Ok(reply) => self.reply(&address, Outgoing::Document(reply)),
                    Err(_) => {
                        info!(
                            address,
                            "client holds history of a deleted document; refused"
                        );
                        self.deleted(&address)
                    }
                }
            }
            Inbound::Update(update) => {
                if joined.access == Access::Read && !W::ACKNOWLEDGES {
                    // A read-only update is never applied, and this
                    // protocol has no answer to give: dropped unread.
                    debug!(
                        bytes = update.len(),
                        "update from a read-only session not applied"
                    );
                    return Ok(());
                }
                if !rate.try_acquire(Instant::now()) {
                    info!("update rate exceeded; closing so the client re-syncs");
                    return Err(CloseReason::UpdateRate);
                }
                if joined.access == Access::Read {
                    // Never applied. Answered as Hocuspocus answers a
                    // read-only client: synced if the document holds it
                    // all already (the SyncStep2 every provider sends on
                    // joining, else its unsynced count never returns to
                    // 0), not applied if it brings anything new. Rate
                    // limited like a write: the check decodes the update
                    // and reads the document.
                    let held = match joined.session.holds_update(&update) {
                        Ok(held) => held,
                        Err(failure) => return self.refused(&address, failure),
                    };
                    debug!(
                        bytes = update.len(),
                        held, "update from a read-only session not applied"
                    );
                    return self.reply(&address, Outgoing::SyncStatus(held));
                }
                if !W::ACKNOWLEDGES {
                    let window = window.get_or_insert_with(|| {
                        AckWindow::new(
                            MAX_UPDATES_IN_FLIGHT,
                            self.metrics.update_commit_seconds.clone(),
                        )
                    });
                    // Boxed for the same reason as a join: one allocation
                    // per update instead of its future's bytes in every
                    // session.
                    return match Box::pin(joined.session.submit_update_to(update, window)).await {
                        Ok(_submitted) => Ok(()),
                        Err(failure) => self.refused(&address, failure),
                    };
                }
                match Box::pin(joined.session.submit_update(update)).await {
                    Ok(Some(ack)) => {
                        let submitted = Instant::now();
                        let histogram = self.metrics.update_commit_seconds.clone();
                        acks.get_or_insert_with(Acks::new).push(
                            async move {
                                let outcome = ack.wait().await;
                                if outcome.is_ok() {
                                    histogram.observe(submitted.elapsed().as_secs_f64());
                                }
                                (address, outcome)
                            }
                            .boxed(),
                        );
                        Ok(())
                    }
                    Ok(None) => self.reply(&address, Outgoing::SyncStatus(true)),
                    Err(failure) => self.refused(&address, failure),
                }
            }
            Inbound::Awareness(update) => {
                joined.session.apply_awareness(update);
                Ok(())
            }
            Inbound::QueryAwareness => match joined.session.awareness_frame() {
                Some(frame) => self.reply(&address, Outgoing::Document(frame)),
                None => Ok(()),
            },
            Inbound::Stateless(payload) => {
                joined.session.relay_stateless(&payload);
                Ok(())
            }
            Inbound::Token(_) | Inbound::Leave | Inbound::Ping | Inbound::Ignored => Ok(()),
        }
    }

    /// An update the door refused: a deleted document's history detaches
    /// (or closes), anything else closes the socket.
    fn refused(&mut self, address: &str, failure: SyncError) -> Result<(), CloseReason> {
        if matches!(failure, SyncError::Deleted) {
            info!(
                address,
                "update builds on a deleted document's history; refused"
            );
            return self.deleted(address);
        }
        debug!(error = %failure, "update refused");
        Err(FailureAnswer::sync(&failure).close)
    }

    /// Queues a reply. Replies share the bounded outbox with broadcasts, so a
    /// client that does not read cannot make the server buffer replies either.
    fn reply(&self, address: &str, message: Outgoing<'_>) -> Result<(), CloseReason> {
        self.documents.send(self.wire.encode(address, message))
    }

    /// The document at `address` was deleted, or the client holds its
    /// deleted history: a multiplexed socket leaves it and tells the client
    /// (CLOSE for that address, the socket stays); a one-document socket
    /// closes with 4410.
    fn deleted(&mut self, address: &str) -> Result<(), CloseReason> {
        if !W::MULTIPLEXED {
            return Err(CloseReason::DocumentDeleted);
        }
        self.documents.remove(address);
        let reason = CloseReason::DocumentDeleted.reason();
        self.reply(address, Outgoing::Detached(reason))
    }
}

/// The next acknowledgement; never without a set. (`select!` makes every
/// branch's future, enabled or not, so the set is not made here.)
async fn next_ack(acks: &mut Option<Acks>) -> Option<AckOutcome> {
    match acks {
        Some(acks) => acks.next().await,
        None => std::future::pending().await,
    }
}

/// Whether `window` (if any) takes another update now.
fn has_room(window: Option<&AckWindow>) -> bool {
    window.is_none_or(AckWindow::has_room)
}

/// Resolves once `window` takes another update; never without a window.
async fn window_room(window: Option<&AckWindow>) {
    match window {
        Some(window) => window.room().await,
        None => std::future::pending().await,
    }
}

/// Resolves with the first failure of an update in `window`; never
/// without a window.
async fn window_failed(window: Option<&AckWindow>) -> PublishError {
    match window {
        Some(window) => window.failed().await,
        None => std::future::pending().await,
    }
}

/// The next change of the node's revocations, and the receiver back.
async fn next_change(
    mut revocations: watch::Receiver<Arc<RevocationList>>,
) -> (
    Result<(), watch::error::RecvError>,
    watch::Receiver<Arc<RevocationList>>,
) {
    let changed = revocations.changed().await;
    (changed, revocations)
}

/// The close for a socket that failed to read: too big a message, or a
/// WebSocket protocol violation; any other failure is a lost connection.
fn close_for_read_error(failure: WsError) -> Option<CloseReason> {
    match failure {
        WsError::Capacity(_) => Some(CloseReason::MessageTooBig),
        WsError::Protocol(_) => Some(CloseReason::WebSocketProtocol),
        other => {
            debug!(error = %other, "connection lost");
            None
        }
    }
}
