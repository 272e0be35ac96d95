//! [`SqlStore`]: the one implementation of [`SnapshotStore`] and
//! [`EmbeddedLog`] over SQL, generic over its [`Dialect`].
//!
//! The log id picks the table: snapshots of [`EMBEDDED_LOG`] are the rows
//! of `weft_snapshots` (beside the embedded log, `weft_updates`, which
//! their writes prune), snapshots of any other log (a Kafka topic) the rows
//! of `weft_topic_snapshots` under that topic. So the schema is the one
//! Weft has always written, and a database opens unchanged.
//!
//! Every write transaction starts with a write statement, so that on SQLite
//! a waiting writer queues on `busy_timeout` instead of failing with
//! `SQLITE_BUSY` on a lock upgrade.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Pool, Row, Type};
use weft_sync::store::{
    EMBEDDED_LOG, EMPTY_STATE_VECTOR_V1, EMPTY_UPDATE_V1, EmbeddedLog, ListedDoc, NewUpdate,
    Position, SnapshotStore, SnapshotWrite, Tombstone,
};
use weft_sync::{LogSeq, LoggedUpdate, Snapshot, StoreError, StoredDoc, unix_millis};

use crate::dialect::{Dialect, Pools, sql_store_impl};
use crate::error::OpenError;
use crate::sql;

/// An update log and snapshots in a SQL database.
pub struct SqlStore<D: Dialect> {
    pool: Pool<D::Db>,
    /// Appends go here (see [`Pools::appender`]).
    appender: D::Appender,
    /// Whether snapshots leave the embedded log in place (history keeps
    /// it; see `weft_sync::history::History::keep_log`). Shared by clones.
    keeps_log: Arc<AtomicBool>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqlStore")
            .field("dialect", &std::any::type_name::<D>())
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            appender: self.appender.clone(),
            keeps_log: self.keeps_log.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let Pools { pool, appender } = D::connect(url).await?;
        Ok(Self {
            pool,
            appender,
            keeps_log: Arc::new(AtomicBool::new(false)),
            dialect: PhantomData,
        })
    }

    /// Whether snapshots leave the embedded log in place.
    pub(crate) fn keeps_log(&self) -> bool {
        self.keeps_log.load(Ordering::Relaxed)
    }

    /// From now on, snapshots leave the embedded log in place.
    pub(crate) fn set_keeps_log(&self) {
        self.keeps_log.store(true, Ordering::Relaxed);
    }

    /// The pool loads and history reads go through.
    pub(crate) fn pool(&self) -> &Pool<D::Db> {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        D::close_appender(&self.appender).await;
        self.pool.close().await;
    }
}

