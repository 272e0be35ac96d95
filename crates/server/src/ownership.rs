//! A cluster of owners (`--cluster-mode ownership`): the node's member of
//! the Kafka owners' group, as the gateway's [`ClusterRoutes`].

use weft_gateway::cluster::{ClusterNodeView, ClusterRoutes, ClusterView, Ownership, Route};
use weft_kafka::{Membership, Owner};

/// What `--cluster-mode ownership` needs beyond the Kafka settings.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// `--advertise-address`: where the other nodes reach this one.
    pub advertise_address: String,
    /// `--cluster-secret`.
    pub secret: String,
}

/// The owners' group answering the gateway's questions.
#[derive(Debug)]
pub(crate) struct GroupRoutes {
    pub(crate) membership: Membership,
}

impl ClusterRoutes for GroupRoutes {
    fn route(&self, doc: &str) -> Route {
        match self.membership.owner_of(doc) {
            Owner::Remote { address } => Route::Forward(address),
            Owner::Local | Owner::Unknown => Route::Here,
        }
    }

    fn partition_of(&self, doc: &str) -> Option<i32> {
        self.membership.partition_of(doc)
    }

    fn view(&self) -> ClusterView {
        let map = self.membership.map();
        ClusterView {
            generation: i64::from(map.generation),
            nodes: map
                .nodes
                .into_iter()
                .map(|node| ClusterNodeView {
                    id: node.id,
                    address: node.address,
                    partitions: node.partitions,
                })
                .collect(),
        }
    }
}

/// Closes the sessions of partitions as they move away, until `moved`
/// ends (the member left the group).
pub(crate) async fn close_moved_sessions(
    ownership: Ownership,
    mut moved: tokio::sync::mpsc::Receiver<Vec<i32>>,
) {
    while let Some(partitions) = moved.recv().await {
        ownership.partitions_moved(&partitions);
    }
}
