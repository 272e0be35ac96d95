//! History compaction for [`SqlStore`] (the store side of
//! `weft_sync::compaction`): plan, commit, list, measure.
//!
//! The log id picks which per-edit rows a compaction touches: the embedded
//! log's are `weft_updates`; a topic's are its rows of `weft_topic_updates`
//! (the persistence worker's, absent when it keeps no history: then only
//! checkpoints and versions are compacted). Checkpoints and versions are
//! per document, whatever the log.
//!
//! A compaction commits in one transaction that starts with a write (so
//! SQLite queues it on `busy_timeout`), then checks that what the fold
//! started from is still the store's: the nearest checkpoint at or before
//! the point, and the number of updates after it. A version taken there
//! meanwhile, a purge, or an update committed late makes the fold stale and
//! the transaction rolls back; the next pass plans again.

use sqlx::Row;
use weft_sync::history::{Compacted, Compaction, CompactionPlan, HistoryRead, HistoryStats};
use weft_sync::store::EMBEDDED_LOG;
use weft_sync::{LogSeq, StoreError};

use crate::dialect::sql_store_impl;
use crate::history::{
    CHECKPOINT_BEFORE, CHECKPOINT_POSITION_AT, INSERT_CHECKPOINT, LOG_POSITION_AT, UPDATES_BETWEEN,
};
use crate::store::{SqlStore, read_error};

/// Rows a compaction of the document `$1` at position `$2` would remove
/// beside its log rows: checkpoints older than `$2` that no named version
/// holds, automatic and restore versions older than `$2`.
const REMOVABLE_CHECKPOINTS_AND_VERSIONS: &str = "SELECT
     (SELECT COUNT(*) FROM weft_checkpoints WHERE doc = $1 AND covers_seq < $2
        AND covers_seq NOT IN
            (SELECT covers_seq FROM weft_versions WHERE doc = $1 AND kind = 'named'))
   + (SELECT COUNT(*) FROM weft_versions WHERE doc = $1 AND covers_seq < $2
        AND kind <> 'named') AS removable";

/// The document `$1`'s log rows a compaction at `$2` would remove: those up
/// to `$2` that its snapshot covers (a load reads the log after the
/// snapshot, so those after it stay).
const REMOVABLE_LOG: &str = "SELECT COUNT(*) AS removable FROM weft_updates
     WHERE doc = $1 AND seq <= $2
       AND seq <= COALESCE((SELECT covers_seq FROM weft_snapshots WHERE doc = $1), 0)";

/// Removes the document `$1`'s automatic and restore versions older than
/// `$2`.
const DELETE_OLD_VERSIONS: &str =
    "DELETE FROM weft_versions WHERE doc = $1 AND covers_seq < $2 AND kind <> 'named'";

/// Removes the document `$1`'s checkpoints older than `$2` that no named
/// version holds.
const DELETE_OLD_CHECKPOINTS: &str = "DELETE FROM weft_checkpoints
     WHERE doc = $1 AND covers_seq < $2
       AND covers_seq NOT IN
           (SELECT covers_seq FROM weft_versions WHERE doc = $1 AND kind = 'named')";

/// Removes [`REMOVABLE_LOG`]'s rows.
const DELETE_OLD_LOG: &str = "DELETE FROM weft_updates
     WHERE doc = $1 AND seq <= $2
       AND seq <= COALESCE((SELECT covers_seq FROM weft_snapshots WHERE doc = $1), 0)";

/// The topic `$3`'s document `$1`: its rows a compaction at `$2` would
/// remove (all up to `$2`: nodes load from the topic, not from these).
const TOPIC_REMOVABLE_LOG: &str = "SELECT COUNT(*) AS removable FROM weft_topic_updates
     WHERE doc = $1 AND seq <= $2 AND topic = $3";

/// Removes [`TOPIC_REMOVABLE_LOG`]'s rows.
const TOPIC_DELETE_OLD_LOG: &str =
    "DELETE FROM weft_topic_updates WHERE doc = $1 AND seq <= $2 AND topic = $3";

/// The topic `$3`'s document `$1`: its newest update accepted by `$2`.
const TOPIC_LOG_POSITION_AT: &str = "SELECT MAX(seq) AS seq FROM weft_topic_updates
     WHERE doc = $1 AND (at_ms IS NULL OR at_ms <= $2) AND length(data) > 0 AND topic = $3";

/// The topic `$4`'s document `$1`: its updates after `$2` up to `$3`.
const TOPIC_UPDATES_BETWEEN: &str = "SELECT data FROM weft_topic_updates
     WHERE doc = $1 AND seq > $2 AND seq <= $3 AND length(data) > 0 AND topic = $4
     ORDER BY seq";

/// [`TOPIC_UPDATES_BETWEEN`], counted.
const TOPIC_UPDATES_COUNT: &str = "SELECT COUNT(*) AS updates FROM weft_topic_updates
     WHERE doc = $1 AND seq > $2 AND seq <= $3 AND length(data) > 0 AND topic = $4";

