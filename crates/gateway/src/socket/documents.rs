//! The documents one socket holds, and the socket's one bounded outbox.
//!
//! A y-websocket socket holds one document, joined before the upgrade
//! straight onto the socket's outbox. A Hocuspocus socket joins documents
//! as their tokens arrive, each straight onto the socket's outbox too, with
//! the document's address as its outbox's prefix: the document puts the
//! address in front of each frame, building an addressed frame once per
//! broadcast and sharing it between the sessions with that address (sync
//! and awareness messages are the same bytes in both protocols). So a
//! delivery is one queued `Bytes` and one wake-up of the socket's writer,
//! whatever the protocol. All of a socket's documents count against one
//! bound in frames (the outbox's capacity) and one in bytes
//! (`--send-queue-bytes`). A full outbox, in frames or in bytes, trips the
//! socket's `overflowed` token: the socket is closed (1013) and the client
//! re-syncs, so nothing is ever dropped while it stays open.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;
use weft_sync::{
    FrameReceiver, FrameSender, Outbound, QueuedBytes, Session, SessionId, SessionOutbox,
    outbox_channel,
};

use super::upstream::{ClientOutbox, Placement, Upstreams};
use super::wire::{Joiner, Outgoing, Wire};
use crate::auth::Access;
use crate::close::CloseReason;
use crate::config::MAX_DOC_NAME_BYTES;
use crate::error::FailureAnswer;
use crate::live::{SessionGrant, TokenFacts, unix_now};

/// Most documents one Hocuspocus socket may hold at once.
pub(crate) const MAX_DOCUMENTS_PER_SOCKET: usize = 256;

/// The socket's outbox and overflow signal, made before any document is
/// joined so the first one (y-websocket) can be joined straight onto it.
#[derive(Debug)]
pub(crate) struct SocketOutbox {
    /// Frames to the client. Documents (or their forwarders) and replies
    /// share it, so a client that does not read cannot make the server
    /// buffer either.
    pub(crate) frames: FrameSender,
    /// The writer's end.
    pub(crate) receiver: FrameReceiver,
    /// The bytes queued for the client and not yet written, over every
    /// outbox of the socket.
    pub(crate) queued: Arc<QueuedBytes>,
    /// Tripped by a document that found the client's queue full.
    pub(crate) overflowed: CancellationToken,
}

impl SocketOutbox {
    /// An outbox of `capacity` frames and `capacity_bytes` bytes.
    pub(crate) fn new(capacity: usize, capacity_bytes: usize) -> Self {
        let (frames, receiver) = outbox_channel(capacity);
        Self {
            frames,
            receiver,
            queued: QueuedBytes::new(capacity_bytes),
            overflowed: CancellationToken::new(),
        }
    }

    /// The sending half a document joined straight onto this socket uses,
    /// with the token the document trips when it is deleted.
    pub(crate) fn direct(&self, deleted: CancellationToken) -> SessionOutbox {
        SessionOutbox {
            frames: self.frames.clone(),
            queued: self.queued.clone(),
            overflowed: self.overflowed.clone(),
            deleted,
            prefix: Bytes::new(),
        }
    }
}

/// A document the socket holds.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The document's name.
    pub(crate) doc: Box<str>,
    /// The session on the document.
    pub(crate) session: Session,
    /// What the client may do with it (narrowed by revocations and
    /// refreshed tokens).
    pub(crate) access: Access,
    /// The token that granted it; `None` without authentication.
    pub(crate) token: Option<Arc<TokenFacts>>,
    /// Tripped by the document when it is deleted.
    pub(crate) deleted: CancellationToken,
}

impl Joined {
    /// The grant the session holds now.
    pub(crate) fn grant(&self) -> SessionGrant {
        SessionGrant {
            access: self.access,
            token: self.token.clone(),
        }
    }
}

/// Why a document left the socket by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// It was deleted.
    Deleted,
    /// Its partition moved to another node (`--cluster-mode ownership`).
    Moved,
    /// An upstream to an owner ended (the address is empty).
    UpstreamEnded,
}

/// Resolves with a document's address and session once it is deleted.
type Deletion = BoxFuture<'static, (String, SessionId)>;

/// Every document of one socket, by address.
pub(crate) struct Documents {
    /// Boxed: a map's first insert makes room for 3 entries, and most
    /// sockets hold one document; a pointer per slot costs less than a
    /// `Joined` per slot in every idle session.
    joined: HashMap<String, Box<Joined>>,
    /// The socket's outbox.
    frames: FrameSender,
    /// The bytes queued over all of the socket's outboxes.
    queued: Arc<QueuedBytes>,
    overflowed: CancellationToken,
    /// One future per joined document, resolving when it is deleted.
    deletions: FuturesUnordered<Deletion>,
    /// Set when a document came, went or got a new token: the socket's
    /// expiry timer must be re-armed.
    tokens_changed: bool,
    /// `--cluster-mode ownership` on a Hocuspocus socket: documents relayed
    /// to their owners, and moves of those served here (`upstream.rs`).
    /// Made on first use: a y-websocket session never needs it, and every
    /// idle session holds this struct.
    pub(crate) upstreams: Option<Box<Upstreams>>,
}

