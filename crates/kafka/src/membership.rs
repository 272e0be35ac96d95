//! Ownership of the updates topic's partitions (`--cluster-mode
//! ownership`): each node is a member of one consumer group, the owners'
//! group `<topic>-owners`, subscribed to the updates topic with Kafka's
//! cooperative-sticky assignment, so each partition has one owner at a
//! time and a node joining or leaving moves only the partitions it must.
//!
//! The member reads nothing: it pauses every partition it is assigned (the
//! live consumer reads what the node's documents need, as in `held`
//! scope). Its assignment says which documents this node serves; the
//! group's description (`DescribeGroups`, asked after every rebalance and
//! every second) says who serves the rest and where: each member
//! names its node and address in its `client.id`
//! ([`crate::members::owner_client_id`]).
//!
//! Partitions taken from this node are reported on the channel
//! [`Membership::start`] returns, from the revoke callback, so the node can
//! close the sessions of their documents (they reconnect and reach the new
//! owner). Nothing else needs settling on revoke: every update is durable
//! in the topic before any node applies it, so a brief overlap of two nodes
//! serving one document loses and reorders nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{KafkaConfig, KafkaConfigError};
use crate::context::WeftContext;
use crate::envelope::partition_for;
use crate::members::{ClusterMap, MemberBytes, cluster_map, owner_client_id};
use crate::tasks::BusTasks;

/// How long one poll of the member blocks.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How often the group is described when nothing changed (a member that
/// died is seen here once the coordinator expired it).
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How long one description or metadata request may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Revocations waiting for the node to close their sessions: a rebalance
/// takes a few at most; the member waits when they are not taken.
const MOVES_QUEUE: usize = 16;
/// Suffix of the owners' group id.
const OWNERS_GROUP_SUFFIX: &str = "-owners";

/// Who serves a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node owns the document's partition.
    Local,
    /// Another node does; it serves at this address.
    Remote {
        /// `host:port`.
        address: String,
    },
    /// Nobody is known to (a rebalance is under way, or the group was not
    /// described yet): serve it here, which is always safe.
    Unknown,
}

/// This node's membership of the owners' group.
#[derive(Debug, Clone)]
pub struct Membership {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    node: String,
    /// The partitions this member owns, from its rebalance callbacks (the
    /// authority on this node's own share).
    owned: Mutex<BTreeSet<i32>>,
    /// The group as last described.
    map: RwLock<ClusterMap>,
    /// The updates topic's partition count, once read (0 before).
    partitions: AtomicI32,
}

impl Membership {
    /// Joins the owners' group as `node`, serving at `address`; the
    /// member's thread runs on `tasks` until they stop. Returns the
    /// membership and the partitions taken from this node, as they are.
    pub fn start(
        kafka: &KafkaConfig,
        node: &str,
        address: &str,
        tasks: &BusTasks,
    ) -> Result<(Self, mpsc::Receiver<Vec<i32>>), KafkaConfigError> {
        let shared = Arc::new(Shared {
            node: node.to_owned(),
            owned: Mutex::new(BTreeSet::new()),
            map: RwLock::new(ClusterMap::default()),
            partitions: AtomicI32::new(0),
        });
        let (moves, moved) = mpsc::channel(MOVES_QUEUE);
        let group = format!("{}{OWNERS_GROUP_SUFFIX}", kafka.topic);
        let consumer: BaseConsumer<OwnerContext> = kafka
            .owner_consumer(&group, &owner_client_id(node, address))
            .create_with_context(OwnerContext {
                log: WeftContext::default(),
                shared: shared.clone(),
                moves,
                topic: kafka.topic.clone(),
                rebalances: AtomicU64::new(0),
            })?;
        consumer.subscribe(&[&kafka.topic])?;
        info!(%group, node, address, "joined the owners' group");
        let member = Member {
            consumer,
            shared: shared.clone(),
            topic: kafka.topic.clone(),
            group,
        };
        let stopper = tasks.clone();
        drop(tasks.spawn_blocking(move || member.run(&stopper)));
        Ok((Self { shared }, moved))
    }

    /// The document's partition of the updates topic, once the topic's
    /// partition count is known.
    pub fn partition_of(&self, doc: &str) -> Option<i32> {
        let partitions = self.shared.partitions.load(Ordering::Acquire);
        (partitions > 0).then(|| partition_for(doc, partitions))
    }

    /// Who serves `doc`.
    pub fn owner_of(&self, doc: &str) -> Owner {
        let Some(partition) = self.partition_of(doc) else {
            return Owner::Unknown;
        };
        if self.shared.owned.lock().contains(&partition) {
            return Owner::Local;
        }
        match self.shared.map.read().owner(partition) {
            Some(node) if node.id != self.shared.node => Owner::Remote {
                address: node.address.clone(),
            },
            _ => Owner::Unknown,
        }
    }

