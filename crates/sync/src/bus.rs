//! The seam between a node and the log every node shares.
//!
//! A [`MessageBus`] carries three kinds of record, each keyed by its
//! document:
//!
//! - **updates**, published durably ([`MessageBus::publish`] returns only
//!   once the log holds them) and read back in order by
//!   [`MessageBus::replay`] when a node loads a document;
//! - **awareness** changes and node **heartbeats**, published without
//!   waiting ([`MessageBus::publish_ephemeral`]): presence needs no
//!   durability, and a lost one is repaired by the client's next renewal.
//!
//! Every node [`subscribe`](MessageBus::subscribe)s once and from then on
//! receives the records *other* nodes publish, for the documents its
//! [`Interest`] wants (asked per record, at the moment the record is
//! processed: that is what makes loading gap-free, see
//! `docs/ARCHITECTURE.md`).
//!
//! Two implementations: [`LogBus`](crate::LogBus) over the embedded store's
//! update log (one process; several nodes of one process in tests), and the
//! Kafka bus in the `weft-kafka` crate. Both pass one conformance suite
//! (`bus_conformance`, feature `test-util`).
//!
//! The trait says nothing of how a bus is observed: a bus's own metrics
//! (Kafka's lag and fetch totals, say) are its crate's, and the node
//! registers them beside the others.

use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::DocName;
pub use crate::position::Position;
use crate::store::StoreError;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A Yjs v1 update: durable.
    Update,
    /// A y-protocols awareness update: ephemeral.
    Awareness,
    /// "This node is alive": ephemeral, no document, empty payload.
    Heartbeat,
    /// A stateless message (Hocuspocus) for a document's other clients:
    /// ephemeral, UTF-8 payload.
    Stateless,
    /// The document was deleted: durable, ordered with the document's
    /// updates. Every record of the document before it is gone; the payload
    /// is the v1 state vector of the deleted content (the tombstone), whose
    /// `(client, clock)` ranges may never come back.
    Delete,
}

/// One process lifetime of one node. The incarnation changes on every start,
/// so the peers of a node that restarted under the same id can tell its old
/// clients' presence from its new ones'.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The node's `--node-id`.
    pub node: Arc<str>,
    /// Random per process start.
    pub incarnation: u64,
}

impl Origin {
    /// A new incarnation of `node`.
    pub fn new(node: impl Into<Arc<str>>) -> Self {
        Self {
            node: node.into(),
            incarnation: rand_incarnation(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}#{:016x}", self.node, self.incarnation)
    }
}

/// A random-enough incarnation number without a dependency: the standard
/// library's per-process random hasher keys.
fn rand_incarnation() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A record as a node publishes it; the bus adds the node's [`Origin`].
#[derive(Debug, Clone)]
pub struct Record {
    /// The document (empty for heartbeats).
    pub doc: DocName,
    /// What `payload` is.
    pub kind: RecordKind,
    /// The Yjs update or awareness update.
    pub payload: Bytes,
    /// The session on the publishing node that sent it (0 for none).
    pub origin_session: u64,
    /// Who wrote it (an update: the token's `sub`, or
    /// [`ANONYMOUS`](crate::store::ANONYMOUS) on an open node); `None`
    /// for records without an author (ephemeral ones, a log written before
    /// Weft recorded authors).
    pub author: Option<Arc<str>>,
    /// The span of publishing this record (`Span::none()` when untraced).
    /// A bus that crosses processes carries its context in the record (the
    /// Kafka bus: a W3C `traceparent` header); a subscriber gets the span of
    /// consuming it here, so applying it on another node joins the trace.
    pub span: tracing::Span,
}

/// A record another node published, as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The record.
    pub record: Record,
    /// Who published it.
    pub origin: Origin,
    /// Where it sits in the log (`None` for ephemeral records of a bus that
    /// does not log them).
    pub position: Option<Position>,
}

/// A document record read back from the log: an update or a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Its position.
    pub position: Position,
    /// [`RecordKind::Update`] or [`RecordKind::Delete`].
    pub kind: RecordKind,
    /// A Yjs v1 update, or (a deletion) the deleted state vector.
    pub update: Bytes,
}

/// Which documents a subscriber wants records of.
pub trait Interest: Send + Sync + 'static {
    /// Asked for every record, when it is processed, with the record's key.
    fn wants(&self, doc: &str) -> bool;
}

/// Why the bus could not do what was asked.
#[derive(Debug, Error)]
pub enum BusError {
    /// The bus has not reached its broker yet (start-up) or lost it.
    #[error("bus not connected")]
    NotConnected,
    /// The log refused or timed out on a record.
    #[error("publish record")]
    Publish(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Reading a document's records back failed.
    #[error("replay document")]
    Replay(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The broker does not answer.
    #[error("check broker")]
    Check(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `subscribe` was called twice.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The embedded log (a store) failed.
    #[error("update log")]
    Store(#[from] StoreError),
}

/// The log every node of a cluster shares. Safe to call from many tasks.
#[async_trait]
pub trait MessageBus: Send + Sync + Debug + 'static {
    /// This node's identity, as stamped on what it publishes.
    fn origin(&self) -> &Origin;

    /// The name of this log, which snapshots folded from it are stored
    /// under (see [`SnapshotStore`](crate::store::SnapshotStore)): the
    /// topic for Kafka, [`EMBEDDED_LOG`](crate::store::EMBEDDED_LOG) for
    /// the embedded log. Nodes sharing a log share its id.
    fn log_id(&self) -> &str;

    /// Publishes document updates and deletions durably: each result is
    /// `Ok` once the log acknowledged that record. Records of one document
    /// keep their order.
    async fn publish(&self, records: &[Record]) -> Vec<Result<Position, BusError>>;

    /// How many [`publish`](Self::publish) batches the committer may have
    /// awaiting their acknowledgements at once (its pipeline depth). More
    /// than one only for a bus whose `publish` has handed every record, in
    /// order, to its log's send queue by the time the future first returns
    /// `Pending`: the committer then publishes the next batch while earlier
    /// ones wait, and records keep their order across batches.
    fn publish_depth(&self) -> usize {
        1
    }

    /// Publishes an awareness change or heartbeat without waiting. It may be
    /// lost (and is counted) if the bus is down or its queue is full.
    fn publish_ephemeral(&self, record: Record);

    /// Starts delivering other nodes' records that `interest` wants, from
    /// the log's live end. Returns once the live position is fixed, so a
    /// record published after this returns is delivered (or, if `interest`
    /// did not want it when it was processed, is below any later replay's
    /// end). The channel is bounded: a slow receiver slows the consumer.
    ///
    /// A bus whose publish can fail for the publisher after the record
    /// reached the log (a lost acknowledgement: Kafka) also delivers this
    /// node's own updates, so the node applies what it never heard was
    /// durable; its own ephemeral records and deletions never come back.
    async fn subscribe(
        &self,
        interest: Arc<dyn Interest>,
    ) -> Result<mpsc::Receiver<Delivery>, BusError>;

    /// The document's updates and deletions after `after` (all of them for
    /// `None`), in log order, up to the log's end when the call started.
    async fn replay(&self, doc: &str, after: Option<Position>) -> Result<Vec<Replayed>, BusError>;

    /// Answers whether the log is reachable (readiness).
    async fn check(&self) -> Result<(), BusError>;

    /// The node no longer holds `doc` (it was unloaded): a bus that reads
    /// only what held documents need may stop reading its records.
    fn release(&self, _doc: &str) {}
}
