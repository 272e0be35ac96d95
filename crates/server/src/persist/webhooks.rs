//! A cluster's webhooks, delivered by `weft persist` from its topic's
//! change feed (the per-edit rows the workers store, in feed order), with
//! the same pipelines as an embedded node's. Several workers share a
//! store: the one holding the topic's delivery lock delivers; the others
//! try again every [`LOCK_RETRY`]. The holder checks its lock every
//! [`LOCK_CHECK`] and stops delivering once it lost it (its connection
//! closed), then competes again. Delivered positions are the shared store's,
//! so the next holder goes on where the last stopped (a change may be
//! delivered twice, none is skipped).
//!
//! The holder also applies the replays nodes stored
//! (`POST /api/webhooks/replay`), polling for them every [`REPLAY_POLL`];
//! its dead letters go to the topic `<topic>-deadletter`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use weft_sync::changes::{ChangeFeed, ChangeLog, DeliveryLock, ReplayRequests};
use weft_sync::history::History;

use crate::webhooks::{WebhookMetrics, WebhookSettings, Webhooks};

/// How often a worker without the delivery lock tries to take it.
pub(super) const LOCK_RETRY: Duration = Duration::from_secs(2);

/// How often the holder checks it still holds the lock.
pub(super) const LOCK_CHECK: Duration = Duration::from_secs(2);

/// How often the holder looks for replays nodes stored: a replay starts at
/// most this late (plus the pipelines' own wait).
pub(super) const REPLAY_POLL: Duration = Duration::from_secs(1);

/// What the delivery needs.
pub(super) struct Delivery {
    pub(super) settings: WebhookSettings,
    /// The feed, its dead letters produced to `<topic>-deadletter`.
    pub(super) changes: Arc<dyn ChangeLog>,
    pub(super) lock: Arc<dyn DeliveryLock>,
    pub(super) replays: Arc<dyn ReplayRequests>,
    pub(super) history: Arc<dyn History>,
    pub(super) metrics: WebhookMetrics,
}

/// Competes for the delivery lock and delivers while holding it, until
/// `stop`.
pub(super) async fn run(delivery: Delivery, tasks: TaskTracker, stop: CancellationToken) {
    let mut failing = false;
    loop {
        match delivery.lock.try_acquire().await {
            Ok(Some(mut lease)) => {
                failing = false;
                info!("this worker delivers the webhooks");
                let round = stop.child_token();
                let feed = ChangeFeed::start(delivery.changes.clone(), None, &tasks, round.clone());
                let webhooks = match Webhooks::start(
                    &delivery.settings,
                    delivery.changes.clone(),
                    Some(delivery.history.clone()),
                    &feed.end(),
                    delivery.metrics.clone(),
                    &tasks,
                    &round,
                ) {
                    Ok(webhooks) => webhooks,
                    Err(error) => {
                        // Settings were checked at start; an HTTP client that
                        // cannot be built will not be built later either.
                        warn!(error = %error, "start the webhook pipelines");
                        round.cancel();
                        return;
                    }
                };
                let mut lock_check = tokio::time::interval(LOCK_CHECK);
                let mut replay_poll = tokio::time::interval(REPLAY_POLL);
                let mut replays_failing = false;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = lock_check.tick() => {
                            if !lease.holds().await {
                                warn!("lost the webhook delivery lock: stopping delivery");
                                round.cancel();
                                break;
                            }
                        }
                        _ = replay_poll.tick() => {
                            let applied = tokio::select! {
                                () = stop.cancelled() => return,
                                applied = webhooks.apply_stored_replays(delivery.replays.as_ref()) => applied,
                            };
                            match applied {
                                Ok(_) => replays_failing = false,
                                Err(error) => {
                                    if !replays_failing {
                                        warn!(error = %error, "webhooks: apply the stored replays");
                                    }
                                    replays_failing = true;
                                }
                            }
                        }
                    }
                }
            }
            Ok(None) => failing = false,
            Err(error) => {
                if !failing {
                    warn!(error = %error, "take the webhook delivery lock");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LOCK_RETRY) => {}
        }
    }
}
