//! The `scale` scenario's clusters of owners (`--cluster-mode ownership`):
//! waiting until the owners' group has balanced, the owner of each
//! document (what `GET /api/cluster` says), and how long a SIGKILLed
//! owner's documents take to be served again.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde::Deserialize;

use crate::client::{Client, read_stamps, stamp_count};
use crate::scale_plan::kafka_partition;
use crate::servers::RunningServer;

/// How long the owners' group may take to balance (the first rebalance of
/// a cooperative group takes two rounds).
const BALANCE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the cluster is asked while waiting: the group changes on the
/// broker, and nothing tells the driver.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long a dead owner's documents may take to be served again.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
struct ClusterView {
    nodes: Vec<ClusterNode>,
}

#[derive(Debug, Deserialize)]
struct ClusterNode {
    id: String,
    address: String,
    partitions: Vec<u32>,
}

/// partition -> the index of its owner among `live` endpoints, once every
/// live node sees exactly the live nodes owning every partition; `None`
/// while not.
fn balanced(server: &RunningServer, live: &[usize], partitions: u32) -> Option<Vec<usize>> {
    let mut agreed: Option<Vec<usize>> = None;
    for &node in live {
        let page = crate::prom::get(server.endpoints[node].addr, "/api/cluster").ok()?;
        let view: ClusterView = serde_json::from_str(&page).ok()?;
        if view.nodes.len() != live.len() {
            return None;
        }
        let mut owners = vec![usize::MAX; partitions as usize];
        for member in &view.nodes {
            let index = live
                .iter()
                .copied()
                .find(|&i| server.endpoints[i].addr.to_string() == member.address)?;
            for &partition in &member.partitions {
                *owners.get_mut(partition as usize)? = index;
            }
            // Every member owns something: a joined member with nothing is
            // a rebalance not yet done.
            if member.partitions.is_empty() || member.id.is_empty() {
                return None;
            }
        }
        if owners.contains(&usize::MAX) {
            return None;
        }
        match &agreed {
            Some(previous) if *previous != owners => return None,
            _ => agreed = Some(owners),
        }
    }
    agreed
}

/// Waits until the owners' group of `live` nodes has balanced; returns
/// partition -> owner.
pub(crate) async fn wait_balanced(
    server: &RunningServer,
    live: &[usize],
    partitions: u32,
) -> anyhow::Result<Vec<usize>> {
    let started = Instant::now();
    loop {
        if let Some(owners) = balanced(server, live, partitions) {
            return Ok(owners);
        }
        ensure!(
            started.elapsed() < BALANCE_TIMEOUT,
            "the owners' group of nodes {live:?} did not balance within {BALANCE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The owner of each document.
pub(crate) fn owners_of(names: &[String], owners: &[usize], partitions: u32) -> Vec<usize> {
    names
        .iter()
        .map(|name| owners[kafka_partition(name, partitions) as usize])
        .collect()
}

/// What a failover took, seconds from the SIGKILL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failover {
    /// Until a fresh client on another node had one of the dead owner's
    /// documents whole (that node forwards in vain, then serves it).
    pub(crate) served_s: f64,
    /// Until every other node saw the dead owner's partitions owned by
    /// the others (the group's session timeout, then a rebalance).
    pub(crate) reowned_s: f64,
}

/// SIGKILLs the last node and measures how long its documents take to be
/// served again by another node, and to be owned again.
pub(crate) async fn failover(
    server: &mut RunningServer,
    names: &[String],
    homes: &[usize],
    updates_per_doc: u32,
    partitions: u32,
) -> anyhow::Result<Failover> {
    let nodes = server.endpoints.len();
    ensure!(nodes > 1, "a failover needs two nodes");
    let victim = nodes - 1;
    let doc = names
        .iter()
        .zip(homes)
        .find(|(_, home)| **home == victim)
        .map(|(name, _)| name.clone())
        .context("no document on the last node")?;
    let survivor = server.endpoints[0].clone();
    let killed = Instant::now();
    server.kill_node(victim)?;
    let served_s = loop {
        let attempt = Client::connect(&survivor, &doc, None, Duration::from_secs(10)).await;
        if let Ok(client) = attempt {
            let whole = stamp_count(&client.doc, 0) == updates_per_doc
                && read_stamps(&client.doc, 0, 0)
                    .iter()
                    .enumerate()
                    .all(|(position, (seq, _))| *seq == position as u64);
            client.close().await;
            if whole {
                break killed.elapsed().as_secs_f64();
            }
        }
        ensure!(
            killed.elapsed() < FAILOVER_TIMEOUT,
            "{doc} was not served whole within {FAILOVER_TIMEOUT:?} of its owner's SIGKILL"
        );
        tokio::time::sleep(POLL_EVERY).await;
    };
    let live: Vec<usize> = (0..victim).collect();
    loop {
        if balanced(server, &live, partitions).is_some() {
            break;
        }
        ensure!(
            killed.elapsed() < FAILOVER_TIMEOUT,
            "the dead owner's partitions were not owned again within {FAILOVER_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok(Failover {
        served_s,
        reowned_s: killed.elapsed().as_secs_f64(),
    })
}
