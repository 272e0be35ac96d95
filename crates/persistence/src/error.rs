//! Why a store could not be opened.

use thiserror::Error;

/// A store that cannot be used. Reported at start-up, naming the step.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The URL's scheme names no store this build has.
    #[error("unsupported store scheme `{0}` (expected sqlite://PATH or postgres://...)")]
    UnsupportedScheme(String),
    /// The URL does not parse.
    #[error("invalid store url")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database file's directory could not be created.
    #[error("create directory {path}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process's start-up lock could not be waited for.
    #[error("lock {path} for the migrations")]
    Lock {
        /// The lock file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("open database")]
    Connect(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("run migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}
