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
//! - [`config`]: [`KafkaConfig`] and the librdkafka settings derived from it.
//! - [`context`]: how librdkafka's client errors are logged.
//! - [`bus`]: [`KafkaBus`]: connecting, publishing, the live consumer.
//! - `acks`: whether the brokers acknowledge the node's heartbeats
//!   (readiness).
//! - [`replay`]: reading one document's records back from its partition.
//! - [`envelope`]: the protobuf records and the partitioner.
//! - [`fold`]: the persistence worker's folded documents and its commit
//!   rule; [`worker`]: the worker's consumer group loop.

mod acks;
pub mod bus;
pub mod config;
pub mod context;
pub mod envelope;
pub mod fold;
mod live;
pub mod replay;
mod trace;
pub mod worker;

pub use bus::KafkaBus;
pub use config::{ENVELOPE_OVERHEAD_BYTES, KafkaConfig, KafkaConfigError};
pub use envelope::partition_for;
pub use live::ConsumeScope;
