//! Weft's document stores.
//!
//! [`open_store`] turns the `--store` URL into an [`EmbeddedLog`]: a
//! snapshot store (per update log: the embedded one, or a Kafka topic)
//! that also keeps the embedded update log:
//!
//! - `sqlite://path/to/weft.db`: the embedded default. One file holds the
//!   update log and the snapshots; its directory is created.
//! - `postgres://user@host/db` (feature `postgres`): the production store
//!   many nodes and workers share.
//!
//! Both are one [`SqlStore`], generic over its [`Dialect`]: the store's
//! logic and SQL are written once, a dialect supplies what differs
//! (connection setup, batch appends, isolation, collation).
//!
//! Every store runs its migrations when it opens and fails with an error that
//! says which step failed and why.
//!
//! # Layout
//!
//! - [`store`]: [`SqlStore`], the one `SnapshotStore` and `EmbeddedLog`
//!   implementation.
//! - `sql`: the SQL text both dialects share.
//! - [`dialect`]: [`Dialect`], what differs between databases.
//! - [`sqlite`]: the embedded [`Sqlite`] dialect ([`SqliteStore`]).
//! - `postgres` (feature `postgres`): the `Postgres` dialect
//!   (`PostgresStore`).
//! - [`error`]: [`OpenError`], why a store could not be opened.
//! - `history`: `weft_sync::history::History` for [`SqlStore`]: versions,
//!   checkpoints, the attributed log; `compaction`: folding history older
//!   than the retention into a checkpoint.
//! - `changes`: `weft_sync::changes::ChangeLog` for [`SqlStore`]: the log
//!   read back as changes, webhook positions and dead letters.
//! - [`topic_history`]: [`TopicHistory`], a cluster's history: the same
//!   versions and checkpoints, and the per-edit rows the persistence
//!   worker stores for one topic; `topic_sql`, its SQL.

mod changes;
mod compaction;
mod delivery_lock;
pub mod dialect;
pub mod error;
mod history;
#[cfg(feature = "postgres")]
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod store;
mod topic_changes;
pub mod topic_history;
mod topic_replays;
mod topic_sql;

use std::sync::Arc;

pub use dialect::{Dialect, Pools};
pub use error::OpenError;
#[cfg(feature = "postgres")]
pub use postgres::{Postgres, PostgresStore};
pub use sqlite::{Sqlite, SqliteStore};
pub use store::SqlStore;
pub use topic_history::TopicHistory;
use weft_sync::EmbeddedLog;
use weft_sync::changes::ChangeLog;
use weft_sync::history::{EditLog, History};

/// One store seen through each of its sides.
#[derive(Debug, Clone)]
pub struct StoreSides {
    /// The embedded log and the snapshots.
    pub log: Arc<dyn EmbeddedLog>,
    /// Versions, checkpoints, the attributed log.
    pub history: Arc<dyn History>,
    /// The log read back as changes; webhook delivery state.
    pub changes: Arc<dyn ChangeLog>,
}

/// Opens the store named by `url`, with its history side (versions,
/// checkpoints, the attributed log) and its change feed.
pub async fn open_store_with_history(url: &str) -> Result<StoreSides, OpenError> {
    if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteStore::open(url).await?);
        return Ok(StoreSides {
            log: store.clone(),
            history: store.clone(),
            changes: store,
        });
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = Arc::new(PostgresStore::open(url).await?);
        return Ok(StoreSides {
            log: store.clone(),
            history: store.clone(),
            changes: store,
        });
    }
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    Err(OpenError::UnsupportedScheme(scheme.to_owned()))
}

/// Opens the store named by `url`, with the history of `topic`'s
/// documents (a cluster's: versions, checkpoints, the worker's per-edit
/// rows).
pub async fn open_store_with_topic_history(
    url: &str,
    topic: &str,
) -> Result<(Arc<dyn EmbeddedLog>, Arc<dyn EditLog>), OpenError> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::open(url).await?;
        let history = Arc::new(TopicHistory::new(store.clone(), topic));
        return Ok((Arc::new(store), history));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = PostgresStore::open(url).await?;
        let history = Arc::new(TopicHistory::new(store.clone(), topic));
        return Ok((Arc::new(store), history));
    }
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    Err(OpenError::UnsupportedScheme(scheme.to_owned()))
}

/// A cluster's sides of the store (a node's, a worker's): the snapshots, its
/// topic's per-edit rows, read back as its change feed, and the lock of
/// its webhooks' delivery.
#[derive(Debug, Clone)]
pub struct TopicSides {
    /// The snapshots (and the embedded log, unused in a cluster).
    pub log: Arc<dyn EmbeddedLog>,
    /// The topic's history, which the worker appends to.
    pub edits: Arc<dyn EditLog>,
    /// The topic's rows read back as changes; webhook delivery state.
    pub changes: Arc<dyn ChangeLog>,
    /// Who delivers the topic's webhooks.
    pub delivery: Arc<dyn weft_sync::changes::DeliveryLock>,
    /// The webhook replays nodes ask for and the delivering worker applies.
    pub replays: Arc<dyn weft_sync::changes::ReplayRequests>,
}

/// Opens the store named by `url` with `topic`'s sides (see
/// [`TopicSides`]).
pub async fn open_topic_sides(url: &str, topic: &str) -> Result<TopicSides, OpenError> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::open(url).await?;
        let history = Arc::new(TopicHistory::new(store.clone(), topic));
        return Ok(TopicSides {
            log: Arc::new(store),
            edits: history.clone(),
            changes: history.clone(),
            delivery: history.clone(),
            replays: history,
        });
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = PostgresStore::open(url).await?;
        let history = Arc::new(TopicHistory::new(store.clone(), topic));
        return Ok(TopicSides {
            log: Arc::new(store),
            edits: history.clone(),
            changes: history.clone(),
            delivery: history.clone(),
            replays: history,
        });
    }
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    Err(OpenError::UnsupportedScheme(scheme.to_owned()))
}

/// Opens the store named by `url`.
pub async fn open_store(url: &str) -> Result<Arc<dyn EmbeddedLog>, OpenError> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = PostgresStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    Err(OpenError::UnsupportedScheme(scheme.to_owned()))
}
