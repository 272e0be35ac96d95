//! [`History`] for [`SqlStore`]: versions (`weft_versions`), checkpoints
//! (`weft_checkpoints`) and the attributed log (`weft_updates`' `author`,
//! `at_ms`, `node`), in both dialects (the SQL is shared). Compaction's
//! side is in `compaction`.

use async_trait::async_trait;
use sqlx::Row;
use weft_sync::history::{
    AuthorActivity, Compacted, Compaction, CompactionPlan, History, HistoryRead, HistoryStats,
    NewVersion, Version, VersionKind,
};
use weft_sync::text_runs::AttributedUpdate;
use weft_sync::{LogSeq, StoreError};

use crate::dialect::sql_store_impl;
use crate::store::{SqlStore, read_error};

/// The newest version of a document (`$1`).
const LATEST_VERSION_COVERS: &str =
    "SELECT covers_seq FROM weft_versions WHERE doc = $1 ORDER BY id DESC LIMIT 1";

/// Who wrote the document `$1`'s updates after `$2` up to `$3`, in order of
/// their first update.
const AUTHORS_BETWEEN: &str = "SELECT author FROM weft_updates
     WHERE doc = $1 AND seq > $2 AND seq <= $3 AND author IS NOT NULL
     GROUP BY author ORDER BY MIN(seq)";

/// Stores a version (`$1` doc, `$2` name, `$3` kind, `$4` at, `$5` covers,
/// `$6` authors as a JSON array).
const INSERT_VERSION: &str =
    "INSERT INTO weft_versions (doc, name, kind, at_ms, covers_seq, authors)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

/// Stores a checkpoint unless one at that position is stored (`$1` doc,
/// `$2` covers, `$3` state, `$4` at).
pub(crate) const INSERT_CHECKPOINT: &str =
    "INSERT INTO weft_checkpoints (doc, covers_seq, state, at_ms) VALUES ($1, $2, $3, $4)
     ON CONFLICT (doc, covers_seq) DO NOTHING";

/// The document `$1`'s versions below id `$2`, newest first, `$3` at most.
const LIST_VERSIONS: &str = "SELECT id, name, kind, at_ms, covers_seq, authors FROM weft_versions
     WHERE doc = $1 AND id < $2 ORDER BY id DESC LIMIT $3";

/// One version (`$1` doc, `$2` id).
const READ_VERSION: &str = "SELECT id, name, kind, at_ms, covers_seq, authors FROM weft_versions
     WHERE doc = $1 AND id = $2";

/// The document `$1`'s newest logged position accepted by `$2`
/// (deletion markers, which are empty, left out).
pub(crate) const LOG_POSITION_AT: &str = "SELECT MAX(seq) AS seq FROM weft_updates
     WHERE doc = $1 AND (at_ms IS NULL OR at_ms <= $2) AND length(data) > 0";

/// The document `$1`'s newest logged update before position `$2`.
const LOG_POSITION_BEFORE: &str = "SELECT MAX(seq) AS seq FROM weft_updates
     WHERE doc = $1 AND seq < $2 AND length(data) > 0";

/// The document `$1`'s newest checkpoint before position `$2`.
const CHECKPOINT_POSITION_BEFORE: &str = "SELECT MAX(covers_seq) AS seq FROM weft_checkpoints
     WHERE doc = $1 AND covers_seq < $2";

/// Purging: the document `$1`'s log up to its snapshot, its checkpoints,
/// its versions.
const PURGE_LOG: &str = "DELETE FROM weft_updates WHERE doc = $1
     AND seq <= COALESCE((SELECT covers_seq FROM weft_snapshots WHERE doc = $1), 0)";
const PURGE_CHECKPOINTS: &str = "DELETE FROM weft_checkpoints WHERE doc = $1";
const PURGE_VERSIONS: &str = "DELETE FROM weft_versions WHERE doc = $1";

/// The document `$1`'s newest checkpoint taken by `$2`.
pub(crate) const CHECKPOINT_POSITION_AT: &str =
    "SELECT MAX(covers_seq) AS seq FROM weft_checkpoints
     WHERE doc = $1 AND at_ms <= $2";

/// The document `$1`'s nearest checkpoint at or before `$2`.
pub(crate) const CHECKPOINT_BEFORE: &str = "SELECT covers_seq, state FROM weft_checkpoints
     WHERE doc = $1 AND covers_seq <= $2 ORDER BY covers_seq DESC LIMIT 1";

/// The document `$1`'s updates after `$2` up to `$3` (deletion markers,
/// which are empty, left out).
pub(crate) const UPDATES_BETWEEN: &str = "SELECT data FROM weft_updates
     WHERE doc = $1 AND seq > $2 AND seq <= $3 AND length(data) > 0 ORDER BY seq";

/// The document's attributed updates in a range of positions.
const ATTRIBUTED_BETWEEN: &str = "SELECT author, data FROM weft_updates
     WHERE doc = $1 AND seq > $2 AND seq <= $3 AND length(data) > 0 ORDER BY seq";

