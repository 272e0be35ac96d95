//! Where a record sits in an update log, shared by the log (the bus) and
//! the snapshots folded from it (the store).

/// An offset in one partition of an update log; in the embedded log, the
/// sequence number. Strictly increasing within its partition and never
/// reused, so "everything up to S" is well defined.
pub type LogSeq = i64;

/// Where a record sits in an update log: a Kafka partition and offset. The
/// embedded update log is partition 0 with offset = its sequence number.
/// Opaque to the node: it only hands positions back to the log they came
/// from (a snapshot's position is where its replay starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The partition (one partition holds all of a document's records).
    pub partition: i32,
    /// The record's offset within the partition.
    pub offset: LogSeq,
}

impl Position {
    /// The position `offset` of the embedded update log (one partition).
    pub const fn embedded(offset: LogSeq) -> Self {
        Self {
            partition: EMBEDDED_PARTITION,
            offset,
        }
    }
}

/// The partition every embedded-log position is in.
pub(crate) const EMBEDDED_PARTITION: i32 = 0;

/// The [`log id`](crate::MessageBus::log_id) of the embedded update log.
/// Not a legal Kafka topic name (parentheses), so it never names a topic.
pub const EMBEDDED_LOG: &str = "(embedded)";
