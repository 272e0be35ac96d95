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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use weft_sync::store::NewUpdate;
use weft_sync::{LogSeq, StoreError};

use crate::dialect::{Dialect, Pools};
use crate::error::OpenError;
use crate::sql::{
    self, checkpoint_documents, history_documents, list_documents, list_topic_documents,
};
use crate::store::SqlStore;

/// How long a statement waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool: one writer at a time is SQLite's rule; the rest
/// serve concurrent document loads (WAL readers do not block the writer).
const MAX_CONNECTIONS: u32 = 4;
/// How long a caller waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Updates per `INSERT` at most: five parameters each (document, bytes,
/// author, time, node), far below SQLite's limit on a statement's
/// parameters (32,766).
const APPEND_CHUNK_ROWS: usize = 256;

/// SQLite-backed update log and snapshots.
pub type SqliteStore = SqlStore<Sqlite>;

/// The SQLite dialect.
#[derive(Debug, Clone, Copy)]
pub struct Sqlite;

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    type Appender = Appender;

    /// A WAL transaction reads one point in time from its first read on.
    const SNAPSHOT_READ: Option<&'static str> = None;
    /// One writer at a time: the database's write lock.
    const DOCUMENT_LOCK: Option<&'static str> = None;
    const SESSION_TRY_LOCK: Option<&'static str> = None;
    /// SQLite compares text byte-wise (`BINARY`) by default.
    const LIST_DOCUMENTS: &'static str = list_documents!("");
    const LIST_TOPIC_DOCUMENTS: &'static str = list_topic_documents!("");
    const HISTORY_DOCUMENTS: &'static str = history_documents!("");
    const CHECKPOINT_DOCUMENTS: &'static str = checkpoint_documents!("");

    async fn connect(url: &str) -> Result<Pools<sqlx::Sqlite, Appender>, OpenError> {
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
            .connect_with(options.clone())
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        // Appends get one connection of their own (the same options, so the
        // same database, in memory too). A WAL connection drops its page
        // cache when it starts a transaction after another connection
        // wrote; appends taking turns over the pool's connections re-read
        // the log's pages from the file on nearly every commit.
        let connection = options.connect().await.map_err(OpenError::Connect)?;
        Ok(Pools {
            pool,
            appender: Appender {
                options,
                connection: Arc::new(tokio::sync::Mutex::new(Some(connection))),
            },
        })
    }

    /// As few statements as the batch allows: each statement is a hop to
    /// the connection's worker thread and back. A batch of at most
    /// `APPEND_CHUNK_ROWS` updates is one multi-row `INSERT`, atomic by
    /// itself; a larger one is several in one transaction.
    async fn append(appender: &Appender, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError> {
        let mut slot = appender.connection.lock().await;
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(
                appender
                    .options
                    .connect()
                    .await
                    .map_err(|error| StoreError::new("reopen append connection", error))?,
            ),
        };
        let appended = append_batch(connection, updates).await;
        if appended.is_err() {
            // Whatever failed (a full disk, a crashed worker thread), the
            // next append starts on a fresh connection instead of one left
            // in an unknown state.
            if let Some(connection) = slot.take() {
                let _closing_a_failed_connection = connection.close_hard().await;
            }
        }
        appended
    }

    async fn close_appender(appender: &Appender) {
        let connection = appender.connection.lock().await.take();
        if let Some(connection) = connection
            && let Err(error) = connection.close().await
        {
            tracing::debug!(%error, "closing the append connection failed");
        }
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The connection the update log's appends go through, and how to open
/// another if it fails.
///
/// Not a pool: a pool's connection costs two more round trips to sqlx's
/// worker thread per append (a ping when it is acquired, another when it
/// is returned, the latter from a task spawned for it), and an append
/// needs neither. Appends take turns on the mutex (the committer makes one
/// at a time).
#[derive(Debug, Clone)]
pub struct Appender {
    options: SqliteConnectOptions,
    /// `None` after a failed append, until the next opens a connection.
    connection: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
}

/// Appends `updates` on `connection`: one statement for a batch of at most
/// [`APPEND_CHUNK_ROWS`], otherwise several in one transaction.
async fn append_batch(
    connection: &mut SqliteConnection,
    updates: &[NewUpdate],
) -> Result<Vec<LogSeq>, StoreError> {
    let mut seqs = Vec::with_capacity(updates.len());
    if updates.len() <= APPEND_CHUNK_ROWS {
        append_rows(connection, updates, &mut seqs).await?;
        return Ok(seqs);
    }
    let mut txn = connection
        .begin()
        .await
        .map_err(|error| StoreError::new("begin append", error))?;
    let mut rest = updates;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(APPEND_CHUNK_ROWS));
        append_rows(&mut txn, chunk, &mut seqs).await?;
        rest = after;
    }
    txn.commit()
        .await
        .map_err(|error| StoreError::new("commit appended updates", error))?;
    Ok(seqs)
}

/// Appends `rows` and pushes their sequence numbers, in the order of
/// `rows`, onto `seqs`.
///
/// The rows go in statements whose sizes are powers of two, so the
/// connection's statement cache holds a few prepared statements, not one per
/// batch size. A statement returns no rows (each row would be a message
/// from sqlx's worker thread): one `INSERT` under the write lock takes
/// consecutive `AUTOINCREMENT` numbers in the order of its `VALUES`, so its
/// rows are numbered up to the last inserted row id.
async fn append_rows(
    connection: &mut SqliteConnection,
    rows: &[NewUpdate],
    seqs: &mut Vec<LogSeq>,
) -> Result<(), StoreError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let size = largest_power_of_two_at_most(rest.len().min(APPEND_CHUNK_ROWS));
        let (chunk, after) = rest.split_at(size);
        let mut query = sqlx::query(append_statement(size));
        for new in chunk {
            // The name binds as the shared `Arc<str>` it is (sqlx copies a
            // `&str` into a new `Arc<String>`: two allocations per row).
            query = query
                .bind(std::sync::Arc::clone(&new.doc))
                .bind(new.update.as_ref())
                .bind(new.attribution.author.as_deref())
                .bind(new.attribution.at_ms)
                .bind(new.attribution.node.as_deref());
        }
        let done = query
            .execute(&mut *connection)
            .await
            .map_err(|error| StoreError::new("append updates", error))?;
        let inserted = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        let rows_affected = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        if rows_affected != inserted {
            return Err(StoreError::new(
                "append updates",
                std::io::Error::other(format!(
                    "{rows_affected} rows inserted for {inserted} updates"
                )),
            ));
        }
        let last = done.last_insert_rowid();
        seqs.extend((last - inserted + 1)..=last);
        rest = after;
    }
    Ok(())
}

fn largest_power_of_two_at_most(count: usize) -> usize {
    debug_assert!(count > 0);
    1 << count.ilog2()
}

/// The `INSERT` of `rows` updates (a power of two, at most
/// [`APPEND_CHUNK_ROWS`]), built once per size.
fn append_statement(rows: usize) -> &'static str {
    static STATEMENTS: OnceLock<Vec<String>> = OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        (0..=APPEND_CHUNK_ROWS.ilog2())
            .map(|power| sql::append_many(1 << power))
            .collect()
    });
    let index = usize::try_from(rows.ilog2()).unwrap_or(usize::MAX);
    statements
        .get(index)
        .map_or(sql::APPEND_ONE_ROW, String::as_str)
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
