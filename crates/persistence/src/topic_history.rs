//! A cluster's [`History`]: [`TopicHistory`], the store's view of one
//! topic. Versions and checkpoints are the shared tables (`weft_versions`,
//! `weft_checkpoints`, positions being the document's partition offsets);
//! the per-edit log is `weft_topic_updates`, which the persistence worker
//! fills as it folds ([`EditLog::append_edits`]) instead of the embedded
//! `weft_updates`.
//!
//! A node takes a version from its loaded document, possibly before the
//! worker stored the rows up to it; such a version is stored with
//! `authors_pending` and its authors are completed by the first read that
//! finds the rows there (`TopicHistory::complete_authors`).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};
use weft_sync::history::{
    AuthorActivity, Compacted, Compaction, CompactionPlan, EditLog, History, HistoryRead,
    HistoryStats, LoggedEdit, NewVersion, Version,
};
use weft_sync::text_runs::AttributedUpdate;
use weft_sync::{LogSeq, StoreError};

use crate::dialect::{Dialect, sql_store_impl};
use crate::history::version_of;
use crate::store::{SqlStore, read_error};
use crate::topic_sql::{
    ACTIVITY, ATTRIBUTED_BETWEEN, AUTHORS_BETWEEN, CHECKPOINT_BEFORE, CHECKPOINT_POSITION_AT,
    CHECKPOINT_POSITION_BEFORE, COMPLETE_AUTHORS, EDITS_PER_INSERT, INSERT_CHECKPOINT,
    INSERT_VERSION, LATEST_VERSION_COVERS, POSITION_AT, POSITION_BEFORE, PREVIOUS_VERSION_COVERS,
    PURGE_CHECKPOINTS, PURGE_EDITS, PURGE_VERSIONS, STORED_UPTO, TAKE_FEED_SEQS, UPDATES_BETWEEN,
    VERSION_COLUMNS, insert_edits_sql,
};

/// The history of the documents of one topic, in a [`SqlStore`].
pub struct TopicHistory<D: Dialect> {
    pub(crate) store: SqlStore<D>,
    pub(crate) topic: Arc<str>,
}

impl<D: Dialect> std::fmt::Debug for TopicHistory<D> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TopicHistory")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> TopicHistory<D> {
    /// The history of `topic`'s documents in `store`.
    pub fn new(store: SqlStore<D>, topic: &str) -> Self {
        Self {
            store,
            topic: Arc::from(topic),
        }
    }
}