/// The document `$1`'s nearest checkpoint position at or before `$2`.
const BASIS: &str = "SELECT MAX(covers_seq) AS seq FROM weft_checkpoints
     WHERE doc = $1 AND covers_seq <= $2";

/// The document `$1`'s updates after `$2` up to `$3` (deletion markers,
/// which are empty, left out), counted.
const UPDATES_COUNT: &str = "SELECT COUNT(*) AS updates FROM weft_updates
     WHERE doc = $1 AND seq > $2 AND seq <= $3 AND length(data) > 0";

/// Payload bytes and versions of the embedded history.
const EMBEDDED_STATS: &str = "SELECT
     CAST(COALESCE((SELECT SUM(length(data)) FROM weft_updates), 0)
        + COALESCE((SELECT SUM(length(state)) FROM weft_checkpoints), 0) AS BIGINT) AS bytes,
     (SELECT COUNT(*) FROM weft_versions) AS versions";

/// Payload bytes and versions of a topic's history (`$1`): its per-edit
/// rows, checkpoints and versions.
const TOPIC_STATS: &str = "SELECT
     CAST(COALESCE((SELECT SUM(length(data)) FROM weft_topic_updates WHERE topic = $1), 0)
        + COALESCE((SELECT SUM(length(state)) FROM weft_checkpoints), 0) AS BIGINT) AS bytes,
     (SELECT COUNT(*) FROM weft_versions) AS versions";

