//! The `scale` scenario's plan: its sizes in each mode, its wait after the
//! load, its cells (a node count and a variant), and how a variant picks
//! the node that serves a document. The results file names the variant of
//! every `scale` record; the report reads the sizes and the wait.
//!
//! Every document has one writer and one reader, both on the node a sticky
//! ingress would pick for it. Two pickers:
//!
//! - **hash**: a hash of the document name modulo the node count, as an
//!   ingress hashing the path does. It knows nothing of Kafka's partitions,
//!   so a node's documents fall into most partitions once it holds more
//!   documents than there are partitions;
//! - **partition**: Kafka's partition of the document modulo the node
//!   count, so each node's documents share a fixed set of partitions (what
//!   a partition-aware router would do).
//!
//! And two cells of a cluster of owners (`--cluster-mode ownership`),
//! where the nodes share the partitions through Kafka's group assignment:
//! clients **routed** to their document's owner (what `GET /api/cluster`
//! says: the shipped routing), or by **name hash**, a balancer that ignores
//! ownership, so a client on another node is forwarded to the owner.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Mode;

/// librdkafka reports statistics (and so the fetch counters) every 5 s;
/// waiting a little longer after the load makes the last report cover it.
/// The wait doubles as the idle CPU measurement the report describes.
pub(crate) const STATS_SETTLE: Duration = Duration::from_millis(6_500);

/// The sizes of the `scale` scenario in one mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScaleSizes {
    pub(crate) nodes: Vec<usize>,
    pub(crate) docs: usize,
    /// Updates per second over all documents.
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    /// Partitions of each topic.
    pub(crate) partitions: u32,
}

impl ScaleSizes {
    pub(crate) fn for_mode(mode: Mode) -> ScaleSizes {
        match mode {
            Mode::Short => ScaleSizes {
                nodes: vec![1, 2],
                docs: 40,
                rate: 200.0,
                seconds: 5.0,
                partitions: 12,
            },
            Mode::Full => ScaleSizes {
                nodes: vec![1, 2, 3, 4],
                docs: 200,
                rate: 1_000.0,
                seconds: 15.0,
                // Weft's default; divisible by 1 to 4, so the partition
                // picker gives every node the same number of partitions.
                partitions: 12,
            },
        }
    }
}

/// What a node's live consumer reads, and how clients pick their node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Variant {
    /// `--kafka-consume all`, clients by name hash.
    All,
    /// `--kafka-consume held`, clients by name hash (the Helm chart's
    /// ingress).
    HeldHash,
    /// `--kafka-consume held`, clients by partition.
    HeldPartition,
    /// `--cluster-mode ownership`, clients on their document's owner.
    OwnersRouted,
    /// `--cluster-mode ownership`, clients by name hash (forwarded to the
    /// owner from any other node).
    OwnersHash,
}

impl Variant {
    pub(crate) const EVERY: [Variant; 5] = [
        Variant::All,
        Variant::HeldHash,
        Variant::HeldPartition,
        Variant::OwnersRouted,
        Variant::OwnersHash,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::All => "all, name hash",
            Variant::HeldHash => "held, name hash",
            Variant::HeldPartition => "held, partition",
            Variant::OwnersRouted => "owners, routed",
            Variant::OwnersHash => "owners, name hash (forwarded)",
        }
    }

    /// Whether the cell runs a cluster of owners.
    pub(crate) fn ownership(self) -> bool {
        matches!(self, Variant::OwnersRouted | Variant::OwnersHash)
    }

    pub(crate) fn consume(self) -> &'static str {
        match self {
            Variant::All => "all",
            Variant::HeldHash
            | Variant::HeldPartition
            | Variant::OwnersRouted
            | Variant::OwnersHash => "held",
        }
    }

    /// The node (index) that serves `doc` in a cluster of `nodes` (for
    /// `OwnersRouted`, the owner is asked of the cluster instead).
    pub(crate) fn node_for(self, doc: &str, nodes: usize, partitions: u32) -> usize {
        let nodes = nodes.max(1);
        match self {
            Variant::All | Variant::HeldHash | Variant::OwnersRouted | Variant::OwnersHash => {
                (fnv1a(doc.as_bytes()) % nodes as u64) as usize
            }
            Variant::HeldPartition => kafka_partition(doc, partitions) as usize % nodes,
        }
    }
}

/// FNV-1a, 64 bits: a stable hash of a name that owes nothing to Kafka's
/// partitioner (as an ingress's hash of the path does not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The partition Kafka's default partitioner (and Weft) gives the key.
pub(crate) fn kafka_partition(key: &str, partitions: u32) -> u32 {
    let positive = murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff;
    positive % partitions.max(1)
}

/// One cell of the scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    pub(crate) nodes: usize,
    pub(crate) variant: Variant,
}

/// The cells, in run order. One node has no routing to vary: it runs `all`
/// and `held` once each (a single owner is `held` with one member).
pub(crate) fn cells(sizes: &ScaleSizes) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &nodes in &sizes.nodes {
        for variant in Variant::EVERY {
            if nodes == 1 && (variant == Variant::HeldPartition || variant.ownership()) {
                continue;
            }
            cells.push(Cell { nodes, variant });
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_partition_matches_kafkas_partitioner() {
        // Kafka's murmur2 vectors (the Java client's UtilsTest): "21" hashes
        // to -973932308, "foobar" to -790332482; positive part, modulo.
        assert_eq!(kafka_partition("21", 7), 3);
        assert_eq!(kafka_partition("foobar", 12), 6);
        assert_eq!(kafka_partition("doc", 1), 0);
    }

    #[test]
    fn the_partition_router_gives_each_node_whole_partitions() {
        let nodes = 4;
        let partitions = 12;
        let mut owner = std::collections::BTreeMap::new();
        for doc in 0..500 {
            let name = format!("scale-1-{doc}");
            let node = Variant::HeldPartition.node_for(&name, nodes, partitions);
            let partition = kafka_partition(&name, partitions);
            assert_eq!(*owner.entry(partition).or_insert(node), node);
        }
        assert_eq!(owner.len(), 12, "500 names cover every partition");
    }

    #[test]
    fn the_hash_router_is_stable_and_spreads() {
        let nodes = 3;
        let mut counts = [0_usize; 3];
        for doc in 0..3_000 {
            let name = format!("doc-{doc}");
            let node = Variant::HeldHash.node_for(&name, nodes, 12);
            assert_eq!(node, Variant::All.node_for(&name, nodes, 12));
            counts[node] += 1;
        }
        assert!(
            counts.iter().all(|count| (800..1_200).contains(count)),
            "{counts:?}"
        );
        assert_eq!(Variant::HeldHash.node_for("x", 1, 12), 0);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn one_node_runs_no_partition_routing() {
        let sizes = ScaleSizes::for_mode(Mode::Full);
        let cells = cells(&sizes);
        assert_eq!(cells.len(), 2 + 3 * 5);
        assert!(
            !cells
                .iter()
                .any(|cell| cell.nodes == 1 && cell.variant == Variant::HeldPartition)
        );
    }
}
