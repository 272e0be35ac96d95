//! The change feed: a node's durable document changes read back from its
//! log in log order, for webhooks and server-sent events.
//!
//! [`ChangeLog`] is the seam the store implements (the embedded log: every
//! change is a row with its sequence number, author and time, kept while
//! history is kept); it also keeps each webhook target's delivered position
//! and its dead letters, so a delivery pipeline restarts where it stopped.
//! [`ChangeFeed`] is what the gateway holds: the log, a watch of its end
//! (one task polls it, so many event streams wait on one query), and the
//! webhooks' replay, if webhooks are configured. Imports `store` only.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::store::{LogSeq, StoreError};

/// How often the feed reads where the log ends. Events reach streams and
/// webhooks at most this late (webhooks wait for their debounce anyway).
pub const LOG_END_POLL: Duration = Duration::from_millis(200);

/// What a change did to its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// An edit (a client's, a service's).
    Changed,
    /// The document was deleted.
    Deleted,
    /// A restore or an undelete (history): an edit that brought back
    /// earlier content.
    Restored,
}

impl ChangeKind {
    /// Its event name (webhooks, server-sent events).
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Changed => "document.changed",
            Self::Deleted => "document.deleted",
            Self::Restored => "document.restored",
        }
    }
}

/// One durable change as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position in the log (the embedded log's sequence number).
    pub position: LogSeq,
    /// The document.
    pub doc: String,
    /// What it did.
    pub kind: ChangeKind,
    /// The Yjs v1 update (empty for a deletion).
    pub update: Bytes,
    /// Who wrote it, if the log knows.
    pub author: Option<String>,
    /// When it was accepted (ms since the Unix epoch), if the log knows.
    pub at_ms: Option<i64>,
}

/// A webhook event given up on after `--webhook-retry-for`.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The target URL.
    pub target: &'a str,
    /// The event's `Weft-Delivery` id.
    pub delivery: &'a str,
    /// Its document.
    pub doc: &'a str,
    /// The first and last log positions it covers.
    pub from: LogSeq,
    /// See `from`.
    pub to: LogSeq,
    /// The JSON body that was sent.
    pub body: &'a [u8],
    /// The last failure.
    pub reason: &'a str,
    /// How many POSTs were tried (0 if the body could not be built).
    pub attempts: u32,
    /// When it was given up (ms since the Unix epoch).
    pub at_ms: i64,
}

/// The log read back as changes, and the delivery state of webhooks.
#[async_trait]
pub trait ChangeLog: Send + Sync + Debug + 'static {
    /// Changes after `after`, of `doc` only if given, in log order, `limit`
    /// at most.
    async fn changes_after(
        &self,
        after: LogSeq,
        doc: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError>;

    /// The last position in the log (0 for an empty log).
    async fn log_end(&self) -> Result<LogSeq, StoreError>;

    /// The position just before the first change accepted at or after
    /// `at_ms` (the log's end if none was): a replay from `at_ms` delivers
    /// what follows it.
    async fn position_before_time(&self, at_ms: i64) -> Result<LogSeq, StoreError>;

    /// The position up to which `target` has had every change.
    async fn delivered_position(&self, target: &str) -> Result<Option<LogSeq>, StoreError>;

    /// Stores `position` as `target`'s delivered position.
    async fn save_delivered_position(
        &self,
        target: &str,
        position: LogSeq,
    ) -> Result<(), StoreError>;

    /// Stores an event given up on.
    async fn save_dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), StoreError>;
}

/// Who delivers a log's webhooks when several processes share its store
/// (a cluster's `weft persist` workers): one at a time.
#[async_trait]
pub trait DeliveryLock: Send + Sync + Debug + 'static {
    /// Becomes the only deliverer unless another process is: `Some` holds
    /// the lock until it is dropped (or its process dies).
    async fn try_acquire(&self) -> Result<Option<Box<dyn DeliveryLease>>, StoreError>;
}

/// A held [`DeliveryLock`].
#[async_trait]
pub trait DeliveryLease: Send + Debug {
    /// Whether the lock is still held (false once its connection is lost:
    /// another process may hold it now).
    async fn holds(&mut self) -> bool;
}

/// Delivering again (`POST /api/webhooks/replay`).
#[async_trait]
pub trait WebhookReplay: Send + Sync + Debug + 'static {
    /// Delivers every change accepted at or after `from_ms` again, to every
    /// target; returns the position the deliveries restart after.
    async fn replay_from(&self, from_ms: i64) -> Result<LogSeq, StoreError>;
}

/// A stored `POST /api/webhooks/replay` of a cluster, which a node writes
/// and the worker delivering the webhooks applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Its number (increasing: requests are applied in this order).
    pub id: i64,
    /// The instant asked for (ms since the Unix epoch).
    pub from_ms: i64,
    /// The position the deliveries restart after (the feed position
    /// before the first change accepted at or after `from_ms`).
    pub after: LogSeq,
}

