//! What differs between the databases a `SqlStore` runs on.
//!
//! The store's logic (loading, the snapshot fence, pruning, deletion,
//! listing) and almost all of its SQL are written once, in `store`
//! and `sql`. A dialect supplies the rest: opening the pool
//! (pragmas, locks, pool sizes, migrations), how a batch of updates is
//! appended, how a load reads one point in time, and the collation that
//! orders document names byte-wise. `sql_store_impl!` writes, once, the
//! sqlx bounds the store's generic code needs of a dialect's driver.

use std::fmt::Debug;
use std::future::Future;

use sqlx::{Database, Pool};
use weft_sync::store::NewUpdate;
use weft_sync::{LogSeq, StoreError};

use crate::error::OpenError;

/// The connections a store works with.
#[derive(Debug)]
pub struct Pools<Db: Database, Appender> {
    /// Loads, snapshot writes, deletions, listings.
    pub(crate) pool: Pool<Db>,
    /// What the update log's appends (the edit path, one per committed
    /// batch) go through: the same pool, or, where a connection's own
    /// state makes the next append cheaper, a connection of its own.
    pub(crate) appender: Appender,
}

/// One database's side of the store. Implemented by zero-sized markers
/// (`Sqlite`, `Postgres`).
pub trait Dialect: Debug + Clone + Copy + Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database;

    /// What appends go through (see `Pools::appender`).
    type Appender: Debug + Clone + Send + Sync + 'static;

    /// Statement that makes a load's transaction read one point in time,
    /// run first in it; `None` where every transaction already does.
    const SNAPSHOT_READ: Option<&'static str>;

    /// Statement that serialises history writes of one document (`$1`)
    /// until the transaction ends, run first in a compaction and a purge so
    /// neither commits over the other's reads; `None` where a write
    /// transaction already excludes every other (SQLite).
    const DOCUMENT_LOCK: Option<&'static str>;

    /// Statement that takes a lock on `$1` held by the connection until it
    /// closes, if no other connection holds it; answers `locked` (an
    /// integer, 1 if taken). `None` where one process owns the store
    /// (SQLite): the lock is then always this process's.
    const SESSION_TRY_LOCK: Option<&'static str>;

    /// Lists embedded documents after `$1` in byte order, `$2` at most
    /// (see `sql::list_documents!`).
    const LIST_DOCUMENTS: &'static str;

    /// Lists the topic `$1`'s documents after `$2` in byte order, `$3` at
    /// most (see `sql::list_topic_documents!`).
    const LIST_TOPIC_DOCUMENTS: &'static str;

    /// Lists the documents with embedded history (checkpoints or a
    /// snapshot) after `$1` in byte order, `$2` at most (see
    /// `compaction::history_documents!`).
    const HISTORY_DOCUMENTS: &'static str;

    /// Lists the documents with checkpoints after `$1` in byte order, `$2`
    /// at most (see `compaction::checkpoint_documents!`).
    const CHECKPOINT_DOCUMENTS: &'static str;

    /// Opens (creating or migrating as needed) the database at `url`.
    fn connect(
        url: &str,
    ) -> impl Future<Output = Result<Pools<Self::Db, Self::Appender>, OpenError>> + Send;

    /// Appends `updates` in one transaction and returns their sequence
    /// numbers, in the order of `updates`.
    fn append(
        appender: &Self::Appender,
        updates: &[NewUpdate],
    ) -> impl Future<Output = Result<Vec<LogSeq>, StoreError>> + Send;

    /// Closes the appender's connections, waiting for an append under way.
    fn close_appender(appender: &Self::Appender) -> impl Future<Output = ()> + Send;

    /// Rows an `INSERT`, `UPDATE` or `DELETE` changed (sqlx has no common
    /// accessor).
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;
}

/// An `impl` block for `SqlStore<D>` over every [`Dialect`] `D`, with the
/// bounds the store's queries need of `D`'s driver written here once:
/// executing on its pool and connections, binding and decoding the column
/// types Weft's tables use (text, bytes, `i64`, `i32`, nullable bytes and
/// `i64`) and reading columns by name and index. Rust does not let a
/// trait carry such bounds for its users (bounds on types other than
/// `Self` are not implied), so without this each `impl` repeats them.
///
/// Write `sql_store_impl! { #[attrs] impl Trait for SqlStore<D> { .. } }`
/// or `sql_store_impl! { impl SqlStore<D> { .. } }`.
macro_rules! sql_store_impl {
    ($(#[$meta:meta])* impl $trait:ident for $store:ty { $($body:tt)* }) => {
        $crate::dialect::sql_store_impl!(@bounded [$(#[$meta])*] [$trait for $store] { $($body)* });
    };
    ($(#[$meta:meta])* impl $store:ty { $($body:tt)* }) => {
        $crate::dialect::sql_store_impl!(@bounded [$(#[$meta])*] [$store] { $($body)* });
    };
    (@bounded [$($attributes:tt)*] [$($header:tt)*] { $($body:tt)* }) => {
        $($attributes)*
        impl<D: $crate::dialect::Dialect> $($header)*
        where
            for<'c> &'c mut <D::Db as ::sqlx::Database>::Connection:
                ::sqlx::Executor<'c, Database = D::Db>,
            <D::Db as ::sqlx::Database>::Arguments: ::sqlx::IntoArguments<D::Db>,
            for<'q> &'q str: ::sqlx::Encode<'q, D::Db> + ::sqlx::Type<D::Db>,
            for<'q> &'q [u8]: ::sqlx::Encode<'q, D::Db> + ::sqlx::Type<D::Db>,
            for<'q> Option<&'q [u8]>: ::sqlx::Encode<'q, D::Db>,
            for<'q> Option<&'q str>: ::sqlx::Encode<'q, D::Db>,
            for<'q> Option<i64>: ::sqlx::Encode<'q, D::Db>,
            for<'r> i64: ::sqlx::Encode<'r, D::Db> + ::sqlx::Decode<'r, D::Db> + ::sqlx::Type<D::Db>,
            for<'r> i32: ::sqlx::Encode<'r, D::Db> + ::sqlx::Decode<'r, D::Db> + ::sqlx::Type<D::Db>,
            for<'r> Vec<u8>: ::sqlx::Decode<'r, D::Db> + ::sqlx::Type<D::Db>,
            for<'r> String: ::sqlx::Decode<'r, D::Db> + ::sqlx::Type<D::Db>,
            for<'n> &'n str: ::sqlx::ColumnIndex<<D::Db as ::sqlx::Database>::Row>,
            usize: ::sqlx::ColumnIndex<<D::Db as ::sqlx::Database>::Row>,
        {
            $($body)*
        }
    };
}
pub(crate) use sql_store_impl;
