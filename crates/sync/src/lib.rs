//! Weft's document layer: one in-memory `yrs` document per open document,
//! shared by every session of that document, and the path an update takes
//! from a session to durability and to the other sessions.
//!
//! This crate knows no HTTP and no sockets: a session is a bounded outbox of
//! encoded frames plus a cancellation token the document trips when the
//! outbox overflows. The gateway owns the socket.
//!
//! # The path of one update
//!
//! 1. [`Session::submit_update`] checks that the bytes decode as a Yjs update
//!    (a malformed one is refused and nothing is touched) and hands it to the
//!    [`Committer`].
//! 2. The committer batches the submissions of a few milliseconds and appends
//!    them to the [`DocStore`]'s update log in one transaction (group commit).
//! 3. Only after the commit, and in commit order, each update is applied to
//!    its loaded [`Document`] and broadcast to the document's other sessions;
//!    then the submitter's acknowledgement resolves.
//!
//! Because application follows commit order, "the document has applied every
//! logged update up to sequence number S" is a simple watermark, which is what
//! makes compaction (snapshot at S, then drop the log up to S) safe.
//!
//! # Layout
//!
//! - [`store`]: the [`DocStore`] trait the persistence crate implements, and
//!   [`MemoryStore`] for tests.
//! - [`bus`]: the [`MessageBus`] trait every node's log goes through, and
//!   [`LogBus`] ([`log_bus`]), the embedded store's log as a bus.
//! - [`committer`]: group commit of submitted updates.
//! - [`document`]: one loaded document: the `yrs` doc, its sessions, its
//!   awareness states, its compaction watermark.
//! - [`awareness`]: the awareness (presence) table of one document.
//! - [`registry`]: loaded documents by name, loading, unloading, snapshots,
//!   shutdown.
//! - [`session`]: what a gateway session holds and calls.
//! - [`admin`]: what the REST API asks of the registry: read a document,
//!   apply a service's update, delete, list.
//! - [`tombstone`]: deleted documents: which state vectors and updates a
//!   tombstone refuses.
//! - [`ycheck`]: containing `yrs` panics on input from the network.
//! - `conformance` and `bus_conformance` (feature `test-util`): the suites
//!   every store and every bus pass.

pub mod admin;
pub mod awareness;
pub mod bus;
#[cfg(any(test, feature = "test-util"))]
pub mod bus_conformance;
pub mod committer;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod document;
pub mod error;
pub mod log_bus;
pub mod memory_store;
pub mod metrics;
pub mod registry;
#[cfg(test)]
mod registry_tests;
pub mod session;
pub mod store;
pub mod tombstone;
pub mod ycheck;

pub use admin::{DeleteOutcome, DocumentRead, ListedDocument, RootKind, read_roots};
pub use bus::{
    BusError, BusStats, Delivery, FetchTotals, Fetched, Interest, MessageBus, Origin, PartitionLag,
    Position, Record, RecordKind, Replayed,
};
pub use committer::{Committer, CommitterConfig};
pub use document::{BroadcastBatching, Document};
pub use error::{InvalidUpdate, PublishError, SyncError};
pub use log_bus::LogBus;
pub use memory_store::MemoryStore;
pub use metrics::SyncMetrics;
pub use registry::{NodeMode, Registry, RegistryConfig};
pub use session::{Outbound, Session, SessionId, SessionOutbox};
pub use store::{
    DocStore, ListedDoc, LogSeq, LoggedUpdate, Snapshot, StoreError, StoredDoc, Tombstone,
};

/// A document's name, as the client gave it (URL-decoded).
pub type DocName = std::sync::Arc<str>;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