sql_store_impl! {
impl SqlStore<D> {
    /// See `History::history_documents`.
    pub(crate) async fn list_history_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let query = if log == EMBEDDED_LOG {
            D::HISTORY_DOCUMENTS
        } else {
            D::CHECKPOINT_DOCUMENTS
        };
        let mut rows = sqlx::query(query).bind(after).bind(i64::from(limit));
        if log != EMBEDDED_LOG {
            rows = rows.bind(log);
        }
        let rows = rows
            .fetch_all(self.pool())
            .await
            .map_err(|error| StoreError::new("list documents with history", error))?;
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            names.push(row.try_get::<String, _>("doc").map_err(read_error)?);
        }
        Ok(names)
    }

    /// See `History::compaction_plan`.
    pub(crate) async fn plan_compaction(
        &self,
        log: &str,
        doc: &str,
        cutoff_ms: i64,
    ) -> Result<Option<CompactionPlan>, StoreError> {
        let embedded = log == EMBEDDED_LOG;
        let checkpointed = self.seq_of(CHECKPOINT_POSITION_AT, doc, cutoff_ms, "find checkpoint position");
        let logged = if embedded {
            self.seq_of(LOG_POSITION_AT, doc, cutoff_ms, "find log position").await?
        } else {
            self.topic_seq_of(log, doc, cutoff_ms).await?
        };
        let Some(covers) = logged.max(checkpointed.await?) else {
            return Ok(None);
        };
        let mut removable = self.count(REMOVABLE_CHECKPOINTS_AND_VERSIONS, doc, covers).await?;
        if embedded {
            removable += self.count(REMOVABLE_LOG, doc, covers).await?;
        } else {
            removable += self.count_in(TOPIC_REMOVABLE_LOG, doc, covers, Some(log)).await?;
        }
        if removable == 0 {
            return Ok(None);
        }
        let checkpoint_row = sqlx::query(CHECKPOINT_BEFORE)
            .bind(doc)
            .bind(covers)
            .fetch_optional(self.pool())
            .await
            .map_err(|error| StoreError::new("read checkpoint", error))?;
        let (basis, checkpoint) = match checkpoint_row {
            Some(row) => (
                Some(row.try_get::<LogSeq, _>("covers_seq").map_err(read_error)?),
                Some(row.try_get::<Vec<u8>, _>("state").map_err(read_error)?),
            ),
            None => (None, None),
        };
        let mut updates = Vec::new();
        if basis != Some(covers) {
            // Embedded positions start at 1, a topic's offsets at 0.
            let (query, start) = if embedded {
                (UPDATES_BETWEEN, 0)
            } else {
                (TOPIC_UPDATES_BETWEEN, -1)
            };
            let mut rows = sqlx::query(query).bind(doc).bind(basis.unwrap_or(start)).bind(covers);
            if !embedded {
                rows = rows.bind(log);
            }
            let rows = rows
                .fetch_all(self.pool())
                .await
                .map_err(|error| StoreError::new("read history log", error))?;
            updates.reserve(rows.len());
            for row in rows {
                updates.push(row.try_get::<Vec<u8>, _>("data").map_err(read_error)?);
            }
        }
        Ok(Some(CompactionPlan {
            covers,
            basis,
            read: HistoryRead { checkpoint, updates },
        }))
    }

    /// See `History::compact`.
    pub(crate) async fn commit_compaction(
        &self,
        log: &str,
        compaction: Compaction<'_>,
    ) -> Result<Compacted, StoreError> {
        let embedded = log == EMBEDDED_LOG;
        let doc = compaction.doc;
        let covers = compaction.covers;
        let mut txn = self
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin compaction", error))?;
        if let Some(lock) = D::DOCUMENT_LOCK {
            sqlx::query(lock)
                .bind(doc)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("lock document history", error))?;
        }
        // A write first: SQLite takes its write lock here.
        let versions = sqlx::query(DELETE_OLD_VERSIONS)
            .bind(doc)
            .bind(covers)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("remove old versions", error))?;
        let basis: Option<LogSeq> = sqlx::query(BASIS)
            .bind(doc)
            .bind(covers)
            .fetch_one(&mut *txn)
            .await
            .map_err(|error| StoreError::new("check compaction basis", error))?
            .try_get("seq")
            .map_err(read_error)?;
        let mut stale = basis != compaction.basis;
        if !stale && compaction.state.is_some() {
            let (query, start) = if embedded {
                (UPDATES_COUNT, 0)
            } else {
                (TOPIC_UPDATES_COUNT, -1)
            };
            let mut count = sqlx::query(query)
                .bind(doc)
                .bind(compaction.basis.unwrap_or(start))
                .bind(covers);
            if !embedded {
                count = count.bind(log);
            }
            let updates: i64 = count
                .fetch_one(&mut *txn)
                .await
                .map_err(|error| StoreError::new("check compaction basis", error))?
                .try_get("updates")
                .map_err(read_error)?;
            stale = u64::try_from(updates).ok() != Some(compaction.folded_updates);
        }
        if stale || (compaction.state.is_none() && basis != Some(covers)) {
            txn.rollback()
                .await
                .map_err(|error| StoreError::new("end compaction", error))?;
            return Ok(Compacted::Stale);
        }
        if let Some(state) = compaction.state {
            sqlx::query(INSERT_CHECKPOINT)
                .bind(doc)
                .bind(covers)
                .bind(state)
                .bind(compaction.at_ms)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("write compaction checkpoint", error))?;
        }
        let checkpoints = sqlx::query(DELETE_OLD_CHECKPOINTS)
            .bind(doc)
            .bind(covers)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("remove old checkpoints", error))?;
        let mut removed = D::rows_affected(&versions) + D::rows_affected(&checkpoints);
        {
            let rows = if embedded {
                sqlx::query(DELETE_OLD_LOG).bind(doc).bind(covers)
            } else {
                sqlx::query(TOPIC_DELETE_OLD_LOG).bind(doc).bind(covers).bind(log)
            };
            let rows = rows
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("remove old log rows", error))?;
            removed += D::rows_affected(&rows);
        }
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit compaction", error))?;
        Ok(Compacted::Done { removed })
    }

    /// The topic `topic`'s document `doc`: its newest row accepted by
    /// `cutoff_ms`.
    async fn topic_seq_of(
        &self,
        topic: &str,
        doc: &str,
        cutoff_ms: i64,
    ) -> Result<Option<LogSeq>, StoreError> {
        sqlx::query(TOPIC_LOG_POSITION_AT)
            .bind(doc)
            .bind(cutoff_ms)
            .bind(topic)
            .fetch_one(self.pool())
            .await
            .map_err(|error| StoreError::new("find topic log position", error))?
            .try_get("seq")
            .map_err(read_error)
    }

    /// See `History::history_stats`.
    pub(crate) async fn read_history_stats(&self, log: &str) -> Result<HistoryStats, StoreError> {
        let row = if log == EMBEDDED_LOG {
            sqlx::query(EMBEDDED_STATS)
        } else {
            sqlx::query(TOPIC_STATS).bind(log)
        };
        let row = row
            .fetch_one(self.pool())
            .await
            .map_err(|error| StoreError::new("read history sizes", error))?;
        let bytes: i64 = row.try_get("bytes").map_err(read_error)?;
        let versions: i64 = row.try_get("versions").map_err(read_error)?;
        Ok(HistoryStats {
            bytes: u64::try_from(bytes).unwrap_or(0),
            versions: u64::try_from(versions).unwrap_or(0),
        })
    }

    /// The one count `query` finds for the document `doc` at `covers`.
    async fn count(&self, query: &'static str, doc: &str, covers: LogSeq) -> Result<u64, StoreError> {
        self.count_in(query, doc, covers, None).await
    }

    /// [`Self::count`], with the topic as the third parameter if any.
    async fn count_in(
        &self,
        query: &'static str,
        doc: &str,
        covers: LogSeq,
        topic: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut count = sqlx::query(query).bind(doc).bind(covers);
        if let Some(topic) = topic {
            count = count.bind(topic);
        }
        let count: i64 = count
            .fetch_one(self.pool())
            .await
            .map_err(|error| StoreError::new("count history to compact", error))?
            .try_get("removable")
            .map_err(read_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
}