impl Documents {
    pub(crate) fn new(outbox: &SocketOutbox) -> Self {
        Self {
            joined: HashMap::new(),
            frames: outbox.frames.clone(),
            queued: outbox.queued.clone(),
            overflowed: outbox.overflowed.clone(),
            deletions: FuturesUnordered::new(),
            tokens_changed: false,
            upstreams: None,
        }
    }

    /// Holds `joined` at `address`.
    pub(crate) fn insert(&mut self, address: String, joined: Joined) {
        let id = joined.session.id();
        let deleted = joined.deleted.clone().cancelled_owned();
        let key = address.clone();
        self.deletions
            .push(deleted.map(move |()| (key, id)).boxed());
        self.joined.insert(address, Box::new(joined));
        self.tokens_changed = true;
    }

    pub(crate) fn get(&self, address: &str) -> Option<&Joined> {
        self.joined.get(address).map(Box::as_ref)
    }

    /// Every document held, by address.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Joined)> {
        self.joined
            .iter_mut()
            .map(|(address, joined)| (address, &mut **joined))
    }

    /// Whether the socket's earliest token expiry may have moved since the
    /// last call.
    pub(crate) fn take_tokens_changed(&mut self) -> bool {
        std::mem::take(&mut self.tokens_changed)
    }

    /// When the first of the socket's tokens expires (plus the leeway), as
    /// a timer deadline; `None` if no session has a token.
    pub(crate) fn earliest_expiry(&self) -> Option<Instant> {
        let now = unix_now();
        let remaining = self
            .joined
            .values()
            .filter_map(|joined| joined.token.as_ref())
            .map(|token| token.remaining(now))
            .min()?;
        Some(Instant::now() + remaining)
    }

    /// Leaves the document at `address`. Its deletion future is resolved
    /// (and then dropped as stale), so a client that joins and leaves in a
    /// loop does not grow the socket's set of futures.
    pub(crate) fn remove(&mut self, address: &str) {
        if let Some(joined) = self.joined.remove(address) {
            joined.deleted.cancel();
            self.tokens_changed = true;
        }
        if let Some(upstreams) = &mut self.upstreams {
            upstreams.left(address);
        }
    }

    /// The next document this socket still holds that was deleted, or
    /// whose partition moved to another node, and which of the two.
    pub(crate) async fn next_gone(&mut self) -> (String, Gone) {
        // By hand rather than `select!`: every idle session holds this
        // future.
        std::future::poll_fn(|context| self.poll_gone(context)).await
    }

    fn poll_gone(&mut self, context: &mut Context<'_>) -> Poll<(String, Gone)> {
        loop {
            if let Poll::Ready(Some((address, id))) = self.deletions.poll_next_unpin(context) {
                if self.holds(&address, id) {
                    return Poll::Ready((address, Gone::Deleted));
                }
                continue;
            }
            let Some(upstreams) = self.upstreams.as_deref_mut() else {
                return Poll::Pending;
            };
            if upstreams.poll_ended(context).is_ready() {
                return Poll::Ready((String::new(), Gone::UpstreamEnded));
            }
            if let Poll::Ready(Some((address, id))) = upstreams.poll_moved(context) {
                if self.holds(&address, id) {
                    return Poll::Ready((address, Gone::Moved));
                }
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Whether the socket still holds session `id` at `address` (a
    /// document left, and maybe joined again, since is not news).
    fn holds(&self, address: &str, id: SessionId) -> bool {
        self.joined
            .get(address)
            .is_some_and(|joined| joined.session.id() == id)
    }

    /// Queues a frame for the client; a full outbox (in frames or in
    /// bytes) closes the socket.
    pub(crate) fn send(&self, frame: Option<Outbound>) -> Result<(), CloseReason> {
        let Some(frame) = frame else { return Ok(()) };
        let len = frame.len();
        if !self.queued.try_add(len) {
            return Err(CloseReason::SendQueueFull);
        }
        self.frames.try_send(frame).map_err(|_| {
            self.queued.remove(len);
            CloseReason::SendQueueFull
        })
    }

    /// Checks the token for the document at `address` and joins it
    /// (Hocuspocus). A refusal is told to the client for that address only;
    /// only a full outbox or a document that cannot be loaded closes the
    /// socket.
    pub(crate) async fn join<W: Wire>(
        &mut self,
        wire: &W,
        joiner: &Joiner,
        address: &str,
        token: &str,
        frame: Option<Bytes>,
    ) -> Result<(), CloseReason> {
        // `name\0session`: the document is the name; replies keep the address.
        let doc = address.split('\0').next().unwrap_or(address);
        let token = Some(token).filter(|token| !token.is_empty());
        if self.joined.contains_key(address) {
            return self.refresh(wire, joiner, address, doc, token).await;
        }
        let denied = |reason| wire.encode(address, Outgoing::PermissionDenied(reason));
        if doc.is_empty() || doc.len() > MAX_DOC_NAME_BYTES {
            return self.send(denied("invalid document name"));
        }
        let forwarded = self
            .upstreams
            .as_ref()
            .map_or(0, |upstreams| upstreams.len());
        if self.joined.len() + forwarded >= MAX_DOCUMENTS_PER_SOCKET {
            return self.send(denied("too many documents on one connection"));
        }
        let revocations = joiner.revocations.current();
        let checked = SessionGrant::check(
            &joiner.auth,
            &revocations,
            token,
            doc,
            unix_now(),
            &joiner.context,
        )
        .await;
        let (grant, author) = match checked {
            Ok(checked) => checked,
            Err(refusal) => {
                info!(doc, status = refusal.status().as_u16(), reason = %refusal, "hocuspocus document refused");
                return self.send(denied(refusal.details()));
            }
        };
        if let (Some(forwarder), Some(frame)) = (&joiner.forwarder, frame) {
            let outbox = ClientOutbox {
                frames: self.frames.clone(),
                queued: self.queued.clone(),
                overflowed: self.overflowed.clone(),
            };
            let placed = self
                .upstreams
                .get_or_insert_default()
                .place(
                    forwarder,
                    &joiner.context.headers,
                    &outbox,
                    address,
                    doc,
                    frame,
                )
                .await;
            match placed {
                Placement::Forwarded => return Ok(()),
                Placement::Refused(_status) => {
                    return self.send(denied("refused by the document's owner"));
                }
                Placement::Here => {}
            }
        }
        let SessionGrant { access, token } = grant;
        // `Authenticated` goes first, before the document can broadcast to
        // the session: its frames go straight into the socket's outbox.
        for frame in wire.greeting(address, access, Vec::new()) {
            self.send(Some(frame))?;
        }
        let deleted = CancellationToken::new();
        let outbox = SessionOutbox {
            frames: self.frames.clone(),
            queued: self.queued.clone(),
            overflowed: self.overflowed.clone(),
            deleted: deleted.clone(),
            prefix: wire.prefix(address),
        };
        let mut session = match joiner.registry.join(doc, outbox).await {
            Ok(session) => session,
            Err(failure) => {
                let answer = FailureAnswer::sync(&failure);
                info!(doc, error = %failure, "join document failed; closing so the client retries");
                return Err(answer.close);
            }
        };
        session.set_author(&author);
        // The document's greeting (its SyncStep1 and awareness) may follow
        // an update broadcast since the join: updates commute, and the
        // client's own SyncStep1 is answered with what it lacks.
        for frame in session.greeting() {
            self.send(wire.encode(address, Outgoing::Document(frame)))?;
        }
        session.want_stateless();
        if let Some(watch) = &joiner.moves {
            let moved = watch.ownership.session_stop(doc, &watch.drain);
            self.upstreams
                .get_or_insert_default()
                .watch_move(address, moved, session.id());
        }
        info!(doc, session = %session.id(), read_only = access == Access::Read, "hocuspocus document open");
        let joined = Joined {
            doc: doc.into(),
            session,
            access,
            token,
            deleted,
        };
        self.insert(address.to_owned(), joined);
        Ok(())
    }

    /// A new token for a document the socket holds (Hocuspocus refresh in
    /// band): verified like a join's and applied to the session. A later
    /// `exp` moves the expiry; a grant narrower than the session's
    /// downgrades it (`Authenticated` with the `readonly` scope), one that
    /// grants nothing, or a token that does not verify, detaches the
    /// document (`PermissionDenied`) while the socket's others stay. The
    /// session then has exactly what the new token grants, after the node's
    /// revocations (a token issued after a revocation may give back what
    /// it took).
    async fn refresh<W: Wire>(
        &mut self,
        wire: &W,
        joiner: &Joiner,
        address: &str,
        doc: &str,
        token: Option<&str>,
    ) -> Result<(), CloseReason> {
        let revocations = joiner.revocations.current();
        let checked = SessionGrant::check(
            &joiner.auth,
            &revocations,
            token,
            doc,
            unix_now(),
            &joiner.context,
        )
        .await
        .map(|(grant, _)| grant);
        let Some(joined) = self.joined.get_mut(address) else {
            return Ok(());
        };
        match checked {
            Ok(grant) => {
                let access = grant.access;
                info!(
                    doc,
                    read_only = access == Access::Read,
                    "token refreshed in band"
                );
                joined.access = access;
                joined.token = grant.token;
                self.tokens_changed = true;
                self.send(wire.encode(address, Outgoing::Scope(access)))
            }
            Err(refusal) => {
                info!(doc, status = refusal.status().as_u16(), reason = %refusal, "refreshed token refused; document detached");
                self.remove(address);
                self.send(wire.encode(address, Outgoing::PermissionDenied(refusal.details())))
            }
        }
    }

    /// Leaves every document.
    pub(crate) fn leave_all(&mut self) {
        self.joined.clear();
        self.deletions.clear();
        self.upstreams = None;
    }
}
