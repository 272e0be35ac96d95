//! The registry's bus task: subscribes to the bus (retrying with backoff
//! until the broker answers; the node is not ready meanwhile), applies and
//! broadcasts other nodes' updates, deletions, awareness changes and
//! stateless messages, publishes this node's heartbeat, and removes the
//! awareness states of nodes that went silent or restarted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_protocol::AwarenessUpdate;
use yrs::updates::decoder::Decode;

use crate::awareness::Owner;
use crate::backoff::Pauses;
use crate::bus::{BusError, Delivery, Interest, MessageBus, Origin, Record, RecordKind};
use crate::documents::Documents;
use crate::update::CommittedUpdate;

/// First wait before retrying a failed bus subscription (jittered: up to
/// twice it); doubled per failure up to [`BUS_RETRY_MAX`].
const BUS_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest delay between bus subscription attempts (jittered: up to twice
/// it), so nodes a broker restart failed together do not retry in step.
const BUS_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the bus task works with.
#[derive(Debug)]
pub(crate) struct BusTask {
    pub(crate) documents: Arc<Documents>,
    pub(crate) bus: Arc<dyn MessageBus>,
    /// Set once the subscription is live; cleared if it ends.
    pub(crate) subscribed: tokio::sync::watch::Sender<bool>,
    /// How often this node tells the others it is alive.
    pub(crate) heartbeat_interval: Duration,
    /// A node silent this long is taken for dead.
    pub(crate) peer_timeout: Duration,
    /// Stops the task.
    pub(crate) closing: CancellationToken,
}

/// Subscribes to the bus (retrying with backoff), then applies other nodes'
/// records, publishes heartbeats and expires silent peers until closing.
pub(crate) async fn run(inner: Arc<BusTask>) {
    let Some(mut deliveries) = subscribe_with_backoff(&inner).await else {
        return;
    };
    inner.subscribed.send_replace(true);
    info!(origin = %inner.bus.origin(), "bus subscribed; node ready for sessions");
    let mut peers = Peers::default();
    let mut heartbeat = tokio::time::interval(inner.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.closing.cancelled() => return,
            delivery = deliveries.recv() => {
                let Some(delivery) = delivery else {
                    warn!("bus subscription ended; refusing new sessions");
                    inner.subscribed.send_replace(false);
                    return;
                };
                handle_delivery(&inner, &mut peers, delivery);
            }
            _ = heartbeat.tick() => {
                inner.bus.publish_ephemeral(Record {
                    doc: Arc::from(""),
                    kind: RecordKind::Heartbeat,
                    payload: Bytes::new(),
                    origin_session: 0,
                    author: None,
                    span: tracing::Span::none(),
                });
                for node in peers.expire(Instant::now(), inner.peer_timeout) {
                    info!(node = %node, "peer node went silent; removing its clients' awareness");
                    for document in inner.documents.all() {
                        document.remove_peer(&node, None);
                    }
                }
            }
        }
    }
}

async fn subscribe_with_backoff(inner: &BusTask) -> Option<tokio::sync::mpsc::Receiver<Delivery>> {
    let mut pauses = Pauses::new(BUS_RETRY_MIN, BUS_RETRY_MAX);
    let mut attempts = 0_u32;
    loop {
        let interest: Arc<dyn Interest> = inner.documents.clone();
        let attempt = tokio::select! {
            () = inner.closing.cancelled() => return None,
            attempt = inner.bus.subscribe(interest) => attempt,
        };
        let wait = match attempt {
            Ok(deliveries) => return Some(deliveries),
            Err(BusError::AlreadySubscribed) => {
                warn!("bus already subscribed by another registry of this node");
                return None;
            }
            Err(error) => {
                attempts += 1;
                let wait = pauses.next_pause();
                // The first failure and then one in ten: a broker that is
                // down for a while must not flood the log.
                if attempts == 1 || attempts.is_multiple_of(10) {
                    warn!(attempts, retry_in = ?wait, error = %error, error.source = ?std::error::Error::source(&error), "bus subscription failed; retrying");
                }
                wait
            }
        };
        tokio::select! {
            () = inner.closing.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn handle_delivery(inner: &BusTask, peers: &mut Peers, delivery: Delivery) {
    let Delivery {
        record,
        origin,
        position,
    } = delivery;
    // A bus may deliver this node's own updates back (see
    // `MessageBus::subscribe`): they say nothing about peers.
    let own = origin == *inner.bus.origin();
    if !own && let Some(replaced) = peers.saw(&origin, Instant::now()) {
        info!(node = %origin.node, old = replaced, "peer node restarted; removing its old clients' awareness");
        for document in inner.documents.all() {
            document.remove_peer(&origin.node, Some(origin.incarnation));
        }
    }
    match record.kind {
        RecordKind::Update => {
            let seq = position.map_or(0, |position| position.offset);
            let _consumed = record.span.enter();
            inner.documents.deliver(
                &record.doc,
                CommittedUpdate::from_log(seq, record.payload.clone()),
                None,
            );
        }
        RecordKind::Awareness => {
            let Some(document) = inner.documents.get(&record.doc) else {
                return;
            };
            match AwarenessUpdate::decode_v1(&record.payload) {
                Ok(update) => {
                    document.apply_awareness(update, Owner::Peer(origin));
                }
                Err(error) => {
                    debug!(doc = %record.doc, node = %origin.node, error = %error, "awareness record does not decode; skipped");
                }
            }
        }
        RecordKind::Stateless => {
            let Some(document) = inner.documents.get(&record.doc) else {
                return;
            };
            match std::str::from_utf8(&record.payload) {
                Ok(payload) => document.broadcast_stateless(payload, None),
                Err(_) => debug!(doc = %record.doc, "stateless record is not UTF-8; skipped"),
            }
        }
        RecordKind::Delete => {
            let Some(position) = position else {
                debug!(doc = %record.doc, "delete record without a log position; skipped");
                return;
            };
            if inner
                .documents
                .delete(&record.doc, position.offset, &record.payload)
            {
                inner.bus.release(&record.doc);
            }
        }
        RecordKind::Heartbeat => {}
    }
}

/// The other nodes this node has heard from, and when.
#[derive(Debug, Default)]
struct Peers {
    /// Node id -> (incarnation, last heard).
    nodes: HashMap<Arc<str>, (u64, Instant)>,
}

impl Peers {
    /// Records that `origin` spoke. Returns the incarnation it replaced, if
    /// the node restarted.
    fn saw(&mut self, origin: &Origin, now: Instant) -> Option<u64> {
        let previous = self
            .nodes
            .insert(origin.node.clone(), (origin.incarnation, now));
        match previous {
            Some((incarnation, _)) if incarnation != origin.incarnation => Some(incarnation),
            _ => None,
        }
    }

    /// Forgets and returns the nodes silent for `timeout`.
    fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Arc<str>> {
        let mut silent = Vec::new();
        self.nodes.retain(|node, (_, last)| {
            let alive = now.duration_since(*last) < timeout;
            if !alive {
                silent.push(node.clone());
            }
            alive
        });
        silent
    }
}
