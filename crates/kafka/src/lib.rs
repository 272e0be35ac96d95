//! Weft's Kafka message bus: [`KafkaBus`] implements
//! [`weft_sync::MessageBus`] over a Kafka-API broker with `rdkafka`
//! (librdkafka built from source by the crate).
//!
//! # Topics and records
//!
//! - **Updates** go to `--kafka-topic` (default `weft-updates`), keyed by
//!   document, on the partition Kafka's default partitioner picks for the
//!   key ([`partition_for`]), through an idempotent producer with
//!   `acks=all`. A publish returns once the broker acknowledged the record.
//! - **Awareness** changes and node **heartbeats** go to
//!   `<topic>-awareness`, without waiting. They need no durability, and
//!   keeping them out of the updates topic means that replaying a document,
//!   and the persistence worker folding the log, read only updates; the
//!   awareness topic can keep a short retention.
//!
//! Values are `weft.v1.Envelope` protobuf messages (`proto/`), so services in
//! other languages can read the topics; a `traceparent` header (W3C trace
//! context) lets one record be followed across nodes.
//!
//! # Consuming
//!
//! Every node reads every partition of both topics from the live end
//! (positions fixed explicitly at subscription, so that loading a document
//! is gap-free, see `docs/ARCHITECTURE.md`). A record whose key names a
//! document the node has not loaded is skipped before its value is
//! decoded; a record that does not decode is logged, counted and skipped.
//!
//! # Layout
//!
//! Modules import only modules listed before them; the bus is the top.
//!
//! - [`security`]: [`KafkaSecurity`], TLS and SASL towards the brokers
//!   (librdkafka's `security.protocol`, `sasl.*`, `ssl.*`).
//! - [`config`]: [`KafkaConfig`], [`ConsumeScope`] and the librdkafka
//!   settings derived from them.
//! - [`envelope`]: the protobuf records and the partitioner.
//! - `offset`: positions and offsets, converted in one place.
//! - `counters`: what the bus counts for the node's metrics.
//! - [`tasks`]: [`BusTasks`], the node's tracker and the token that stops
//!   the bus's tasks.
//! - [`context`]: how librdkafka's client errors and statistics are
//!   recorded.
//! - [`metrics`]: [`KafkaMetrics`], the bus's counters and its live
//!   consumer's lag and fetch totals as a Prometheus collector.
//! - `acks`: whether the brokers acknowledge the node's heartbeats
//!   (readiness).
//! - `trace`: the W3C trace context in record headers.
//! - [`attribution`]: who wrote an update and when, in record headers.
//! - `delivery`: what a consumed record means for this node.
//! - `live`: which partitions the live consumer reads, and its positions.
//! - `pass`: one pass over a partition, reading until enough is read.
//! - [`replay`]: reading documents' records back, passes coalesced per
//!   partition.
//! - [`probe`]: the start-up check that the brokers accept the TLS and
//!   SASL settings, failing with the flag to fix.
//! - `connect`: creating the topics and waiting until they are served.
//! - `consume`: the live consumer loop, its watchdog and its repairs.
//! - `producer`: the producer, replaced after a failed publish.
//! - [`bus`]: [`KafkaBus`], the `MessageBus`.
//! - [`members`]: who owns which partition, decoded from the owners'
//!   group's description; [`membership`]: [`Membership`], this node's
//!   member of that group (`--cluster-mode ownership`).
//! - [`revocations`]: [`RevocationTopic`], the revocations of tokens
//!   (`<topic>-revocations`, one partition, read from the start).
//! - [`dead_letters`]: [`dead_letters::DeadLetterTopic`], the webhook
//!   events `weft persist` gave up on (`<topic>-deadletter`).
//! - [`fold`]: the persistence worker's folded documents and its commit
//!   rule; `group`: its consumer group side (rebalances, commits, lag);
//!   [`worker`]: the worker's loop; [`edit_history`]: the cluster's
//!   per-edit history and automatic versions the worker keeps as it folds.
//! - [`tail`]: reading the topic outside a node (`weft docs export` adds
//!   the records the worker has not folded yet).

mod acks;
pub mod attribution;
pub mod bus;
pub mod config;
mod connect;
mod consume;
pub mod context;
mod counters;
pub mod dead_letters;
mod delivery;
pub mod edit_history;
pub mod envelope;
pub mod fold;
mod group;
mod live;
pub mod members;
pub mod membership;
pub mod metrics;
mod offset;
mod pass;
pub mod probe;
mod producer;
pub mod replay;
pub mod revocations;
pub mod security;
pub mod tail;
pub mod tasks;
mod trace;
pub mod worker;

pub use bus::KafkaBus;
pub use config::{ConsumeScope, ENVELOPE_OVERHEAD_BYTES, KafkaConfig, KafkaConfigError};
pub use counters::{FetchTotals, Fetched};
pub use envelope::partition_for;
pub use members::{ClusterMap, ClusterNode};
pub use membership::{Membership, Owner};
pub use metrics::KafkaMetrics;
pub use probe::check_security;
pub use revocations::RevocationTopic;
pub use security::{
    KafkaSecurity, SaslCredentials, SaslMechanism, Secret, SecurityError, SecurityProtocol,
};
pub use tasks::BusTasks;