/// Per author, the document `$1`'s updates accepted from `$2` to `$3`.
const ACTIVITY: &str = "SELECT author, COUNT(*) AS updates, MIN(at_ms) AS first_ms,
            MAX(at_ms) AS last_ms
     FROM weft_updates WHERE doc = $1 AND at_ms >= $2 AND at_ms <= $3
     GROUP BY author ORDER BY MIN(at_ms)";

sql_store_impl! {
impl SqlStore<D> {
    /// The one `seq` (possibly NULL) that `query` finds for document `doc`
    /// and `bound` (a time or a position); `what` names the read in errors.
    pub(crate) async fn seq_of(
        &self,
        query: &'static str,
        doc: &str,
        bound: i64,
        what: &'static str,
    ) -> Result<Option<LogSeq>, StoreError> {
        sqlx::query(query)
            .bind(doc)
            .bind(bound)
            .fetch_one(self.pool())
            .await
            .map_err(|error| StoreError::new(what, error))?
            .try_get("seq")
            .map_err(read_error)
    }
}
}

sql_store_impl! {
#[async_trait]
impl History for SqlStore<D> {
    fn keep_log(&self) {
        self.set_keeps_log();
    }

    async fn create_version(&self, version: NewVersion<'_>) -> Result<Version, StoreError> {
        let mut txn = self
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin version", error))?;
        // The checkpoint first: a write statement, so SQLite takes its
        // write lock before the reads below.
        sqlx::query(INSERT_CHECKPOINT)
            .bind(version.doc)
            .bind(version.covers)
            .bind(version.state)
            .bind(version.at_ms)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("write checkpoint", error))?;
        let previous: Option<LogSeq> = sqlx::query_scalar(LATEST_VERSION_COVERS)
            .bind(version.doc)
            .fetch_optional(&mut *txn)
            .await
            .map_err(|error| StoreError::new("read latest version", error))?;
        let author_rows = sqlx::query(AUTHORS_BETWEEN)
            .bind(version.doc)
            .bind(previous.unwrap_or(0))
            .bind(version.covers)
            .fetch_all(&mut *txn)
            .await
            .map_err(|error| StoreError::new("read authors", error))?;
        let mut authors = Vec::with_capacity(author_rows.len());
        for row in author_rows {
            authors.push(row.try_get::<String, _>("author").map_err(read_error)?);
        }
        let authors_json = serde_json::to_string(&authors)
            .map_err(|error| StoreError::new("encode authors", error))?;
        let id: i64 = sqlx::query_scalar(INSERT_VERSION)
            .bind(version.doc)
            .bind(version.name)
            .bind(version.kind.as_str())
            .bind(version.at_ms)
            .bind(version.covers)
            .bind(authors_json.as_str())
            .fetch_one(&mut *txn)
            .await
            .map_err(|error| StoreError::new("write version", error))?;
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit version", error))?;
        Ok(Version {
            id,
            name: version.name.map(str::to_owned),
            kind: version.kind,
            at_ms: version.at_ms,
            covers: version.covers,
            authors,
        })
    }

    async fn versions(
        &self,
        doc: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Version>, StoreError> {
        let rows = sqlx::query(LIST_VERSIONS)
            .bind(doc)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(|error| StoreError::new("list versions", error))?;
        let mut versions = Vec::with_capacity(rows.len());
        for row in rows {
            versions.push(version_of(
                row.try_get("id").map_err(read_error)?,
                row.try_get("name").map_err(read_error)?,
                &row.try_get::<String, _>("kind").map_err(read_error)?,
                row.try_get("at_ms").map_err(read_error)?,
                row.try_get("covers_seq").map_err(read_error)?,
                &row.try_get::<String, _>("authors").map_err(read_error)?,
            )?);
        }
        Ok(versions)
    }

    async fn version(&self, doc: &str, id: i64) -> Result<Option<Version>, StoreError> {
        let row = sqlx::query(READ_VERSION)
            .bind(doc)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(|error| StoreError::new("read version", error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(version_of(
            row.try_get("id").map_err(read_error)?,
            row.try_get("name").map_err(read_error)?,
            &row.try_get::<String, _>("kind").map_err(read_error)?,
            row.try_get("at_ms").map_err(read_error)?,
            row.try_get("covers_seq").map_err(read_error)?,
            &row.try_get::<String, _>("authors").map_err(read_error)?,
        )?))
    }

    async fn position_at(&self, doc: &str, at_ms: i64) -> Result<Option<LogSeq>, StoreError> {
        let logged = self.seq_of(LOG_POSITION_AT, doc, at_ms, "find log position");
        let checkpointed = self.seq_of(CHECKPOINT_POSITION_AT, doc, at_ms, "find checkpoint position");
        Ok(logged.await?.max(checkpointed.await?))
    }

    async fn position_before(
        &self,
        doc: &str,
        position: LogSeq,
    ) -> Result<Option<LogSeq>, StoreError> {
        let logged = self.seq_of(LOG_POSITION_BEFORE, doc, position, "find log position");
        let checkpointed =
            self.seq_of(CHECKPOINT_POSITION_BEFORE, doc, position, "find checkpoint position");
        Ok(logged.await?.max(checkpointed.await?))
    }

    async fn purge(&self, doc: &str) -> Result<bool, StoreError> {
        let mut txn = self
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin purge", error))?;
        if let Some(lock) = D::DOCUMENT_LOCK {
            sqlx::query(lock)
                .bind(doc)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("lock document history", error))?;
        }
        let mut removed = 0;
        for statement in [PURGE_LOG, PURGE_CHECKPOINTS, PURGE_VERSIONS] {
            let done = sqlx::query(statement)
                .bind(doc)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("purge history", error))?;
            removed += D::rows_affected(&done);
        }
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit purge", error))?;
        Ok(removed > 0)
    }

    async fn read_at(&self, doc: &str, covers: LogSeq) -> Result<HistoryRead, StoreError> {
        let mut txn = self
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin history read", error))?;
        let checkpoint_row = sqlx::query(CHECKPOINT_BEFORE)
            .bind(doc)
            .bind(covers)
            .fetch_optional(&mut *txn)
            .await
            .map_err(|error| StoreError::new("read checkpoint", error))?;
        let (after, checkpoint) = match checkpoint_row {
            Some(row) => (
                row.try_get::<LogSeq, _>("covers_seq").map_err(read_error)?,
                Some(row.try_get::<Vec<u8>, _>("state").map_err(read_error)?),
            ),
            None => (0, None),
        };
        let update_rows = sqlx::query(UPDATES_BETWEEN)
            .bind(doc)
            .bind(after)
            .bind(covers)
            .fetch_all(&mut *txn)
            .await
            .map_err(|error| StoreError::new("read history log", error))?;
        txn.commit()
            .await
            .map_err(|error| StoreError::new("end history read", error))?;
        let mut updates = Vec::with_capacity(update_rows.len());
        for row in update_rows {
            updates.push(row.try_get::<Vec<u8>, _>("data").map_err(read_error)?);
        }
        Ok(HistoryRead {
            checkpoint,
            updates,
        })
    }

    async fn updates_between(
        &self,
        doc: &str,
        after: LogSeq,
        upto: LogSeq,
    ) -> Result<Vec<AttributedUpdate>, StoreError> {
        let rows = sqlx::query(ATTRIBUTED_BETWEEN)
            .bind(doc)
            .bind(after)
            .bind(upto)
            .fetch_all(self.pool())
            .await
            .map_err(|error| StoreError::new("read history log", error))?;
        let mut updates = Vec::with_capacity(rows.len());
        for row in rows {
            updates.push(AttributedUpdate {
                author: row.try_get("author").map_err(read_error)?,
                update: row.try_get("data").map_err(read_error)?,
            });
        }
        Ok(updates)
    }

    async fn activity(
        &self,
        doc: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<AuthorActivity>, StoreError> {
        let rows = sqlx::query(ACTIVITY)
            .bind(doc)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(self.pool())
            .await
            .map_err(|error| StoreError::new("read activity", error))?;
        let mut activity = Vec::with_capacity(rows.len());
        for row in rows {
            let updates: i64 = row.try_get("updates").map_err(read_error)?;
            activity.push(AuthorActivity {
                author: row.try_get("author").map_err(read_error)?,
                updates: u64::try_from(updates).unwrap_or(0),
                first_ms: row.try_get("first_ms").map_err(read_error)?,
                last_ms: row.try_get("last_ms").map_err(read_error)?,
            });
        }
        Ok(activity)
    }

    async fn history_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.list_history_documents(log, after, limit).await
    }

    async fn compaction_plan(
        &self,
        log: &str,
        doc: &str,
        cutoff_ms: i64,
    ) -> Result<Option<CompactionPlan>, StoreError> {
        self.plan_compaction(log, doc, cutoff_ms).await
    }

    async fn compact(&self, log: &str, compaction: Compaction<'_>) -> Result<Compacted, StoreError> {
        self.commit_compaction(log, compaction).await
    }

    async fn history_stats(&self, log: &str) -> Result<HistoryStats, StoreError> {
        self.read_history_stats(log).await
    }
}
}

/// A version from its stored columns.
pub(crate) fn version_of(
    id: i64,
    name: Option<String>,
    kind: &str,
    at_ms: i64,
    covers: LogSeq,
    authors_json: &str,
) -> Result<Version, StoreError> {
    let kind = VersionKind::parse(kind).ok_or_else(|| {
        StoreError::new(
            "read version",
            std::io::Error::other(format!("unknown version kind {kind:?}")),
        )
    })?;
    let authors: Vec<String> = serde_json::from_str(authors_json)
        .map_err(|error| StoreError::new("read version authors", error))?;
    Ok(Version {
        id,
        name,
        kind,
        at_ms,
        covers,
        authors,
    })
}
