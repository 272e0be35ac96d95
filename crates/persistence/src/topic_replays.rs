//! [`ReplayRequests`] for [`TopicHistory`]: a cluster's
//! `POST /api/webhooks/replay` requests (`weft_webhook_replays`), written
//! by any node and applied, in id order, by the worker that delivers the
//! topic's webhooks.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Row;
use weft_sync::changes::{ReplayRequest, ReplayRequests};
use weft_sync::{LogSeq, StoreError};

use crate::dialect::sql_store_impl;
use crate::store::read_error;
use crate::topic_history::TopicHistory;

const REQUEST_REPLAY: &str = "INSERT INTO weft_webhook_replays
     (topic, from_ms, after_seq, requested_at_ms) VALUES ($1, $2, $3, $4) RETURNING id";

const PENDING_REPLAYS: &str = "SELECT id, from_ms, after_seq FROM weft_webhook_replays
     WHERE topic = $1 AND done_at_ms IS NULL ORDER BY id LIMIT $2";

const FINISH_REPLAY: &str =
    "UPDATE weft_webhook_replays SET done_at_ms = $3 WHERE topic = $1 AND id = $2";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

sql_store_impl! {
#[async_trait]
impl ReplayRequests for TopicHistory<D> {
    async fn request_replay(&self, from_ms: i64, after: LogSeq) -> Result<i64, StoreError> {
        sqlx::query(REQUEST_REPLAY)
            .bind(self.topic.as_ref())
            .bind(from_ms)
            .bind(after)
            .bind(now_ms())
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| StoreError::new("write a webhook replay request", error))?
            .try_get("id")
            .map_err(read_error)
    }

    async fn pending_replays(&self, limit: u32) -> Result<Vec<ReplayRequest>, StoreError> {
        let rows = sqlx::query(PENDING_REPLAYS)
            .bind(self.topic.as_ref())
            .bind(i64::from(limit))
            .fetch_all(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read webhook replay requests", error))?;
        let mut requests = Vec::with_capacity(rows.len());
        for row in rows {
            requests.push(ReplayRequest {
                id: row.try_get("id").map_err(read_error)?,
                from_ms: row.try_get("from_ms").map_err(read_error)?,
                after: row.try_get("after_seq").map_err(read_error)?,
            });
        }
        Ok(requests)
    }

    async fn finish_replay(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(FINISH_REPLAY)
            .bind(self.topic.as_ref())
            .bind(id)
            .bind(at_ms)
            .execute(self.store.pool())
            .await
            .map_err(|error| StoreError::new("mark a webhook replay applied", error))?;
        Ok(())
    }
}
}
