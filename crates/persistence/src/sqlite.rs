//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability: `synchronous=FULL`, so a committed append survives a process
//! crash and a power loss. Group commit (one transaction per batch of
//! updates, see `weft_sync::Committer`) keeps that affordable.
//!
//! Writes take SQLite's single write lock; every write transaction starts
//! with a write statement so a waiting writer queues on `busy_timeout`
//! instead of failing with `SQLITE_BUSY` on a lock upgrade.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use weft_sync::store::{
    EMPTY_STATE_VECTOR_V1, EMPTY_UPDATE_V1, ListedDoc, NewUpdate, SnapshotWrite, Tombstone,
    TopicSnapshot,
};
use weft_sync::{DocStore, LogSeq, LoggedUpdate, Snapshot, StoreError, StoredDoc};

use crate::{OpenError, tombstone_columns, unix_millis};

/// How long a statement waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool: one writer at a time is SQLite's rule; the rest
/// serve concurrent document loads (WAL readers do not block the writer).
const MAX_CONNECTIONS: u32 = 4;
/// How long a caller waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite-backed update log and snapshots.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(OpenError::InvalidUrl)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(directory) = options.get_filename().parent()
            && !directory.as_os_str().is_empty()
        {
            create_dir(directory)?;
        }
        // Two processes opening one new database at once would both run
        // the first migration, and the second would fail on a table the
        // first just created: they take turns through a lock file beside it.
        let _turn = migration_lock(options.get_filename()).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations/sqlite")
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

/// An exclusive lock on `<database>.lock`, held until dropped; `None` for an
/// in-memory database.
async fn migration_lock(database: &Path) -> Result<Option<std::fs::File>, OpenError> {
    let name = database.as_os_str();
    if name.is_empty() || name == ":memory:" {
        return Ok(None);
    }
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    let path = std::path::PathBuf::from(path);
    let display = path.display().to_string();
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?; // waits for the other process's migrations
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|join| OpenError::Lock {
        path: display.clone(),
        source: std::io::Error::other(join),
    })?;
    locked.map(Some).map_err(|source| OpenError::Lock {
        path: display,
        source,
    })
}

fn create_dir(directory: &Path) -> Result<(), OpenError> {
    std::fs::create_dir_all(directory).map_err(|source| OpenError::CreateDir {
        path: directory.display().to_string(),
        source,
    })
}

#[async_trait]
impl DocStore for SqliteStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin load", error))?;
        let snapshot_row =
            sqlx::query("SELECT state, state_vector, covers_seq, tombstone_sv, deleted_position, deleted_at FROM weft_snapshots WHERE doc = ?")
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
            "SELECT seq, data FROM weft_updates WHERE doc = ? AND seq > ? ORDER BY seq",
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
        let mut txn = self
            .pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin append", error))?;
        let mut seqs = Vec::with_capacity(updates.len());
        for new in updates {
            let seq: LogSeq = sqlx::query_scalar(
                "INSERT INTO weft_updates (doc, data) VALUES (?, ?) RETURNING seq",
            )
            .bind(new.doc.as_ref())
            .bind(new.update.as_ref())
            .fetch_one(&mut *txn)
            .await
            .map_err(|error| StoreError::new("append update", error))?;
            seqs.push(seq);
        }
        txn.commit()
            .await
            .map_err(|error| StoreError::new("commit appended updates", error))?;
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
        // The WHERE clause is the fence: a snapshot never replaces one that
        // covers the same or a later position.
        let (tombstone_sv, deleted_position, deleted_at) =
            tombstone_columns(snapshot.tombstone.as_ref());
        let written = sqlx::query(
            "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at,
                 tombstone_sv, deleted_position, deleted_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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
        sqlx::query("DELETE FROM weft_updates WHERE doc = ? AND seq <= ?")
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
        // A new position: AUTOINCREMENT never hands a sequence number out
        // twice, even once its row is gone.
        let seq: LogSeq = sqlx::query_scalar(
            "INSERT INTO weft_updates (doc, data) VALUES (?, x'') RETURNING seq",
        )
        .bind(doc)
        .fetch_one(&mut *txn)
        .await
        .map_err(|error| StoreError::new("take deletion position", error))?;
        sqlx::query("DELETE FROM weft_updates WHERE doc = ? AND seq <= ?")
            .bind(doc)
            .bind(seq)
            .execute(&mut *txn)
            .await
            .map_err(|error| StoreError::new("prune deleted document", error))?;
        // Unconditional: the position is the newest there is.
        sqlx::query(
            "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at,
                 tombstone_sv, deleted_position, deleted_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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
        .bind(seq)
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
                     SELECT doc, length(state) AS snapshot_bytes, updated_at AS snapshot_at
                     FROM weft_snapshots
                     WHERE deleted_position IS NULL OR covers_seq > deleted_position
                     UNION ALL
                     SELECT DISTINCT doc, 0, NULL FROM weft_updates
                 ) AS documents
                 WHERE doc > ?
                 GROUP BY doc
                 ORDER BY doc
                 LIMIT ?",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await,
            Some(topic) => {
                sqlx::query(
                    "SELECT doc, length(state) AS snapshot_bytes, updated_at AS snapshot_at
                 FROM weft_topic_snapshots
                 WHERE topic = ? AND doc > ?
                   AND (deleted_position IS NULL OR covers_offset > deleted_position)
                 ORDER BY doc
                 LIMIT ?",
                )
                .bind(topic)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
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
             FROM weft_topic_snapshots WHERE topic = ? AND doc = ?",
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
        // The WHERE clause is the fence (see DocStore::save_topic_snapshot).
        let (tombstone_sv, deleted_position, deleted_at) =
            tombstone_columns(snapshot.tombstone.as_ref());
        let written = sqlx::query(
            "INSERT INTO weft_topic_snapshots
                 (topic, doc, state, state_vector, partition_id, covers_offset, updated_at,
                  tombstone_sv, deleted_position, deleted_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
fn tombstone_from_row(row: &sqlx::sqlite::SqliteRow) -> Option<Tombstone> {
    let state_vector: Option<Vec<u8>> = row.get("tombstone_sv");
    let position: Option<i64> = row.get("deleted_position");
    let deleted_at_ms: Option<i64> = row.get("deleted_at");
    Some(Tombstone {
        state_vector: state_vector?,
        position: position?,
        deleted_at_ms: deleted_at_ms.unwrap_or(0),
    })
}
