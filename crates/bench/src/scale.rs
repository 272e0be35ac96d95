//! The scaling-out scenario (`scale`): the same total load on 1 to 4
//! Weft nodes over one broker, with each node's live consumer reading
//! every partition (`--kafka-consume all`) or only those of the documents
//! it holds (`held`), and what each node pays for it.
//!
//! Every document has one writer and one reader, both on the node the
//! cell's variant picks for it ([`crate::scale_plan`] has the sizes, the
//! cells and the pickers).
//!
//! Per node it records CPU seconds over the load (from `/proc`), the
//! records and bytes its live consumer fetched (Weft's own
//! `weft_bus_fetched_*` counters, scraped before and after), the updates
//! topic's partitions it was assigned, and its RSS at the end. Every
//! session is checked as in the other scenarios (every update delivered
//! once, in order), and a few documents are then loaded by a fresh client
//! on a node that does not hold them (a client on the wrong node works).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::client::{Client, read_stamps, stamp_count};
use crate::processes::Programs;
use crate::results::Record;
use crate::scale_plan::{Cell, STATS_SETTLE, ScaleSizes, Variant};
use crate::scenarios::Metrics;
use crate::servers::{self, ClusterSpec, RunningServer, ServerKind};
use crate::session::{self, Plan};

/// Weft's default updates topic.
const UPDATES_TOPIC: &str = "weft-updates";
/// Time beyond the sending time for the last updates to arrive.
const DRAIN_ALLOWANCE: Duration = Duration::from_secs(20);
/// Documents loaded by a client on a node the picker did not choose.
const WRONG_NODE_CHECKS: usize = 4;

/// Runs one cell once, as a record (failures included).
pub(crate) async fn run_cell(
    cell: Cell,
    repeat: u32,
    sizes: &ScaleSizes,
    programs: &Programs,
    scratch: &Path,
) -> Record {
    let outcome = async {
        let spec = ClusterSpec {
            nodes: cell.nodes,
            brokers: 1,
            partitions: sizes.partitions,
            consume: Some(cell.variant.consume()),
            ownership: cell.variant.ownership(),
        };
        let mut server = servers::start_weft_cluster(&spec, programs, scratch)?;
        let measured = measure(&mut server, cell, sizes).await;
        server.with_logs(measured)
    }
    .await;
    Record::from_outcome(
        "scale",
        ServerKind::WeftCluster,
        cell.nodes as f64,
        repeat,
        Some(cell.variant),
        outcome,
    )
}

/// What one node's `/metrics` says about its bus.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct BusReading {
    fetched_bytes: f64,
    fetched_records: f64,
    /// Partitions of the updates topic the live consumer is assigned.
    partitions: usize,
    documents: f64,
    /// Bytes relayed to and from owners (`weft_forwarded_bytes_total`).
    forwarded_bytes: f64,
    /// Sessions forwarded (`weft_forwards_total`).
    forwards: f64,
}

/// Reads the bus figures of the updates topic from a Prometheus text page.
fn parse_reading(text: &str) -> BusReading {
    let topic_label = format!("{{topic=\"{UPDATES_TOPIC}\"}}");
    let lag_prefix = format!("weft_bus_consumer_lag{{topic=\"{UPDATES_TOPIC}\",");
    let mut reading = BusReading::default();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with(&lag_prefix) {
            reading.partitions += 1;
        } else if let Some(metric) = name.strip_suffix(&topic_label) {
            match metric {
                "weft_bus_fetched_bytes_total" => reading.fetched_bytes = value,
                "weft_bus_fetched_records_total" => reading.fetched_records = value,
                _ => {}
            }
        } else if name == "weft_documents_loaded" {
            reading.documents = value;
        } else if name == "weft_forwarded_bytes_total" {
            reading.forwarded_bytes = value;
        } else if name == "weft_forwards_total" {
            reading.forwards = value;
        }
    }
    reading
}

fn scrape_all(server: &RunningServer) -> anyhow::Result<Vec<BusReading>> {
    server
        .endpoints
        .iter()
        .map(|endpoint| crate::prom::scrape(endpoint.addr).map(|page| parse_reading(&page)))
        .collect()
}

