//! Weft's document stores.
//!
//! [`open_store`] turns the `--store` URL into a [`DocStore`]:
//!
//! - `sqlite://path/to/weft.db`: the embedded default. One file holds the
//!   update log and the snapshots; its directory is created.
//! - `postgres://user@host/db` (feature `postgres`): the production store
//!   many nodes and workers share.
//!
//! Every store runs its migrations when it opens and fails with an error that
//! says which step failed and why.
//!
//! # Layout
//!
//! - [`sqlite`]: the embedded [`SqliteStore`].
//! - `postgres` (feature `postgres`): `PostgresStore`.
//! - [`error`]: [`OpenError`], why a store could not be opened.

pub mod error;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

pub use error::OpenError;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use weft_sync::DocStore;

/// Opens the store named by `url`.
pub async fn open_store(url: &str) -> Result<Arc<dyn DocStore>, OpenError> {
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

/// Milliseconds since the Unix epoch, for the stores' `updated_at` columns.
/// The nullable columns a snapshot row keeps its tombstone in (state
/// vector, position, time), `NULL` for a document never deleted. Shared by
/// both stores' snapshot writes.
pub(crate) fn tombstone_columns(
    tombstone: Option<&weft_sync::store::Tombstone>,
) -> (Option<&[u8]>, Option<i64>, Option<i64>) {
    (
        tombstone.map(|tombstone| tombstone.state_vector.as_slice()),
        tombstone.map(|tombstone| tombstone.position),
        tombstone.map(|tombstone| tombstone.deleted_at_ms),
    )
}

pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