sql_store_impl! {
impl TopicHistory<D> {
    async fn seq_of(
        &self,
        query: &'static str,
        doc: &str,
        bound: i64,
        what: &'static str,
    ) -> Result<Option<LogSeq>, StoreError> {
        sqlx::query(query)
            .bind(self.topic.as_ref())
            .bind(doc)
            .bind(bound)
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| StoreError::new(what, error))?
            .try_get("seq")
            .map_err(read_error)
    }

    async fn checkpoint_seq_of(
        &self,
        query: &'static str,
        doc: &str,
        bound: i64,
    ) -> Result<Option<LogSeq>, StoreError> {
        sqlx::query(query)
            .bind(doc)
            .bind(bound)
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| StoreError::new("find checkpoint position", error))?
            .try_get("seq")
            .map_err(read_error)
    }

    /// Who wrote the document's records after `after` up to `upto`, and
    /// whether the rows up to `upto` are all stored yet.
    async fn authors_between(
        &self,
        doc: &str,
        after: LogSeq,
        upto: LogSeq,
    ) -> Result<(Vec<String>, bool), StoreError> {
        // How far the rows go first, then the rows: read the other way
        // round, a batch the worker commits between the two reads would
        // make an author list that misses it look complete for good.
        let stored: Option<LogSeq> = sqlx::query(STORED_UPTO)
            .bind(self.topic.as_ref())
            .bind(doc)
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read stored edits", error))?
            .try_get("seq")
            .map_err(read_error)?;
        let rows = sqlx::query(AUTHORS_BETWEEN)
            .bind(self.topic.as_ref())
            .bind(doc)
            .bind(after)
            .bind(upto)
            .fetch_all(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read authors", error))?;
        let mut authors = Vec::with_capacity(rows.len());
        for row in rows {
            authors.push(row.try_get::<String, _>("author").map_err(read_error)?);
        }
        Ok((authors, stored.is_some_and(|stored| stored >= upto)))
    }

    /// A version read from its row, its authors completed if they were
    /// pending and the rows up to it are stored now.
    async fn complete_authors(&self, doc: &str, row: &<D::Db as sqlx::Database>::Row) -> Result<Version, StoreError> {
        let mut version = version_of(
            row.try_get("id").map_err(read_error)?,
            row.try_get("name").map_err(read_error)?,
            &row.try_get::<String, _>("kind").map_err(read_error)?,
            row.try_get("at_ms").map_err(read_error)?,
            row.try_get("covers_seq").map_err(read_error)?,
            &row.try_get::<String, _>("authors").map_err(read_error)?,
        )?;
        let pending: i32 = row.try_get("authors_pending").map_err(read_error)?;
        if pending == 0 {
            return Ok(version);
        }
        let previous: Option<LogSeq> = sqlx::query_scalar(PREVIOUS_VERSION_COVERS)
            .bind(doc)
            .bind(version.id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read previous version", error))?;
        let (authors, complete) = self
            .authors_between(doc, previous.unwrap_or(-1), version.covers)
            .await?;
        if complete {
            let authors_json = serde_json::to_string(&authors)
                .map_err(|error| StoreError::new("encode authors", error))?;
            sqlx::query(COMPLETE_AUTHORS)
                .bind(authors_json.as_str())
                .bind(version.id)
                .execute(self.store.pool())
                .await
                .map_err(|error| StoreError::new("complete version authors", error))?;
        }
        version.authors = authors;
        Ok(version)
    }
}
}

