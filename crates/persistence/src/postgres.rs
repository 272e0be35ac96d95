//! The production store: PostgreSQL, shared by every node and worker of a
//! cluster.
//!
//! It holds the same three things as the embedded store (an update log and
//! snapshots for a PostgreSQL-backed single node, and the topic snapshots
//! the persistence worker writes), with the same contract: the conformance
//! suite in `weft_sync::conformance` runs against both.
//!
//! Migrations run at open under sqlx's advisory lock, so several processes
//! starting at once migrate the schema once. A `search_path` in the URL
//! (`?options=-c%20search_path%3Dweft`) puts the tables in a schema of
//! their own.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use weft_sync::store::{
    EMPTY_STATE_VECTOR_V1, EMPTY_UPDATE_V1, ListedDoc, NewUpdate, SnapshotWrite, Tombstone,
    TopicSnapshot,
};
use weft_sync::{DocStore, LogSeq, LoggedUpdate, Snapshot, StoreError, StoredDoc};

use crate::{OpenError, tombstone_columns, unix_millis};

/// Connections per process: loads, appends and snapshot writes of one node
/// or worker; PostgreSQL's own limit is shared by every process.
const MAX_CONNECTIONS: u32 = 8;
/// How long a caller waits for a free connection before the operation fails
/// (and its session is closed, or its snapshot retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL-backed update log and snapshots.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://...`) and migrates the schema.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let options: PgConnectOptions = url.parse().map_err(OpenError::InvalidUrl)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl DocStore for PostgresStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        // REPEATABLE READ: the snapshot and the log after it from one
        // point in time, so a concurrent snapshot write cannot prune rows
        // between the two reads.
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin load", error))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("begin load", error))?;
        let snapshot_row = sqlx::query(
            "SELECT state, state_vector, covers_seq, tombstone_sv, deleted_position, deleted_at FROM weft_snapshots WHERE doc = $1",
        )
        .bind(doc)
        .fetch_optional(&mut *txn)
        .await
        .map_err(|error| StoreError::new("read snapshot", error))?;
        let snapshot = snapshot_row.map(|row| Snapshot {
            state: row.get("state"),
            state_vector: row.get("state_vector"),
            covers_seq: row.get("covers_seq"),
            tombstone: tombstone_from_row(&row),
        });
        let after = snapshot.as_ref().map_or(0, |snapshot| snapshot.covers_seq);
        let update_rows = sqlx::query(
            "SELECT seq, data FROM weft_updates WHERE doc = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(doc)
        .bind(after)
        .fetch_all(&mut *txn)
        .await
        .map_err(|error| StoreError::new("read update log", error))?;
        txn.commit()
            .await
            .map_err(|error| StoreError::new("end load", error))?;
        let updates = update_rows
            .into_iter()
            .map(|row| LoggedUpdate {
                seq: row.get("seq"),
                update: row.get("data"),
            })
            .collect();
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
        // One statement for the batch; WITH ORDINALITY keeps the input order
        // so the returned sequence numbers line up with `updates`.
        let docs: Vec<&str> = updates.iter().map(|new| new.doc.as_ref()).collect();
        let data: Vec<&[u8]> = updates.iter().map(|new| new.update.as_ref()).collect();
        let rows = sqlx::query(
            "INSERT INTO weft_updates (doc, data)
             SELECT doc, data FROM UNNEST($1::text[], $2::bytea[]) WITH ORDINALITY AS batch(doc, data, n)
             ORDER BY n
             RETURNING seq",
        )
        .bind(&docs)
        .bind(&data)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| StoreError::new("append updates", error))?;
        let mut seqs: Vec<LogSeq> = rows.iter().map(|row| row.get("seq")).collect();
        // BIGSERIAL values follow the insertion order of one statement.
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn save_snapshot(
        &self,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin snapshot", error))?;
        // The WHERE clause is the fence.
        let (tombstone_sv, deleted_position, deleted_at) =
            tombstone_columns(snapshot.tombstone.as_ref());
        let written = sqlx::query(
            "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at,
                 tombstone_sv, deleted_position, deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (doc) DO UPDATE SET
                 state = excluded.state,
                 state_vector = excluded.state_vector,
                 covers_seq = excluded.covers_seq,
                 updated_at = excluded.updated_at,
                 tombstone_sv = excluded.tombstone_sv,
                 deleted_position = excluded.deleted_position,
                 deleted_at = excluded.deleted_at
             WHERE excluded.covers_seq > weft_snapshots.covers_seq",
        )
        .bind(doc)
        .bind(&snapshot.state)
        .bind(&snapshot.state_vector)
        .bind(snapshot.covers_seq)
        .bind(unix_millis())
        .bind(tombstone_sv)
        .bind(deleted_position)
        .bind(deleted_at)
        .execute(&mut *txn)
        .await
        .map_err(|error| StoreError::new("write snapshot", error))?
        .rows_affected();
        if written == 0 {
            txn.rollback()
                .await
                .map_err(|error| StoreError::new("end snapshot", error))?;
            return Ok(SnapshotWrite::Superseded);
        }
        sqlx::query("DELETE FROM weft_updates WHERE doc = $1 AND seq <= $2")
            .bind(doc)
            .bind(snapshot.covers_seq)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("prune update log", error))?;
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit snapshot", error))?;
        Ok(SnapshotWrite::Written)
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
        let seq: LogSeq =
            sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('weft_updates', 'seq'))")
                .fetch_one(&mut *txn)
                .await
                .map_err(|error| StoreError::new("take deletion position", error))?;
        sqlx::query("DELETE FROM weft_updates WHERE doc = $1 AND seq <= $2")
            .bind(doc)
            .bind(seq)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("prune deleted document", error))?;
        // Unconditional: the position is the newest there is.
        sqlx::query(
            "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at,
                 tombstone_sv, deleted_position, deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $4, $7)
             ON CONFLICT (doc) DO UPDATE SET
                 state = excluded.state,
                 state_vector = excluded.state_vector,
                 covers_seq = excluded.covers_seq,
                 updated_at = excluded.updated_at,
                 tombstone_sv = excluded.tombstone_sv,
                 deleted_position = excluded.deleted_position,
                 deleted_at = excluded.deleted_at",
        )
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

    async fn list_documents(
        &self,
        topic: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError> {
        let rows = match topic {
            // A document whose snapshot is its deletion is listed only once
            // something was logged after it.
            None => sqlx::query(
                "SELECT doc, MAX(snapshot_bytes) AS snapshot_bytes, MAX(snapshot_at) AS snapshot_at
                 FROM (
                     SELECT doc, octet_length(state)::BIGINT AS snapshot_bytes, updated_at AS snapshot_at
                     FROM weft_snapshots
                     WHERE deleted_position IS NULL OR covers_seq > deleted_position
                     UNION ALL
                     SELECT DISTINCT doc, 0::BIGINT, NULL::BIGINT FROM weft_updates
                 ) AS documents
                 WHERE doc COLLATE \"C\" > $1
                 GROUP BY doc
                 ORDER BY doc COLLATE \"C\"
                 LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await,
            Some(topic) => sqlx::query(
                "SELECT doc, octet_length(state)::BIGINT AS snapshot_bytes, updated_at AS snapshot_at
                 FROM weft_topic_snapshots
                 WHERE topic = $1 AND doc COLLATE \"C\" > $2
                   AND (deleted_position IS NULL OR covers_offset > deleted_position)
                 ORDER BY doc COLLATE \"C\"
                 LIMIT $3",
            )
            .bind(topic)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await,
        }
        .map_err(|error| StoreError::new("list documents", error))?;
        Ok(rows
            .into_iter()
            .map(|row| ListedDoc {
                name: row.get("doc"),
                snapshot_bytes: row.get::<Option<i64>, _>("snapshot_bytes").unwrap_or(0),
                snapshot_at_ms: row.get("snapshot_at"),
            })
            .collect())
    }

    async fn load_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
    ) -> Result<Option<TopicSnapshot>, StoreError> {
        let row = sqlx::query(
            "SELECT state, state_vector, partition_id, covers_offset,
                    tombstone_sv, deleted_position, deleted_at
             FROM weft_topic_snapshots WHERE topic = $1 AND doc = $2",
        )
        .bind(topic)
        .bind(doc)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| StoreError::new("read topic snapshot", error))?;
        Ok(row.map(|row| TopicSnapshot {
            state: row.get("state"),
            state_vector: row.get("state_vector"),
            partition: row.get("partition_id"),
            covers_offset: row.get("covers_offset"),
            tombstone: tombstone_from_row(&row),
        }))
    }

    async fn save_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
        snapshot: &TopicSnapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        // The WHERE clause is the fence (see DocStore::save_topic_snapshot);
        // the row lock of ON CONFLICT serialises two writers of one document.
        let (tombstone_sv, deleted_position, deleted_at) =
            tombstone_columns(snapshot.tombstone.as_ref());
        let written = sqlx::query(
            "INSERT INTO weft_topic_snapshots
                 (topic, doc, state, state_vector, partition_id, covers_offset, updated_at,
                  tombstone_sv, deleted_position, deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (topic, doc) DO UPDATE SET
                 state = excluded.state,
                 state_vector = excluded.state_vector,
                 partition_id = excluded.partition_id,
                 covers_offset = excluded.covers_offset,
                 updated_at = excluded.updated_at,
                 tombstone_sv = excluded.tombstone_sv,
                 deleted_position = excluded.deleted_position,
                 deleted_at = excluded.deleted_at
             WHERE excluded.partition_id <> weft_topic_snapshots.partition_id
                OR excluded.covers_offset > weft_topic_snapshots.covers_offset",
        )
        .bind(topic)
        .bind(doc)
        .bind(&snapshot.state)
        .bind(&snapshot.state_vector)
        .bind(snapshot.partition)
        .bind(snapshot.covers_offset)
        .bind(unix_millis())
        .bind(tombstone_sv)
        .bind(deleted_position)
        .bind(deleted_at)
        .execute(&self.pool)
        .await
        .map_err(|error| StoreError::new("write topic snapshot", error))?
        .rows_affected();
        Ok(if written == 0 {
            SnapshotWrite::Superseded
        } else {
            SnapshotWrite::Written
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|error| StoreError::new("check store", error))?;
        Ok(())
    }
}

/// The tombstone columns of a snapshot row (all NULL: never deleted).
fn tombstone_from_row(row: &sqlx::postgres::PgRow) -> Option<Tombstone> {
    let state_vector: Option<Vec<u8>> = row.get("tombstone_sv");
    let position: Option<i64> = row.get("deleted_position");
    let deleted_at_ms: Option<i64> = row.get("deleted_at");
    Some(Tombstone {
        state_vector: state_vector?,
        position: position?,
        deleted_at_ms: deleted_at_ms.unwrap_or(0),
    })
}
