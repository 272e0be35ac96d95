//! The embedded dialect: one SQLite file in WAL mode.
//!
//! Durability: `synchronous=FULL`, so a committed append survives a process
//! crash and a power loss. Group commit (one transaction per batch of
//! updates, see `weft_sync::Committer`) keeps that affordable.
//!
//! Writes take SQLite's single write lock; every write transaction starts
//! with a write statement (see [`crate::store`]) so a waiting writer queues
//! on `busy_timeout`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Pool, SqlitePool};
use weft_sync::store::NewUpdate;
use weft_sync::{LogSeq, StoreError};

use crate::dialect::Dialect;
use crate::error::OpenError;
use crate::sql::{self, list_documents, list_topic_documents};
use crate::store::SqlStore;

/// How long a statement waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool: one writer at a time is SQLite's rule; the rest
/// serve concurrent document loads (WAL readers do not block the writer).
const MAX_CONNECTIONS: u32 = 4;
/// How long a caller waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite-backed update log and snapshots.
pub type SqliteStore = SqlStore<Sqlite>;

/// The SQLite dialect.
#[derive(Debug, Clone, Copy)]
pub struct Sqlite;

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;

    /// A WAL transaction reads one point in time from its first read on.
    const SNAPSHOT_READ: Option<&'static str> = None;
    /// SQLite compares text byte-wise (`BINARY`) by default.
    const LIST_DOCUMENTS: &'static str = list_documents!("");
    const LIST_TOPIC_DOCUMENTS: &'static str = list_topic_documents!("");

    async fn connect(url: &str) -> Result<SqlitePool, OpenError> {
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
        Ok(pool)
    }

    /// One `INSERT` per update in one transaction: SQLite statements are
    /// calls into the library, not round trips.
    async fn append(
        pool: &Pool<sqlx::Sqlite>,
        updates: &[NewUpdate],
    ) -> Result<Vec<LogSeq>, StoreError> {
        let mut txn = pool
            .begin()
            .await
            .map_err(|error| StoreError::new("begin append", error))?;
        let mut seqs = Vec::with_capacity(updates.len());
        for new in updates {
            let seq: LogSeq = sqlx::query_scalar(sql::APPEND_ONE)
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

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
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