async fn measure(
    server: &mut RunningServer,
    cell: Cell,
    sizes: &ScaleSizes,
) -> anyhow::Result<Metrics> {
    let nodes = server.endpoints.len();
    let per_doc_rate = sizes.rate / sizes.docs as f64;
    let updates_per_doc = (per_doc_rate * sizes.seconds).ceil().max(1.0) as u32;
    let sending = Duration::from_secs_f64(f64::from(updates_per_doc) / per_doc_rate);
    let run_id = crate::clock::nanos();
    let names: Vec<String> = (0..sizes.docs)
        .map(|doc| format!("scale-{run_id}-{doc}"))
        .collect();
    let mut homes: Vec<usize> = names
        .iter()
        .map(|name| cell.variant.node_for(name, nodes, sizes.partitions))
        .collect();
    // The node holding each document: its clients' node, or its owner in
    // a cluster of owners (a client elsewhere is forwarded there).
    let mut holders = homes.clone();
    let mut balance_s = None;
    if cell.variant.ownership() {
        let waiting = std::time::Instant::now();
        let live: Vec<usize> = (0..nodes).collect();
        let owners = crate::scale_owners::wait_balanced(server, &live, sizes.partitions).await?;
        balance_s = Some(waiting.elapsed().as_secs_f64());
        holders = crate::scale_owners::owners_of(&names, &owners, sizes.partitions);
        if cell.variant == Variant::OwnersRouted {
            homes.clone_from(&holders);
        }
    }

    let rss_start = node_rss_mib(server)?;
    let before = scrape_all(server)?;
    let cpu_before = node_cpu(server)?;
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(sizes.docs);
    for (name, home) in names.iter().zip(&homes) {
        // The session sees only its home node: its check's fresh client
        // loads the document there, not on every node.
        let endpoints = vec![server.endpoints[*home].clone()];
        let plan = Plan {
            doc: name.clone(),
            writers: 1,
            readers: 1,
            writer_endpoint: 0,
            reader_endpoint: 0,
            updates_per_writer: updates_per_doc,
            total_rate: per_doc_rate,
            deadline: sending + DRAIN_ALLOWANCE,
        };
        tasks.push(tokio::spawn(async move {
            session::run(&endpoints, &plan).await
        }));
    }
    let mut deliveries = 0;
    for task in tasks {
        deliveries += task.await.context("scale session task")??.deliveries;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = node_cpu(server)?;
    // The wait for librdkafka's report doubles as an idle measurement: the
    // sessions are closed, the nodes still hold the documents and poll the
    // broker (the floor under every node's CPU, whatever its load).
    let quiet = std::time::Instant::now();
    tokio::time::sleep(STATS_SETTLE).await;
    let cpu_quiet = node_cpu(server)?;
    let quiet_seconds = quiet.elapsed().as_secs_f64();
    let after = scrape_all(server)?;
    let rss = node_rss_mib(server)?;

    let updates = f64::from(updates_per_doc) * sizes.docs as f64;
    ensure!(
        deliveries as f64 == updates,
        "{deliveries} deliveries for {updates} updates"
    );
    let mut metrics = Metrics::new();
    metrics.insert("updates".into(), updates);
    metrics.insert("updates_per_s".into(), updates / elapsed);
    let mut cpu = Vec::new();
    let mut fetched_mib = Vec::new();
    let mut share = Vec::new();
    let mut idle_cpu = Vec::new();
    let mut forwarded_bytes = 0.0;
    let mut forwards = 0.0;
    for node in 0..nodes {
        forwarded_bytes += after[node].forwarded_bytes - before[node].forwarded_bytes;
        forwards += after[node].forwards - before[node].forwards;
        let own_docs = holders.iter().filter(|holder| **holder == node).count();
        let own_updates = f64::from(updates_per_doc) * own_docs as f64;
        let records = after[node].fetched_records - before[node].fetched_records;
        let bytes = after[node].fetched_bytes - before[node].fetched_bytes;
        // A node's consumer reads its own documents' records back (and
        // skips its own): with more than one node, a counter below that
        // means the metric missed records.
        if nodes > 1 {
            ensure!(
                records >= own_updates,
                "node {node} fetched {records} records of the updates topic, fewer than its own documents' {own_updates}"
            );
        }
        let node_cpu = cpu_after[node] - cpu_before[node];
        cpu.push(node_cpu);
        fetched_mib.push(bytes / (1024.0 * 1024.0));
        share.push(records / updates);
        let prefix = format!("node{node}_");
        metrics.insert(format!("{prefix}docs"), own_docs as f64);
        metrics.insert(format!("{prefix}cpu_s"), node_cpu);
        metrics.insert(format!("{prefix}fetched_mib"), bytes / (1024.0 * 1024.0));
        metrics.insert(format!("{prefix}fetched_records"), records);
        metrics.insert(format!("{prefix}partitions"), after[node].partitions as f64);
        metrics.insert(format!("{prefix}rss_mib"), rss[node]);
        metrics.insert(format!("{prefix}rss_start_mib"), rss_start[node]);
        let idle = (cpu_quiet[node] - cpu_after[node]) / quiet_seconds;
        idle_cpu.push(idle);
        metrics.insert(format!("{prefix}idle_cpu_per_s"), idle);
        metrics.insert(format!("{prefix}documents_loaded"), after[node].documents);
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    metrics.insert("cpu_s_mean".into(), mean(&cpu));
    metrics.insert("cpu_s_max".into(), max(&cpu));
    metrics.insert("cpu_s_total".into(), cpu.iter().sum());
    metrics.insert("fetched_mib_mean".into(), mean(&fetched_mib));
    metrics.insert("fetched_mib_max".into(), max(&fetched_mib));
    metrics.insert("fetched_share_mean".into(), mean(&share));
    metrics.insert("fetched_share_max".into(), max(&share));
    metrics.insert("forwarded_mib".into(), forwarded_bytes / (1024.0 * 1024.0));
    metrics.insert("forwarded_sessions".into(), forwards);
    if let Some(seconds) = balance_s {
        metrics.insert("balance_s".into(), seconds);
    }
    metrics.insert("idle_cpu_per_s_mean".into(), mean(&idle_cpu));
    // CPU above that floor, per update, all nodes together.
    let floor: f64 = idle_cpu.iter().sum::<f64>() * elapsed;
    metrics.insert(
        "cpu_us_per_update_above_idle".into(),
        (cpu.iter().sum::<f64>() - floor).max(0.0) * 1e6 / updates,
    );
    metrics.insert("rss_mib_mean".into(), mean(&rss));
    metrics.insert("rss_start_mib_mean".into(), mean(&rss_start));
    // What the documents and their sessions added, per document (each
    // with two sessions and its updates' history).
    metrics.insert(
        "rss_kib_per_doc".into(),
        (rss.iter().sum::<f64>() - rss_start.iter().sum::<f64>()) * 1024.0 / sizes.docs as f64,
    );
    metrics.insert(
        "partitions_mean".into(),
        after
            .iter()
            .map(|reading| reading.partitions as f64)
            .sum::<f64>()
            / nodes as f64,
    );
    metrics.insert(
        "cpu_us_per_update".into(),
        cpu.iter().sum::<f64>() * 1e6 / updates,
    );
    metrics.insert(
        "fetched_bytes_per_record".into(),
        fetched_mib.iter().sum::<f64>() * 1024.0 * 1024.0
            / share.iter().map(|s| s * updates).sum::<f64>().max(1.0),
    );

    if nodes > 1 {
        wrong_node_check(server, &names, &homes, updates_per_doc).await?;
    }
    if nodes > 1 && cell.variant == Variant::OwnersRouted {
        let failover = crate::scale_owners::failover(
            server,
            &names,
            &homes,
            updates_per_doc,
            sizes.partitions,
        )
        .await?;
        metrics.insert("failover_served_s".into(), failover.served_s);
        metrics.insert("failover_reowned_s".into(), failover.reowned_s);
    }
    Ok(metrics)
}

/// Each node's RSS now, MiB.
fn node_rss_mib(server: &RunningServer) -> anyhow::Result<Vec<f64>> {
    server
        .server_pids
        .iter()
        .map(|pid| crate::procstat::rss_kib(*pid).map(|kib| kib as f64 / 1024.0))
        .collect()
}

/// Each node's CPU seconds so far.
fn node_cpu(server: &RunningServer) -> anyhow::Result<Vec<f64>> {
    server
        .server_pids
        .iter()
        .map(|pid| crate::procstat::cpu_seconds(*pid))
        .collect()
}

/// A fresh client of a few documents on the node after their home: it
/// loads every update, in order.
async fn wrong_node_check(
    server: &RunningServer,
    names: &[String],
    homes: &[usize],
    updates_per_doc: u32,
) -> anyhow::Result<()> {
    let nodes = server.endpoints.len();
    for (name, home) in names.iter().zip(homes).take(WRONG_NODE_CHECKS) {
        let other = (home + 1) % nodes;
        let client = Client::connect(
            &server.endpoints[other],
            name,
            None,
            Duration::from_secs(30),
        )
        .await?;
        let count = stamp_count(&client.doc, 0);
        let in_order = read_stamps(&client.doc, 0, 0)
            .iter()
            .enumerate()
            .all(|(position, (seq, _))| *seq == position as u64);
        ensure!(
            count == updates_per_doc && in_order,
            "a client of {name} on node {other} (not its home {home}) loaded {count} of {updates_per_doc} updates (in order: {in_order})"
        );
        client.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_page_is_read_for_the_updates_topic_only() {
        let text = "\
# HELP weft_bus_fetched_bytes Key and value bytes
# TYPE weft_bus_fetched_bytes counter
weft_bus_fetched_bytes_total{topic=\"weft-updates\"} 12345
weft_bus_fetched_bytes_total{topic=\"weft-updates-awareness\"} 999
weft_bus_fetched_records_total{topic=\"weft-updates\"} 67
weft_bus_fetched_records_total{topic=\"weft-updates-awareness\"} 5
weft_bus_consumer_lag{topic=\"weft-updates\",partition=\"0\"} 0
weft_bus_consumer_lag{topic=\"weft-updates\",partition=\"7\"} 2
weft_bus_consumer_lag{topic=\"weft-updates-awareness\",partition=\"0\"} 0
weft_documents_loaded 3
";
        let reading = parse_reading(text);
        assert_eq!(
            reading,
            BusReading {
                fetched_bytes: 12_345.0,
                fetched_records: 67.0,
                partitions: 2,
                documents: 3.0,
                ..BusReading::default()
            }
        );
        assert_eq!(parse_reading(""), BusReading::default());
    }
}
