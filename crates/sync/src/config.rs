//! How a node's registry is configured: whether it compacts, snapshot and
//! unload timing, batching, heartbeats; and the fixed waits of its bus task.

use std::time::Duration;

use crate::batching::BroadcastBatching;
use crate::committer::CommitterConfig;
use crate::snapshot_policy::SnapshotPolicy;

/// How long a join waits for the bus subscription before it is refused as
/// not ready (start-up races; the embedded bus subscribes at once).
pub(crate) const JOIN_WAITS_FOR_BUS: Duration = Duration::from_secs(1);
/// A node whose oldest publish has waited this long for the bus's answer
/// is not ready. A healthy broker answers in milliseconds and a leader
/// fails over in a few seconds; past this the brokers cannot make updates
/// durable (in Kafka: fewer in-sync replicas than `min.insync.replicas`,
/// or no controller quorum to shrink the in-sync set), and the updates
/// wait until they can or until `--kafka-publish-timeout` fails them.
pub const PUBLISH_STALL_NOT_READY: Duration = Duration::from_secs(5);

/// When documents are snapshotted and unloaded.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Group-commit settings.
    pub committer: CommitterConfig,
    /// How long a document nobody holds stays in memory, so a client that
    /// reconnects quickly does not pay for a reload.
    pub unload_grace: Duration,
    /// A dirty document is snapshotted once it has been quiet this long.
    pub snapshot_debounce: Duration,
    /// ...or once it has been dirty this long, even if edits keep coming, so
    /// the log of a busy document stays short.
    pub snapshot_max_delay: Duration,
    /// ...or once this many updates were applied since the last snapshot.
    pub snapshot_max_updates: u64,
    /// Period of the housekeeping task.
    pub tick: Duration,
    /// Most documents held in memory at once; joining one more is refused
    /// ([`SyncError::TooManyDocuments`](crate::SyncError::TooManyDocuments)) until an idle one is unloaded.
    pub max_documents: usize,
    /// Whether this node compacts its log into snapshots. An embedded node
    /// does (it is the log's only writer); the nodes of a cluster leave it
    /// to the persistence worker (`weft persist`), which folds the topic
    /// once for all of them. Loading is the same either way.
    pub compacts: bool,
    /// When a busy document batches its update broadcasts.
    pub broadcast_batching: BroadcastBatching,
    /// How often this node tells the others it is alive.
    pub heartbeat_interval: Duration,
    /// A node silent this long is taken for dead: its clients' awareness
    /// states are removed (no ghost cursors). Several heartbeat intervals,
    /// so one lost heartbeat does not flicker everyone's cursors.
    pub peer_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            committer: CommitterConfig::default(),
            unload_grace: Duration::from_secs(30),
            snapshot_debounce: Duration::from_secs(2),
            snapshot_max_delay: Duration::from_secs(30),
            snapshot_max_updates: 1000,
            tick: Duration::from_millis(250),
            max_documents: 10_000,
            compacts: true,
            broadcast_batching: BroadcastBatching::OFF,
            heartbeat_interval: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(5),
        }
    }
}

impl RegistryConfig {
    /// When a dirty document is snapshotted.
    pub fn snapshot_policy(&self) -> SnapshotPolicy {
        SnapshotPolicy {
            debounce: self.snapshot_debounce,
            max_delay: self.snapshot_max_delay,
            max_updates: self.snapshot_max_updates,
        }
    }
}
