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
//! 1. [`Session::submit_update`] decodes the bytes once into a
//!    [`ClientUpdate`] (a malformed one is refused and nothing is touched);
//!    the publisher checks it against the document's tombstone and with a
//!    trial apply, and hands it to the [`Committer`].
//! 2. The committer batches the submissions of a few milliseconds and
//!    publishes them to the [`MessageBus`] (embedded: the [`EmbeddedLog`]'s
//!    update log, one transaction: group commit).
//! 3. Only after the commit, and in commit order, each update goes as a
//!    [`CommittedUpdate`] (still decoded) to its loaded [`Document`], whose
//!    [`Replica`] applies it; the document broadcasts it to its other
//!    sessions; then the submitter's acknowledgement resolves.
//!
//! Because application follows commit order, "the document has applied every
//! logged update up to sequence number S" is a simple watermark, which is what
//! makes compaction (snapshot at S, then drop the log up to S) safe.
//!
//! What "an update" is called at each step is listed in `update`.
//!
//! # Layout
//!
//! Each module imports only modules listed before it (leaves first), so no
//! two modules import each other:
//!
//! - `clock`, [`backoff`] (jittered retry pauses, the Kafka crate's
//!   too), `frames` (document names,
//!   session ids, outboxes, frames), [`ycheck`] (containing `yrs` panics),
//!   `metrics`, `tasks` (a group of the registry's tasks on the node's
//!   tracker): leaves.
//! - `position`: where a record sits in an update log, and the embedded
//!   log's id.
//! - [`store`]: the [`SnapshotStore`] and [`EmbeddedLog`] traits the
//!   persistence crate implements, and [`MemoryStore`] (`memory_store`) for
//!   tests.
//! - `update`: client and committed updates, document records, why an
//!   update was skipped; the one decode.
//! - [`tombstone`]: deleted documents: what a tombstone names (worked
//!   out in one function) and which state vectors and updates it refuses.
//! - `snapshot_policy`: when a snapshot is due.
//! - [`bus`]: the [`MessageBus`] trait every node's log goes through, and
//!   [`LogBus`] (`log_bus`), the embedded store's log as a bus.
//! - [`changes`]: the change feed (webhooks, server-sent events): the
//!   [`ChangeLog`](changes::ChangeLog) seam and the watch of the log's end.
//! - `error`: the crate's errors.
//! - `awareness`: the awareness (presence) table of one document;
//!   `awareness_tick`: coalescing its changes into one frame per tick.
//! - `replica`: the pure document state machine (apply, encode,
//!   tombstone, positions, what a snapshot owes).
//! - `fanout`, `batching`, `reread`: a document's outboxes, broadcast
//!   batching, the re-read schedule; `batch`: when the committer's batch
//!   goes.
//! - `document`: one live document: a replica, its sessions, awareness.
//! - `committer`: group commit, handing acknowledged records to a narrow
//!   `CommitTarget`.
//! - `documents`: the map of loaded documents (the commit target).
//! - `publisher`: what sessions and the API send towards the log.
//! - `ack`: where a submitted update's outcome goes (a waiter, or a
//!   session's [`AckWindow`], which answers nothing and wakes no task).
//! - [`session`]: what a gateway session holds and calls.
//! - `config`, `loader`, `housekeeping`, `bus_task`: the registry's settings,
//!   how a document's records are read, and its two background tasks.
//! - [`history`]: versions, checkpoints, reading a document as it was;
//!   [`restore`]: a restore as the smallest forward update; [`text_runs`]:
//!   a `Y.Text`'s changed runs between two points and who made each;
//!   [`compaction`]: history older than the retention folded into a
//!   checkpoint, for every document, on a schedule.
//! - `registry`: the facade: joining, readiness, shutdown.
//! - `admin`: what the REST API asks of the registry (through its facade):
//!   read a document, apply a service's update, delete, list.
//! - `conformance` and `bus_conformance` (feature `test-util`): the suites
//!   every store and every bus pass.

mod ack;
mod admin;
mod awareness;
mod awareness_tick;
pub mod backoff;
mod batch;
mod batching;
pub mod bus;
#[cfg(any(test, feature = "test-util"))]
pub mod bus_conformance;
mod bus_task;
pub mod changes;
mod clock;
mod committer;
pub mod compaction;
mod compaction_metrics;
#[cfg(test)]
mod compaction_tests;
mod config;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod document;
mod documents;
mod error;
mod fanout;
mod frames;
pub mod history;
mod history_api;
mod housekeeping;
mod loader;
mod log_bus;
mod memory_store;
mod metrics;
mod outbox;
mod position;
mod publisher;
mod registry;
#[cfg(test)]
mod registry_tests;
mod replica;
mod reread;
pub mod restore;
pub mod session;
mod snapshot_policy;
pub mod store;
mod tasks;
pub mod text_runs;
pub mod tombstone;
mod update;
mod versions;
pub mod ycheck;

pub use ack::AckWindow;
pub use admin::{DeleteOutcome, DocumentRead, ListedDocument, RootKind, read_roots};
pub use batching::BroadcastBatching;
pub use bus::{
    BusError, Delivery, Interest, MessageBus, Origin, Position, Record, RecordKind, Replayed,
};
pub use clock::unix_millis;
pub use committer::{Committer, CommitterConfig};
pub use config::{PUBLISH_STALL_NOT_READY, RegistryConfig};
pub use document::Document;
pub use error::{PublishError, SyncError};
pub use frames::{DocName, Outbound, QueuedBytes, SessionId, SessionOutbox};
pub use history_api::HistoryPoint;
pub use log_bus::LogBus;
pub use memory_store::MemoryStore;
pub use metrics::SyncMetrics;
pub use outbox::{FrameReceiver, FrameSender, outbox_channel};
pub use publisher::PendingAck;
pub use registry::Registry;
pub use replica::{Applied, ReadState, Replica, RereadOutcome};
pub use session::Session;
pub use snapshot_policy::{Dirty, SNAPSHOT_BYTES_PER_STEP, SnapshotPolicy};
pub use store::{
    ANONYMOUS, Attribution, EMBEDDED_LOG, EmbeddedLog, ListedDoc, LogSeq, LoggedUpdate, Snapshot,
    SnapshotStore, StoreError, StoredDoc, Tombstone,
};
pub use update::{ClientUpdate, CommittedUpdate, DocRecord, InvalidUpdate, Skipped};
pub use versions::{HistoryError, HistorySettings};
