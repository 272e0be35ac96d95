//! The flags of a cluster of owners (`--cluster-mode ownership`).

use clap::{Args, ValueEnum};

/// How the nodes of a Kafka cluster share documents.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// `any`: every node serves whatever document a client asks it for
    /// (reading that document's partition while it holds it). `ownership`:
    /// the nodes share the updates topic's partitions through a Kafka
    /// consumer group (`<topic>-owners`, cooperative-sticky); a node serves
    /// the documents of the partitions it owns and forwards a y-websocket
    /// session for any other document to its owner. Needs
    /// `--kafka-brokers`, `--advertise-address` and `--cluster-secret`.
    #[arg(long, env = "WEFT_CLUSTER_MODE", value_enum, default_value_t = ClusterModeArg::Any)]
    pub cluster_mode: ClusterModeArg,

    /// `host:port` where the other nodes reach this node's WebSocket
    /// listener (plain `ws://`), to forward sessions to it
    /// (`--cluster-mode ownership`). Default: `--listen`, unless that is a
    /// wildcard address (`0.0.0.0`) or port 0.
    #[arg(long, env = "WEFT_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// A secret every node of the cluster shares: a node forwarding a
    /// session sends it, and the owner trusts the forwarded client address
    /// (for its per-address limits) and serves the session without
    /// forwarding it on only with it. At least 16 characters.
    #[arg(long, env = "WEFT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
}

/// `--cluster-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterModeArg {
    /// Any node serves any document.
    Any,
    /// Each partition has one owner; sessions are forwarded to it.
    Ownership,
}
