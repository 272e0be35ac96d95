//! The scaling-out scenario (`scale`): the same total load on 1 to 4
//! Weft nodes over one broker, with each node's live consumer reading
//! every partition (`--kafka-consume all`) or only those of the documents
//! it holds (`held`), and what each node pays for it.
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
//! Per node it records CPU seconds over the load (from `/proc`), the
//! records and bytes its live consumer fetched (Weft's own
//! `weft_bus_fetched_*` counters, scraped before and after), the updates
//! topic's partitions it was assigned, and its RSS at the end. Every
//! session is checked as in the other scenarios (every update delivered
//! once, in order), and a few documents are then loaded by a fresh client
//! on a node that does not hold them (a client on the wrong node works).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};

use crate::Mode;
use crate::client::{Client, read_stamps, stamp_count};
use crate::plan::Record;
use crate::scenarios::Metrics;
use crate::servers::{self, ClusterSpec, Programs, RunningServer, ServerKind};
use crate::session::{self, Plan};

/// Weft's default updates topic.
const UPDATES_TOPIC: &str = "weft-updates";
/// librdkafka reports statistics (and so the fetch counters) every 5 s;
/// waiting a little longer after the load makes the last report cover it.
const STATS_SETTLE: Duration = Duration::from_millis(6_500);
/// Time beyond the sending time for the last updates to arrive.
const DRAIN_ALLOWANCE: Duration = Duration::from_secs(20);
/// Documents loaded by a client on a node the picker did not choose.
const WRONG_NODE_CHECKS: usize = 4;

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
}

impl Variant {
    pub(crate) const EVERY: [Variant; 3] =
        [Variant::All, Variant::HeldHash, Variant::HeldPartition];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::All => "all, name hash",
            Variant::HeldHash => "held, name hash",
            Variant::HeldPartition => "held, partition",
        }
    }

    fn consume(self) -> &'static str {
        match self {
            Variant::All => "all",
            Variant::HeldHash | Variant::HeldPartition => "held",
        }
    }

    /// The node (index) that serves `doc` in a cluster of `nodes`.
    pub(crate) fn node_for(self, doc: &str, nodes: usize, partitions: u32) -> usize {
        let nodes = nodes.max(1);
        match self {
            Variant::All | Variant::HeldHash => (fnv1a(doc.as_bytes()) % nodes as u64) as usize,
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
/// and `held` once each.
pub(crate) fn cells(sizes: &ScaleSizes) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &nodes in &sizes.nodes {
        for variant in Variant::EVERY {
            if nodes == 1 && variant == Variant::HeldPartition {
                continue;
            }
            cells.push(Cell { nodes, variant });
        }
    }
    cells
}

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
        };
        let mut server = servers::start_weft_cluster(&spec, programs, scratch)?;
        let measured = measure(&server, cell, sizes).await;
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
    server: &RunningServer,
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
    let homes: Vec<usize> = names
        .iter()
        .map(|name| cell.variant.node_for(name, nodes, sizes.partitions))
        .collect();

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
    for node in 0..nodes {
        let own_docs = homes.iter().filter(|home| **home == node).count();
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

/// The report's section: per node count and variant, per-node medians
/// (with the repeats' spread) and the ratio to one node.
pub(crate) fn section(
    out: &mut String,
    records: &[Record],
    sizes: Option<&ScaleSizes>,
    plots: &Path,
    plots_link: &str,
) -> anyhow::Result<()> {
    use crate::report::{cell, spread};
    let scale: Vec<&Record> = records
        .iter()
        .filter(|record| record.scenario == "scale")
        .collect();
    if scale.is_empty() {
        return Ok(());
    }
    out.push_str("## Scaling out\n\n");
    if let Some(sizes) = sizes {
        let _ = writeln!(
            out,
            "The same total load on 1 to {} Weft nodes over one Apache Kafka broker: {} documents, each with one writer and one reader \
             on the node its router picks, {} updates/s in total for {} s, topics of {} partitions. The node's live consumer \
             reads every partition (`all`) or only its held documents' (`held`); clients pick their node by a hash of the \
             document name (an ingress hashing the path) or by the document's Kafka partition. Per node: CPU seconds over the \
             load, its idle CPU (seconds per second over the {:.1} s after the load, documents still held), MiB and share of the \
             topic's records its live consumer fetched (`weft_bus_fetched_*`), updates-topic partitions assigned, RSS at the end. Median (min–max) of the repeats; \"× 1 node\" is the per-node mean over the \
             one-node `all` median.\n",
            sizes.nodes.iter().max().unwrap_or(&1),
            sizes.docs,
            sizes.rate,
            sizes.seconds,
            sizes.partitions,
            STATS_SETTLE.as_secs_f64()
        );
    }
    out.push_str(
        "| nodes | consume, routing | CPU s / node | max CPU s | × 1 node | idle CPU s/s / node | fetched MiB / node | share of records | partitions / node | RSS MiB / node |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let metric = |nodes: usize, variant: Variant, key: &str| {
        let values: Vec<f64> = scale
            .iter()
            .filter(|record| {
                record.ok && record.x as usize == nodes && record.variant == Some(variant)
            })
            .filter_map(|record| record.metrics.get(key).copied())
            .collect();
        spread(&values)
    };
    let base_cpu = metric(1, Variant::All, "cpu_s_mean").map(|s| s.median);
    let mut node_counts: Vec<usize> = scale.iter().map(|record| record.x as usize).collect();
    node_counts.sort_unstable();
    node_counts.dedup();
    let mut series = Vec::new();
    for variant in Variant::EVERY {
        let mut points = Vec::new();
        for &nodes in &node_counts {
            let Some(cpu) = metric(nodes, variant, "cpu_s_mean") else {
                continue;
            };
            let ratio = base_cpu.map_or("—".to_owned(), |base| {
                format!("{:.2}", cpu.median / base.max(1e-9))
            });
            let _ = writeln!(
                out,
                "| {nodes} | {} | {} | {} | {ratio} | {} | {} | {} | {} | {} |",
                variant.label(),
                cell(Some(cpu)),
                cell(metric(nodes, variant, "cpu_s_max")),
                cell(metric(nodes, variant, "idle_cpu_per_s_mean")),
                cell(metric(nodes, variant, "fetched_mib_mean")),
                cell(metric(nodes, variant, "fetched_share_mean")),
                cell(metric(nodes, variant, "partitions_mean")),
                cell(metric(nodes, variant, "rss_mib_mean")),
            );
            if let Some(fetched) = metric(nodes, variant, "fetched_mib_mean") {
                points.push((nodes as f64, fetched.median, fetched.min, fetched.max));
            }
        }
        if !points.is_empty() {
            series.push(crate::plot::Series {
                label: variant.label().to_owned(),
                points,
            });
        }
    }
    crate::plot::line_chart(
        &plots.join("scale-fetched.svg"),
        "Fetched from the bus per node, same total load",
        "nodes",
        "MiB fetched per node",
        &series,
        crate::plot::YScale::Linear,
    )?;
    let _ = writeln!(
        out,
        "\n![fetched MiB per node]({plots_link}/scale-fetched.svg)\n"
    );
    Ok(())
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
        assert_eq!(cells.len(), 2 + 3 * 3);
        assert!(
            !cells
                .iter()
                .any(|cell| cell.nodes == 1 && cell.variant == Variant::HeldPartition)
        );
    }

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
            }
        );
        assert_eq!(parse_reading(""), BusReading::default());
    }
}