    /// The group as last described, this node's own partitions as its
    /// callbacks last set them.
    pub fn map(&self) -> ClusterMap {
        let mut map = self.shared.map.read().clone();
        let owned: Vec<i32> = self.shared.owned.lock().iter().copied().collect();
        if let Some(own) = map.nodes.iter_mut().find(|n| n.id == self.shared.node) {
            own.partitions = owned;
        }
        map
    }

    /// The partitions this node owns.
    pub fn owned(&self) -> Vec<i32> {
        self.shared.owned.lock().iter().copied().collect()
    }
}

/// The member's consumer and what it keeps up to date.
struct Member {
    consumer: BaseConsumer<OwnerContext>,
    shared: Arc<Shared>,
    topic: String,
    group: String,
}

impl Member {
    /// Polls (serving rebalances and heartbeats) and describes the group
    /// until the bus stops; then leaves the group, so its partitions move
    /// at once.
    fn run(self, tasks: &BusTasks) {
        let mut described_at: Option<Instant> = None;
        let mut seen_rebalances = 0_u64;
        while !tasks.stopping() {
            if let Some(Err(error)) = self.consumer.poll(POLL_SLICE) {
                debug!(error = %error, "owners' group poll");
            }
            let rebalances = self.consumer.context().rebalances();
            let stale = described_at.is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
            if stale || rebalances != seen_rebalances {
                seen_rebalances = rebalances;
                self.describe();
                described_at = Some(Instant::now());
            }
        }
        self.consumer.unsubscribe();
        info!(group = %self.group, "left the owners' group");
    }

    fn describe(&self) {
        if self.shared.partitions.load(Ordering::Acquire) == 0 {
            match self.partition_count() {
                Ok(count) => self.shared.partitions.store(count, Ordering::Release),
                Err(error) => debug!(error = %error, "updates topic's partition count"),
            }
        }
        let groups = match self
            .consumer
            .fetch_group_list(Some(&self.group), DESCRIBE_TIMEOUT)
        {
            Ok(groups) => groups,
            Err(error) => {
                debug!(error = %error, "describe the owners' group");
                return;
            }
        };
        let Some(group) = groups.groups().iter().find(|g| g.name() == self.group) else {
            return;
        };
        if group.state() != "Stable" {
            // Mid-rebalance the assignments are partial: keep the last map.
            return;
        }
        let members: Vec<MemberBytes<'_>> = group
            .members()
            .iter()
            .map(|member| MemberBytes {
                client_id: member.client_id(),
                metadata: member.metadata().unwrap_or_default(),
                assignment: member.assignment().unwrap_or_default(),
            })
            .collect();
        let map = cluster_map(&self.topic, &members);
        let mut current = self.shared.map.write();
        if *current != map {
            info!(
                generation = map.generation,
                nodes = map.nodes.len(),
                "owners' group changed"
            );
            *current = map;
        }
    }

    fn partition_count(&self) -> Result<i32, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), DESCRIBE_TIMEOUT)?;
        let count = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == self.topic)
            .map_or(0, |topic| topic.partitions().len());
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

/// The member's context: records its assignment, pauses what it is
/// assigned, reports revocations.
struct OwnerContext {
    log: WeftContext,
    shared: Arc<Shared>,
    moves: mpsc::Sender<Vec<i32>>,
    topic: String,
    /// Assignment changes seen, so the poll thread describes the group
    /// again after each.
    rebalances: AtomicU64,
}

impl OwnerContext {
    fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Acquire)
    }
}

impl ClientContext for OwnerContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for OwnerContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked = partitions_of(list, &self.topic);
        {
            let mut owned = self.shared.owned.lock();
            for partition in &revoked {
                owned.remove(partition);
            }
        }
        self.rebalances.fetch_add(1, Ordering::AcqRel);
        info!(partitions = ?revoked, "partitions moved away from this node");
        if !revoked.is_empty() && tokio::runtime::Handle::try_current().is_err() {
            // The poll thread: waits if the node is slow to take them.
            let _stopped = self.moves.blocking_send(revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        // The member reads nothing: the live consumer reads what the
        // node's documents need.
        if let Err(error) = consumer.pause(list) {
            warn!(error = %error, "pause the owners' partitions");
        }
        let assigned = partitions_of(list, &self.topic);
        self.shared.owned.lock().extend(assigned.iter().copied());
        self.rebalances.fetch_add(1, Ordering::AcqRel);
        info!(partitions = ?assigned, "partitions now owned by this node");
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements()
        .iter()
        .filter(|element| element.topic() == topic)
        .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
        .collect()
}
