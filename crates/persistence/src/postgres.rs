//! The production dialect: PostgreSQL, shared by every node and worker of a
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

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{PgPool, Row};
use weft_sync::store::NewUpdate;
use weft_sync::{LogSeq, StoreError};

use crate::dialect::{Dialect, Pools};
use crate::error::OpenError;
use crate::sql::{checkpoint_documents, history_documents, list_documents, list_topic_documents};
use crate::store::SqlStore;

/// Connections per process: loads, appends and snapshot writes of one node
/// or worker; PostgreSQL's own limit is shared by every process.
const MAX_CONNECTIONS: u32 = 8;
/// How long a caller waits for a free connection before the operation fails
/// (and its session is closed, or its snapshot retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL-backed update log and snapshots.
pub type PostgresStore = SqlStore<Postgres>;

/// The PostgreSQL dialect.
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

/// Appends a batch in one statement; `WITH ORDINALITY` keeps the input
/// order, and `BIGSERIAL` values follow the insertion order of one
/// statement.
const APPEND_BATCH: &str = "INSERT INTO weft_updates (doc, data, author, at_ms, node)
     SELECT doc, data, author, at_ms, node
     FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::bigint[], $5::text[])
         WITH ORDINALITY AS batch(doc, data, author, at_ms, node, n)
     ORDER BY n
     RETURNING seq";

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    /// Appends share the pool: one statement per batch, over the network,
    /// and any connection will do.
    type Appender = PgPool;

    /// The default READ COMMITTED would let a snapshot write prune the log
    /// between a load's two reads.
    const SNAPSHOT_READ: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    /// A transaction-scoped advisory lock on the document's name: under READ
    /// COMMITTED each later statement then sees what the other committed.
    const DOCUMENT_LOCK: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))");
    /// A session-level advisory lock: released when the connection closes
    /// (also when its process dies).
    const SESSION_TRY_LOCK: Option<&'static str> = Some(
        "SELECT CASE WHEN pg_try_advisory_lock(hashtextextended($1, 0)) THEN 1 ELSE 0 END AS locked",
    );
    /// The database's collation may not be byte order; "C" is.
    const LIST_DOCUMENTS: &'static str = list_documents!(" COLLATE \"C\"");
    const LIST_TOPIC_DOCUMENTS: &'static str = list_topic_documents!(" COLLATE \"C\"");
    const HISTORY_DOCUMENTS: &'static str = history_documents!(" COLLATE \"C\"");
    const CHECKPOINT_DOCUMENTS: &'static str = checkpoint_documents!(" COLLATE \"C\"");

    async fn connect(url: &str) -> Result<Pools<sqlx::Postgres, PgPool>, OpenError> {
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
        // One statement per batch, over the network: any connection will
        // do, so appends share the pool.
        Ok(Pools {
            appender: pool.clone(),
            pool,
        })
    }

    /// One statement for the batch: a round trip per update would cost
    /// every group commit.
    async fn append(pool: &PgPool, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError> {
        let docs: Vec<&str> = updates.iter().map(|new| new.doc.as_ref()).collect();
        let data: Vec<&[u8]> = updates.iter().map(|new| new.update.as_ref()).collect();
        let authors: Vec<Option<&str>> = updates
            .iter()
            .map(|new| new.attribution.author.as_deref())
            .collect();
        let times: Vec<Option<i64>> = updates.iter().map(|new| new.attribution.at_ms).collect();
        let nodes: Vec<Option<&str>> = updates
            .iter()
            .map(|new| new.attribution.node.as_deref())
            .collect();
        let rows = sqlx::query(APPEND_BATCH)
            .bind(&docs)
            .bind(&data)
            .bind(&authors)
            .bind(&times)
            .bind(&nodes)
            .fetch_all(pool)
            .await
            .map_err(|error| StoreError::new("append updates", error))?;
        let mut seqs = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: LogSeq = row
                .try_get("seq")
                .map_err(|error| StoreError::new("read appended seq", error))?;
            seqs.push(seq);
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The appender is the store's pool, which the store closes.
    async fn close_appender(_appender: &PgPool) {}

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
