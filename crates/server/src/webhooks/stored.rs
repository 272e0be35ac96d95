//! A cluster's webhook replays, through the shared store: a node cannot
//! reach the `weft persist` worker that delivers, so
//! `POST /api/webhooks/replay` on a node ([`StoredReplay`]) stores a
//! request with the feed position the replay restarts after, and the
//! worker holding the delivery lock applies pending requests
//! (`Webhooks::apply_stored_replays`): it moves each pipeline back to that
//! position, waits until each has stored a delivered position at or before
//! it, and only then marks the request applied. A request made while no
//! worker delivers, or left pending by a worker that died while applying
//! it, is applied by the next holder.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use weft_sync::changes::{ChangeLog, ReplayRequests, WebhookReplay};
use weft_sync::{LogSeq, StoreError};

/// `POST /api/webhooks/replay` on a cluster node: a stored request.
#[derive(Debug)]
pub struct StoredReplay {
    changes: Arc<dyn ChangeLog>,
    requests: Arc<dyn ReplayRequests>,
}

impl StoredReplay {
    /// Replays of the feed `changes`, requested in `requests`.
    pub fn new(changes: Arc<dyn ChangeLog>, requests: Arc<dyn ReplayRequests>) -> Self {
        Self { changes, requests }
    }
}

#[async_trait]
impl WebhookReplay for StoredReplay {
    async fn replay_from(&self, from_ms: i64) -> Result<LogSeq, StoreError> {
        let position = self.changes.position_before_time(from_ms).await?;
        self.requests.request_replay(from_ms, position).await?;
        Ok(position)
    }
}

/// Now, in ms since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