sql_store_impl! {
#[async_trait]
impl EmbeddedLog for SqlStore<D> {
    async fn load_after(&self, doc: &str, after: LogSeq) -> Result<StoredDoc, StoreError> {
        // The snapshot and the log after it from one point in time, so a
        // concurrent snapshot write cannot prune rows between the two reads.
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin load", error))?;
        if let Some(snapshot_read) = D::SNAPSHOT_READ {
            sqlx::query(snapshot_read)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("begin load", error))?;
        }
        let snapshot_row = sqlx::query(sql::READ_SNAPSHOT_AFTER)
            .bind(doc)
            .bind(after)
            .fetch_optional(&mut *txn)
            .await
            .map_err(|error| StoreError::new("read snapshot", error))?;
        let snapshot = match snapshot_row {
            Some(row) => Some(Snapshot {
                state: row.try_get("state").map_err(read_error)?,
                state_vector: row.try_get("state_vector").map_err(read_error)?,
                covers: Position::embedded(row.try_get("covers_seq").map_err(read_error)?),
                tombstone: tombstone_from_row(&row)?,
            }),
            None => None,
        };
        let log_after = snapshot
            .as_ref()
            .map_or(after, |snapshot| snapshot.covers.offset);
        let update_rows = sqlx::query(sql::READ_LOG)
            .bind(doc)
            .bind(log_after)
            .fetch_all(&mut *txn)
            .await
            .map_err(|error| StoreError::new("read update log", error))?;
        txn.commit()
            .await
            .map_err(|error| StoreError::new("end load", error))?;
        let mut updates = Vec::with_capacity(update_rows.len());
        for row in update_rows {
            updates.push(LoggedUpdate {
                seq: row.try_get("seq").map_err(read_error)?,
                update: row.try_get("data").map_err(read_error)?,
            });
        }
        Ok(StoredDoc {
            snapshot,
            updates,
            deletions: Vec::new(),
        })
    }

    async fn append(&self, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        D::append(&self.appender, updates).await
    }

    async fn delete_document(
        &self,
        doc: &str,
        tombstone_state_vector: &[u8],
        deleted_at_ms: i64,
    ) -> Result<LogSeq, StoreError> {
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin delete", error))?;
        // A new position, the newest there is: a log row of its own (pruned
        // at once with the rest of the document's log below).
        let seq: LogSeq = sqlx::query_scalar(sql::APPEND_ONE)
            .bind(doc)
            .bind(DELETION_MARKER)
            .fetch_one(&mut *txn)
            .await
            .map_err(|error| StoreError::new("take deletion position", error))?;
        // History keeps the log for an undelete (a purge removes it).
        if !self.keeps_log() {
            sqlx::query(sql::PRUNE_LOG)
                .bind(doc)
                .bind(seq)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("prune deleted document", error))?;
        }
        sqlx::query(sql::WRITE_TOMBSTONE)
            .bind(doc)
            .bind(EMPTY_UPDATE_V1)
            .bind(EMPTY_STATE_VECTOR_V1)
            .bind(seq)
            .bind(unix_millis())
            .bind(tombstone_state_vector)
            .bind(deleted_at_ms)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("write tombstone", error))?;
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit deletion", error))?;
        Ok(seq)
    }

    async fn save_revocation(
        &self,
        id: &str,
        record: &[u8],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::SAVE_REVOCATION)
            .bind(id)
            .bind(record)
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(|error| StoreError::new("save revocation", error))?;
        Ok(())
    }

    async fn load_revocations(&self, now: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        sqlx::query(sql::DROP_ENDED_REVOCATIONS)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|error| StoreError::new("drop ended revocations", error))?;
        sqlx::query_scalar(sql::READ_REVOCATIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| StoreError::new("read revocations", error))
    }
}
}

sql_store_impl! {
#[async_trait]
impl SnapshotStore for SqlStore<D> {
    async fn load_snapshot(&self, log: &str, doc: &str) -> Result<Option<Snapshot>, StoreError> {
        if log == EMBEDDED_LOG {
            let row = sqlx::query(sql::READ_SNAPSHOT)
                .bind(doc)
                .fetch_optional(&self.pool)
                .await
                .map_err(|error| StoreError::new("read snapshot", error))?;
            let Some(row) = row else {
                return Ok(None);
            };
            return Ok(Some(Snapshot {
                state: row.try_get("state").map_err(read_error)?,
                state_vector: row.try_get("state_vector").map_err(read_error)?,
                covers: Position::embedded(row.try_get("covers_seq").map_err(read_error)?),
                tombstone: tombstone_from_row(&row)?,
            }));
        }
        let row = sqlx::query(sql::READ_TOPIC_SNAPSHOT)
            .bind(log)
            .bind(doc)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| StoreError::new("read topic snapshot", error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            state: row.try_get("state").map_err(read_error)?,
            state_vector: row.try_get("state_vector").map_err(read_error)?,
            covers: Position {
                partition: row.try_get("partition_id").map_err(read_error)?,
                offset: row.try_get("covers_offset").map_err(read_error)?,
            },
            tombstone: tombstone_from_row(&row)?,
        }))
    }

    async fn save_snapshot(
        &self,
        log: &str,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        if log == EMBEDDED_LOG {
            self.save_embedded_snapshot(doc, snapshot).await
        } else {
            self.save_topic_snapshot(log, doc, snapshot).await
        }
    }

    async fn list_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError> {
        let rows = if log == EMBEDDED_LOG {
            sqlx::query(D::LIST_DOCUMENTS)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
        } else {
            sqlx::query(D::LIST_TOPIC_DOCUMENTS)
                .bind(log)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
        }
        .map_err(|error| StoreError::new("list documents", error))?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in rows {
            let snapshot_bytes: Option<i64> = row.try_get("snapshot_bytes").map_err(read_error)?;
            listed.push(ListedDoc {
                name: row.try_get("doc").map_err(read_error)?,
                snapshot_bytes: snapshot_bytes.unwrap_or(0),
                snapshot_at_ms: row.try_get("snapshot_at").map_err(read_error)?,
            });
        }
        Ok(listed)
    }

    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query(sql::CHECK)
            .execute(&self.pool)
            .await
            .map_err(|error| StoreError::new("check store", error))?;
        Ok(())
    }
}
}

