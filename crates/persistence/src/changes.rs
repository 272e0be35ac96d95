//! [`ChangeLog`] for [`SqlStore`]: the embedded log (`weft_updates`) read
//! back as changes, and the webhooks' delivered positions and dead letters
//! (`weft_webhook_positions`, `weft_webhook_dead_letters`), in both
//! dialects (the SQL is shared).
//!
//! A deletion is the log's empty marker row; a restore (or an undelete) is
//! the update a `restore` version covers exactly.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use weft_sync::changes::{Change, ChangeKind, ChangeLog, DeadLetter};
use weft_sync::{LogSeq, StoreError};

use crate::dialect::sql_store_impl;
use crate::store::{SqlStore, read_error};

/// The columns of a change, with whether a restore version covers it. A
/// deletion marker has no time of its own: the deletion's is on the
/// snapshot it left (while that is the latest).
macro_rules! change_columns {
    () => {
        "SELECT u.seq, u.doc, u.data, u.author,
            COALESCE(u.at_ms, (SELECT s.deleted_at FROM weft_snapshots s
                               WHERE s.doc = u.doc AND s.deleted_position = u.seq)) AS at_ms,
            CASE WHEN EXISTS (SELECT 1 FROM weft_versions v
                    WHERE v.doc = u.doc AND v.covers_seq = u.seq AND v.kind = 'restore')
                THEN 1 ELSE 0 END AS restored
         FROM weft_updates u"
    };
}

/// Changes after `$1`, `$2` at most.
const CHANGES_AFTER: &str = concat!(
    change_columns!(),
    " WHERE u.seq > $1 ORDER BY u.seq LIMIT $2"
);

/// The document `$3`'s changes after `$1`, `$2` at most.
const DOC_CHANGES_AFTER: &str = concat!(
    change_columns!(),
    " WHERE u.doc = $3 AND u.seq > $1 ORDER BY u.seq LIMIT $2"
);

/// The log's last position.
const LOG_END: &str = "SELECT COALESCE(MAX(seq), 0) AS seq FROM weft_updates";

/// The position before the first change accepted at or after `$1` (the
/// log's end if none was). Rows without a time (deletion markers, rows
/// logged before Weft recorded times) do not decide it.
const POSITION_BEFORE_TIME: &str = "SELECT COALESCE(MIN(seq) - 1,
            (SELECT COALESCE(MAX(seq), 0) FROM weft_updates)) AS seq
     FROM weft_updates WHERE at_ms >= $1";

const DELIVERED_POSITION: &str = "SELECT position FROM weft_webhook_positions WHERE target = $1";

const SAVE_DELIVERED_POSITION: &str = "INSERT INTO weft_webhook_positions (target, position)
     VALUES ($1, $2) ON CONFLICT (target) DO UPDATE SET position = excluded.position";

const SAVE_DEAD_LETTER: &str = "INSERT INTO weft_webhook_dead_letters
     (target, delivery, doc, from_seq, to_seq, body, reason, at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

sql_store_impl! {
#[async_trait]
impl ChangeLog for SqlStore<D> {
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
                .bind(doc),
            None => sqlx::query(CHANGES_AFTER).bind(after).bind(i64::from(limit)),
        };
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|error| StoreError::new("read changes", error))?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let data: Vec<u8> = row.try_get("data").map_err(read_error)?;
            // An integer in both dialects (`CASE`): PostgreSQL's EXISTS
            // is a boolean, SQLite's an integer.
            let restored = row.try_get::<i32, _>("restored").map_err(read_error)? != 0;
            let kind = if data.is_empty() {
                ChangeKind::Deleted
            } else if restored {
                ChangeKind::Restored
            } else {
                ChangeKind::Changed
            };
            changes.push(Change {
                position: row.try_get("seq").map_err(read_error)?,
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
        sqlx::query(LOG_END)
            .fetch_one(self.pool())
            .await
            .map_err(|error| StoreError::new("read the log's end", error))?
            .try_get("seq")
            .map_err(read_error)
    }

    async fn position_before_time(&self, at_ms: i64) -> Result<LogSeq, StoreError> {
        sqlx::query(POSITION_BEFORE_TIME)
            .bind(at_ms)
            .fetch_one(self.pool())
            .await
            .map_err(|error| StoreError::new("read a position by time", error))?
            .try_get("seq")
            .map_err(read_error)
    }

    async fn delivered_position(&self, target: &str) -> Result<Option<LogSeq>, StoreError> {
        let row = sqlx::query(DELIVERED_POSITION)
            .bind(target)
            .fetch_optional(self.pool())
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
        sqlx::query(SAVE_DELIVERED_POSITION)
            .bind(target)
            .bind(position)
            .execute(self.pool())
            .await
            .map_err(|error| StoreError::new("write a webhook position", error))?;
        Ok(())
    }

    async fn save_dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), StoreError> {
        sqlx::query(SAVE_DEAD_LETTER)
            .bind(letter.target)
            .bind(letter.delivery)
            .bind(letter.doc)
            .bind(letter.from)
            .bind(letter.to)
            .bind(letter.body)
            .bind(letter.reason)
            .bind(letter.at_ms)
            .execute(self.pool())
            .await
            .map_err(|error| StoreError::new("write a webhook dead letter", error))?;
        Ok(())
    }
}
}