/// Replay requests kept in a cluster's shared store: a node cannot reach
/// the worker that delivers, so it leaves the request where that worker
/// looks (and where the next holder finds it, should none deliver now).
#[async_trait]
pub trait ReplayRequests: Send + Sync + Debug + 'static {
    /// Stores a request; returns its id.
    async fn request_replay(&self, from_ms: i64, after: LogSeq) -> Result<i64, StoreError>;

    /// Requests not applied yet, oldest first, `limit` at most.
    async fn pending_replays(&self, limit: u32) -> Result<Vec<ReplayRequest>, StoreError>;

    /// Marks a request applied (every target's delivered position is at or
    /// before its `after`).
    async fn finish_replay(&self, id: i64, at_ms: i64) -> Result<(), StoreError>;
}

/// What the gateway's event routes read: the log and where it ends.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    log: Arc<dyn ChangeLog>,
    end: watch::Receiver<LogSeq>,
    replay: Option<Arc<dyn WebhookReplay>>,
    cluster: bool,
}

impl ChangeFeed {
    /// A feed over `log`, whose end a task on `tasks` polls until `stop`.
    pub fn start(
        log: Arc<dyn ChangeLog>,
        replay: Option<Arc<dyn WebhookReplay>>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (sender, end) = watch::channel(0);
        tasks.spawn(poll_log_end(log.clone(), sender, stop));
        Self {
            log,
            end,
            replay,
            cluster: false,
        }
    }

    /// The same feed, a cluster node's: its webhooks are delivered by
    /// `weft persist`, not by the node.
    #[must_use]
    pub fn in_cluster(self) -> Self {
        Self {
            cluster: true,
            ..self
        }
    }

    /// Whether this is a cluster node's feed.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The same feed, with the webhooks' replay (a cluster node's stores a
    /// request for the worker that delivers).
    #[must_use]
    pub fn with_replay(self, replay: Arc<dyn WebhookReplay>) -> Self {
        Self {
            replay: Some(replay),
            ..self
        }
    }

    /// The log.
    pub fn log(&self) -> &Arc<dyn ChangeLog> {
        &self.log
    }

    /// A watch of the log's end (moves forward as changes are committed).
    pub fn end(&self) -> watch::Receiver<LogSeq> {
        self.end.clone()
    }

    /// The webhooks' replay, if webhooks are configured.
    pub fn replay(&self) -> Option<&Arc<dyn WebhookReplay>> {
        self.replay.as_ref()
    }
}

async fn poll_log_end(
    log: Arc<dyn ChangeLog>,
    sender: watch::Sender<LogSeq>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        match log.log_end().await {
            Ok(end) => {
                failing = false;
                sender.send_if_modified(|current| {
                    let moved = end > *current;
                    if moved {
                        *current = end;
                    }
                    moved
                });
            }
            Err(error) => {
                if !failing {
                    warn!(error = %error, "read the log's end for the change feed");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LOG_END_POLL) => {}
        }
    }
}

/// A [`ChangeLog`] in memory, for tests: changes are pushed by the test,
/// positions and dead letters kept in maps.
#[derive(Debug, Default)]
pub struct MemoryChangeLog {
    inner: parking_lot::Mutex<MemoryChanges>,
}

#[derive(Debug, Default)]
struct MemoryChanges {
    changes: Vec<Change>,
    delivered: std::collections::HashMap<String, LogSeq>,
    dead_letters: Vec<(String, String, LogSeq, LogSeq)>,
}

impl MemoryChangeLog {
    /// Appends a change (its position must grow).
    pub fn push(&self, change: Change) {
        self.inner.lock().changes.push(change);
    }

    /// The dead letters stored: (target, doc, from, to).
    pub fn dead_letters(&self) -> Vec<(String, String, LogSeq, LogSeq)> {
        self.inner.lock().dead_letters.clone()
    }
}

#[async_trait]
impl ChangeLog for MemoryChangeLog {
    async fn changes_after(
        &self,
        after: LogSeq,
        doc: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner
            .changes
            .iter()
            .filter(|change| change.position > after && doc.is_none_or(|doc| change.doc == doc))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn log_end(&self) -> Result<LogSeq, StoreError> {
        Ok(self
            .inner
            .lock()
            .changes
            .last()
            .map_or(0, |change| change.position))
    }

    async fn position_before_time(&self, at_ms: i64) -> Result<LogSeq, StoreError> {
        let inner = self.inner.lock();
        let first = inner
            .changes
            .iter()
            .find(|change| change.at_ms.is_some_and(|at| at >= at_ms));
        Ok(match first {
            Some(change) => change.position - 1,
            None => inner.changes.last().map_or(0, |change| change.position),
        })
    }

    async fn delivered_position(&self, target: &str) -> Result<Option<LogSeq>, StoreError> {
        Ok(self.inner.lock().delivered.get(target).copied())
    }

    async fn save_delivered_position(
        &self,
        target: &str,
        position: LogSeq,
    ) -> Result<(), StoreError> {
        self.inner
            .lock()
            .delivered
            .insert(target.to_owned(), position);
        Ok(())
    }

    async fn save_dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), StoreError> {
        self.inner.lock().dead_letters.push((
            letter.target.to_owned(),
            letter.doc.to_owned(),
            letter.from,
            letter.to,
        ));
        Ok(())
    }
}