sql_store_impl! {
impl SqlStore<D> {
    /// A snapshot of the embedded log, pruning the log up to it.
    async fn save_embedded_snapshot(
        &self,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        debug_assert_eq!(
            snapshot.covers,
            Position::embedded(snapshot.covers.offset),
            "the embedded log has one partition"
        );
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin snapshot", error))?;
        let tombstone = TombstoneColumns::of(snapshot.tombstone.as_ref());
        let written = sqlx::query(sql::WRITE_SNAPSHOT)
            .bind(doc)
            .bind(snapshot.state.as_slice())
            .bind(snapshot.state_vector.as_slice())
            .bind(snapshot.covers.offset)
            .bind(unix_millis())
            .bind(tombstone.state_vector)
            .bind(tombstone.position)
            .bind(tombstone.deleted_at_ms)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("write snapshot", error))?;
        if D::rows_affected(&written) == 0 {
            txn.rollback()
                .await
                .map_err(|error| StoreError::new("end snapshot", error))?;
            return Ok(SnapshotWrite::Superseded);
        }
        if !self.keeps_log() {
            sqlx::query(sql::PRUNE_LOG)
                .bind(doc)
                .bind(snapshot.covers.offset)
                .execute(&mut *txn)
                .await
                .map_err(|error| StoreError::new("prune update log", error))?;
        }
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit snapshot", error))?;
        Ok(SnapshotWrite::Written)
    }

    /// A snapshot of a topic's log.
    async fn save_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        let tombstone = TombstoneColumns::of(snapshot.tombstone.as_ref());
        let written = sqlx::query(sql::WRITE_TOPIC_SNAPSHOT)
            .bind(topic)
            .bind(doc)
            .bind(snapshot.state.as_slice())
            .bind(snapshot.state_vector.as_slice())
            .bind(snapshot.covers.partition)
            .bind(snapshot.covers.offset)
            .bind(unix_millis())
            .bind(tombstone.state_vector)
            .bind(tombstone.position)
            .bind(tombstone.deleted_at_ms)
            .execute(&self.pool)
            .await
            .map_err(|error| StoreError::new("write topic snapshot", error))?;
        Ok(if D::rows_affected(&written) == 0 {
            SnapshotWrite::Superseded
        } else {
            SnapshotWrite::Written
        })
    }
}
}

/// The data of the log row that takes a deletion's position.
const DELETION_MARKER: &[u8] = &[];

/// A row whose columns do not decode as the schema says.
pub(crate) fn read_error(error: sqlx::Error) -> StoreError {
    StoreError::new("read row", error)
}

/// The nullable columns a snapshot row keeps its tombstone in, `NULL` for a
/// document never deleted.
struct TombstoneColumns<'a> {
    state_vector: Option<&'a [u8]>,
    position: Option<i64>,
    deleted_at_ms: Option<i64>,
}

impl<'a> TombstoneColumns<'a> {
    fn of(tombstone: Option<&'a Tombstone>) -> Self {
        Self {
            state_vector: tombstone.map(|tombstone| tombstone.state_vector.as_slice()),
            position: tombstone.map(|tombstone| tombstone.position),
            deleted_at_ms: tombstone.map(|tombstone| tombstone.deleted_at_ms),
        }
    }
}

/// The tombstone columns of a snapshot row (all `NULL`: never deleted).
fn tombstone_from_row<R: Row>(row: &R) -> Result<Option<Tombstone>, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    let state_vector: Option<Vec<u8>> = row.try_get("tombstone_sv").map_err(read_error)?;
    let position: Option<i64> = row.try_get("deleted_position").map_err(read_error)?;
    let deleted_at_ms: Option<i64> = row.try_get("deleted_at").map_err(read_error)?;
    let (Some(state_vector), Some(position)) = (state_vector, position) else {
        return Ok(None);
    };
    Ok(Some(Tombstone {
        state_vector,
        position,
        deleted_at_ms: deleted_at_ms.unwrap_or(0),
    }))
}
