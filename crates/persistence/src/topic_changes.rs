//! [`ChangeLog`] for [`TopicHistory`]: a cluster's change feed, the
//! per-edit rows the persistence worker stores (`weft_topic_updates`) read
//! back in the order of their feed number (`feed_seq`), which the worker
//! takes from the topic's counter (`weft_topic_feed`) in the transaction
//! that stores them. A record's partition offset orders one document only;
//! the feed number orders the whole topic, so it is the cursor of
//! server-sent events (`id:`, `Last-Event-ID`) and of webhook positions.
//!
//! Numbers commit in order (the counter row is locked until the storing
//! transaction ends), so reading "after N" never skips a row committed
//! later. A record stored twice keeps its first number. Webhook positions
//! and dead letters are the shared tables, their target keyed by the topic
//! (`"<topic> <url>"`: a URL has no space).

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use weft_sync::changes::{Change, ChangeKind, ChangeLog, DeadLetter};
use weft_sync::{LogSeq, StoreError};

use crate::dialect::sql_store_impl;
use crate::store::read_error;
use crate::topic_history::TopicHistory;

/// The columns of a topic's change, with whether a restore version covers
/// it (a version's `covers_seq` is the document's partition offset).
macro_rules! topic_change_columns {
    () => {
        "SELECT u.feed_seq, u.doc, u.data, u.author, u.at_ms,
            CASE WHEN EXISTS (SELECT 1 FROM weft_versions v
                    WHERE v.doc = u.doc AND v.covers_seq = u.seq AND v.kind = 'restore')
                THEN 1 ELSE 0 END AS restored
         FROM weft_topic_updates u"
    };
}

/// The topic `$3`'s changes after feed number `$1`, `$2` at most.
const CHANGES_AFTER: &str = concat!(
    topic_change_columns!(),
    " WHERE u.topic = $3 AND u.feed_seq > $1 ORDER BY u.feed_seq LIMIT $2"
);

/// The topic `$3`'s document `$4`'s changes after feed number `$1`, `$2`
/// at most.
const DOC_CHANGES_AFTER: &str = concat!(
    topic_change_columns!(),
    " WHERE u.topic = $3 AND u.doc = $4 AND u.feed_seq > $1 ORDER BY u.feed_seq LIMIT $2"
);

/// The topic `$1`'s last feed number (0 before its first row).
const FEED_END: &str =
    "SELECT COALESCE(MAX(last_seq), 0) AS seq FROM weft_topic_feed WHERE topic = $1";

/// The feed number before the topic `$1`'s first change accepted at or
/// after `$2` (the feed's end if none was).
const POSITION_BEFORE_TIME: &str = "SELECT COALESCE(
        (SELECT MIN(feed_seq) - 1 FROM weft_topic_updates
         WHERE topic = $1 AND feed_seq IS NOT NULL AND at_ms >= $2),
        (SELECT COALESCE(MAX(last_seq), 0) FROM weft_topic_feed WHERE topic = $1)) AS seq";

const DELIVERED_POSITION: &str = "SELECT position FROM weft_webhook_positions WHERE target = $1";

const SAVE_DELIVERED_POSITION: &str = "INSERT INTO weft_webhook_positions (target, position)
     VALUES ($1, $2) ON CONFLICT (target) DO UPDATE SET position = excluded.position";

const SAVE_DEAD_LETTER: &str = "INSERT INTO weft_webhook_dead_letters
     (target, delivery, doc, from_seq, to_seq, body, reason, at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

sql_store_impl! {
impl TopicHistory<D> {
    /// A webhook target as the shared tables key it: with its topic.
    fn target_key(&self, target: &str) -> String {
        format!("{} {target}", self.topic)
    }
}
}

sql_store_impl! {
#[async_trait]
impl ChangeLog for TopicHistory<D> {
    async fn changes_after(
        &self,
        after: LogSeq,
        doc: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let query = match doc {
            Some(doc) => sqlx::query(DOC_CHANGES_AFTER)
                .bind(after)
                .bind(i64::from(limit))
                .bind(self.topic.as_ref())
                .bind(doc),
            None => sqlx::query(CHANGES_AFTER)
                .bind(after)
                .bind(i64::from(limit))
                .bind(self.topic.as_ref()),
        };
        let rows = query
            .fetch_all(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read topic changes", error))?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let data: Vec<u8> = row.try_get("data").map_err(read_error)?;
            let restored = row.try_get::<i32, _>("restored").map_err(read_error)? != 0;
            let kind = if data.is_empty() {
                ChangeKind::Deleted
            } else if restored {
                ChangeKind::Restored
            } else {
                ChangeKind::Changed
            };
            changes.push(Change {
                position: row.try_get("feed_seq").map_err(read_error)?,
                doc: row.try_get("doc").map_err(read_error)?,
                kind,
                update: Bytes::from(data),
                author: row.try_get("author").map_err(read_error)?,
                at_ms: row.try_get("at_ms").map_err(read_error)?,
            });
        }
        Ok(changes)
    }

    async fn log_end(&self) -> Result<LogSeq, StoreError> {
        sqlx::query(FEED_END)
            .bind(self.topic.as_ref())
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read the topic feed's end", error))?
            .try_get("seq")
            .map_err(read_error)
    }

    async fn position_before_time(&self, at_ms: i64) -> Result<LogSeq, StoreError> {
        sqlx::query(POSITION_BEFORE_TIME)
            .bind(self.topic.as_ref())
            .bind(at_ms)
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read a topic position by time", error))?
            .try_get("seq")
            .map_err(read_error)
    }

    async fn delivered_position(&self, target: &str) -> Result<Option<LogSeq>, StoreError> {
        let key = self.target_key(target);
        let row = sqlx::query(DELIVERED_POSITION)
            .bind(key.as_str())
            .fetch_optional(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read a webhook position", error))?;
        match row {
            Some(row) => Ok(Some(row.try_get("position").map_err(read_error)?)),
            None => Ok(None),
        }
    }

    async fn save_delivered_position(
        &self,
        target: &str,
        position: LogSeq,
    ) -> Result<(), StoreError> {
        let key = self.target_key(target);
        sqlx::query(SAVE_DELIVERED_POSITION)
            .bind(key.as_str())
            .bind(position)
            .execute(self.store.pool())
            .await
            .map_err(|error| StoreError::new("write a webhook position", error))?;
        Ok(())
    }

    async fn save_dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), StoreError> {
        let key = self.target_key(letter.target);
        sqlx::query(SAVE_DEAD_LETTER)
            .bind(key.as_str())
            .bind(letter.delivery)
            .bind(letter.doc)
            .bind(letter.from)
            .bind(letter.to)
            .bind(letter.body)
            .bind(letter.reason)
            .bind(letter.at_ms)
            .execute(self.store.pool())
            .await
            .map_err(|error| StoreError::new("write a webhook dead letter", error))?;
        Ok(())
    }
}
}