sql_store_impl! {
#[async_trait]
impl History for TopicHistory<D> {
    fn keep_log(&self) {
        // The topic is the log; its rows here are never pruned by snapshots.
    }

    async fn create_version(&self, version: NewVersion<'_>) -> Result<Version, StoreError> {
        let previous: Option<LogSeq> = sqlx::query_scalar(LATEST_VERSION_COVERS)
            .bind(version.doc)
            .fetch_optional(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read latest version", error))?;
        let (authors, complete) = self
            .authors_between(version.doc, previous.unwrap_or(-1), version.covers)
            .await?;
        let authors_json = serde_json::to_string(&authors)
            .map_err(|error| StoreError::new("encode authors", error))?;
        let mut txn = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin version", error))?;
        sqlx::query(INSERT_CHECKPOINT)
            .bind(version.doc)
            .bind(version.covers)
            .bind(version.state)
            .bind(version.at_ms)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("write checkpoint", error))?;
        let id: i64 = sqlx::query_scalar(INSERT_VERSION)
            .bind(version.doc)
            .bind(version.name)
            .bind(version.kind.as_str())
            .bind(version.at_ms)
            .bind(version.covers)
            .bind(authors_json.as_str())
            .bind(i32::from(!complete))
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
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM weft_versions WHERE doc = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(doc)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(self.store.pool())
            .await
            .map_err(|error| StoreError::new("list versions", error))?;
        let mut versions = Vec::with_capacity(rows.len());
        for row in &rows {
            versions.push(self.complete_authors(doc, row).await?);
        }
        Ok(versions)
    }

    async fn version(&self, doc: &str, id: i64) -> Result<Option<Version>, StoreError> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM weft_versions WHERE doc = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(doc)
            .bind(id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(|error| StoreError::new("read version", error))?;
        match row {
            Some(row) => Ok(Some(self.complete_authors(doc, &row).await?)),
            None => Ok(None),
        }
    }

    async fn position_at(&self, doc: &str, at_ms: i64) -> Result<Option<LogSeq>, StoreError> {
        let logged = self.seq_of(POSITION_AT, doc, at_ms, "find log position").await?;
        let checkpointed = self.checkpoint_seq_of(CHECKPOINT_POSITION_AT, doc, at_ms).await?;
        Ok(logged.max(checkpointed))
    }

    async fn position_before(
        &self,
        doc: &str,
        position: LogSeq,
    ) -> Result<Option<LogSeq>, StoreError> {
        let logged = self.seq_of(POSITION_BEFORE, doc, position, "find log position").await?;
        let checkpointed = self
            .checkpoint_seq_of(CHECKPOINT_POSITION_BEFORE, doc, position)
            .await?;
        Ok(logged.max(checkpointed))
    }

    async fn purge(&self, doc: &str) -> Result<bool, StoreError> {
        let mut txn = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin purge", error))?;
        // A compaction of the same document waits (PostgreSQL), so it
        // cannot write a checkpoint this purge misses.
        if let Some(lock) = D::DOCUMENT_LOCK {
            sqlx::query(lock)
                .bind(doc)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("lock document history", error))?;
        }
        let done = sqlx::query(PURGE_EDITS)
            .bind(self.topic.as_ref())
            .bind(doc)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("purge history", error))?;
        let mut removed = D::rows_affected(&done);
        for statement in [PURGE_CHECKPOINTS, PURGE_VERSIONS] {
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
            .store
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
            // Offsets start at 0: everything from the partition's start.
            None => (-1, None),
        };
        let update_rows = sqlx::query(UPDATES_BETWEEN)
            .bind(self.topic.as_ref())
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
            .bind(self.topic.as_ref())
            .bind(doc)
            .bind(after)
            .bind(upto)
            .fetch_all(self.store.pool())
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
            .bind(self.topic.as_ref())
            .bind(doc)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(self.store.pool())
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
        self.store.list_history_documents(log, after, limit).await
    }

    async fn compaction_plan(
        &self,
        log: &str,
        doc: &str,
        cutoff_ms: i64,
    ) -> Result<Option<CompactionPlan>, StoreError> {
        self.store.plan_compaction(log, doc, cutoff_ms).await
    }

    async fn compact(&self, log: &str, compaction: Compaction<'_>) -> Result<Compacted, StoreError> {
        self.store.commit_compaction(log, compaction).await
    }

    async fn history_stats(&self, log: &str) -> Result<HistoryStats, StoreError> {
        self.store.read_history_stats(log).await
    }
}
}

sql_store_impl! {
#[async_trait]
impl EditLog for TopicHistory<D> {
    async fn append_edits(&self, edits: &[LoggedEdit]) -> Result<(), StoreError> {
        if edits.is_empty() {
            return Ok(());
        }
        let mut txn = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|error| StoreError::new("begin edits", error))?;
        // The feed's numbers first: from here the counter row is locked
        // until the commit (a record stored again keeps its first number
        // and leaves a gap, which a feed's cursor steps over).
        let count = i64::try_from(edits.len()).unwrap_or(i64::MAX);
        let last: i64 = sqlx::query(TAKE_FEED_SEQS)
            .bind(self.topic.as_ref())
            .bind(count)
            .fetch_one(&mut *txn)
            .await
            .map_err(|error| StoreError::new("number edits", error))?
            .try_get("last_seq")
            .map_err(read_error)?;
        let mut feed_seq = last - count;
        for chunk in edits.chunks(EDITS_PER_INSERT) {
            let sql = insert_edits_sql(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for edit in chunk {
                query = query
                    .bind(self.topic.as_ref())
                    .bind(edit.doc.as_ref())
                    .bind(edit.position)
                    .bind(edit.update.as_slice())
                    .bind(edit.author.as_deref())
                    .bind(edit.at_ms)
                    .bind(edit.node.as_deref())
                    .bind({
                        feed_seq += 1;
                        feed_seq
                    });
            }
            query
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("write edits", error))?;
        }
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit edits", error))?;
        Ok(())
    }
}
}
