//! The scenarios of `make bench`, each a function from a running server and
//! a size to named metrics.
//!
//! | scenario | shape | metrics |
//! | --- | --- | --- |
//! | latency | writers on endpoint 0, readers on the last endpoint, steady rate | p50/p90/p99/max, server CPU per update |
//! | fan-out | one writer, many readers of one document, one node | deliveries/s, p99, deliveries per server CPU second |
//! | throughput | one writer and one reader per document, many documents, one node | updates/s, server CPU µs per update |
//! | idle | many synced sessions doing nothing | server RSS per session |

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::sync::watch;

use crate::servers::RunningServer;
use crate::session::{self, Plan};

/// Named measurements of one run.
pub(crate) type Metrics = BTreeMap<String, f64>;

/// Time allowed beyond a session's nominal length (sending time) for the
/// last updates to arrive before the run fails.
const DRAIN_ALLOWANCE: Duration = Duration::from_secs(20);
/// Pause after connecting idle sessions before reading RSS, so allocator
/// and runtime work triggered by the connects has settled. A measurement
/// choice, not synchronisation: every session is already synced.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// Documents the idle sessions spread over.
const IDLE_DOCS: usize = 10;

fn deadline_for(updates_per_writer: u32, writers: usize, total_rate: f64) -> Duration {
    let sending = f64::from(updates_per_writer) * writers as f64 / total_rate;
    Duration::from_secs_f64(sending) + DRAIN_ALLOWANCE
}

fn latency_metrics(outcome: &session::Outcome, metrics: &mut Metrics) {
    let histogram = &outcome.latency_us;
    let ms = |micros: u64| micros as f64 / 1_000.0;
    metrics.insert("p50_ms".into(), ms(histogram.value_at_quantile(0.50)));
    metrics.insert("p90_ms".into(), ms(histogram.value_at_quantile(0.90)));
    metrics.insert("p99_ms".into(), ms(histogram.value_at_quantile(0.99)));
    metrics.insert("max_ms".into(), ms(histogram.max()));
    metrics.insert("deliveries".into(), outcome.deliveries as f64);
    metrics.insert(
        "deliveries_per_s".into(),
        outcome.deliveries as f64 / outcome.elapsed.as_secs_f64(),
    );
}

/// Scenario 1 (and, with one endpoint, a same-node latency curve):
/// `writers` writers on the first endpoint, `readers` readers on the last,
/// `rate` updates per second in total for `seconds`.
pub(crate) async fn latency(
    server: &RunningServer,
    writers: usize,
    readers: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Metrics> {
    let updates_per_writer = ((rate * seconds) / writers as f64).ceil().max(1.0) as u32;
    let plan = Plan {
        doc: format!("latency-{}", crate::clock::nanos()),
        writers,
        readers,
        writer_endpoint: 0,
        reader_endpoint: server.endpoints.len() - 1,
        updates_per_writer,
        total_rate: rate,
        deadline: deadline_for(updates_per_writer, writers, rate),
    };
    let cpu_before = server.cpu_seconds()?;
    let outcome = session::run(&server.endpoints, &plan).await?;
    let cpu = server.cpu_seconds()? - cpu_before;
    let mut metrics = Metrics::new();
    latency_metrics(&outcome, &mut metrics);
    let updates = f64::from(updates_per_writer) * writers as f64;
    metrics.insert("server_cpu_s".into(), cpu);
    metrics.insert("cpu_us_per_update".into(), cpu * 1e6 / updates);
    Ok(metrics)
}

/// Scenario 2: one writer at `rate`, `readers` readers, one node.
pub(crate) async fn fanout(
    server: &RunningServer,
    readers: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Metrics> {
    let updates = (rate * seconds).ceil().max(1.0) as u32;
    let plan = Plan {
        doc: format!("fanout-{}", crate::clock::nanos()),
        writers: 1,
        readers,
        writer_endpoint: 0,
        reader_endpoint: 0,
        updates_per_writer: updates,
        total_rate: rate,
        deadline: deadline_for(updates, 1, rate),
    };
    let cpu_before = server.cpu_seconds()?;
    let driver_before = crate::procstat::cpu_seconds(std::process::id())?;
    let outcome = session::run(&server.endpoints, &plan).await?;
    let cpu = server.cpu_seconds()? - cpu_before;
    let driver_cpu = crate::procstat::cpu_seconds(std::process::id())? - driver_before;
    let mut metrics = Metrics::new();
    latency_metrics(&outcome, &mut metrics);
    metrics.insert("server_cpu_s".into(), cpu);
    metrics.insert("driver_cpu_s".into(), driver_cpu);
    metrics.insert(
        "deliveries_per_cpu_s".into(),
        outcome.deliveries as f64 / cpu.max(0.01),
    );
    Ok(metrics)
}

/// Scenario 3: `docs` documents, each with one writer and one reader, all
/// writing at `rate` in total; the node's rate and CPU per update.
pub(crate) async fn throughput(
    server: &RunningServer,
    docs: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Metrics> {
    let per_doc_rate = rate / docs as f64;
    let updates_per_doc = (per_doc_rate * seconds).ceil().max(1.0) as u32;
    let cpu_before = server.cpu_seconds()?;
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(docs);
    let run_id = crate::clock::nanos();
    for doc in 0..docs {
        let plan = Plan {
            doc: format!("throughput-{run_id}-{doc}"),
            writers: 1,
            readers: 1,
            writer_endpoint: 0,
            reader_endpoint: 0,
            updates_per_writer: updates_per_doc,
            total_rate: per_doc_rate,
            deadline: deadline_for(updates_per_doc, 1, per_doc_rate),
        };
        let endpoints = server.endpoints.clone();
        tasks.push(tokio::spawn(async move {
            session::run(&endpoints, &plan).await
        }));
    }
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).context("histogram")?;
    for task in tasks {
        let outcome = task.await.context("throughput task")??;
        latency.add(&outcome.latency_us).context("merge")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    let updates = f64::from(updates_per_doc) * docs as f64;
    let mut metrics = Metrics::new();
    metrics.insert("updates_per_s".into(), updates / elapsed);
    metrics.insert("server_cpu_s".into(), cpu);
    metrics.insert("cpu_us_per_update".into(), cpu * 1e6 / updates);
    metrics.insert(
        "p99_ms".into(),
        latency.value_at_quantile(0.99) as f64 / 1_000.0,
    );
    Ok(metrics)
}

/// Scenario 4: server RSS per idle synced session, `sessions` sessions over
/// [`IDLE_DOCS`] documents (each already loaded by one session first).
pub(crate) async fn idle(server: &RunningServer, sessions: usize) -> anyhow::Result<Metrics> {
    ensure!(
        server.server_pids.len() == 1,
        "idle sessions are measured on one node"
    );
    let pid = server.server_pids[0];
    let endpoint = &server.endpoints[0];
    let run_id = crate::clock::nanos();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = Vec::new();
    let mut baseline_clients = Vec::new();
    for doc in 0..IDLE_DOCS {
        let name = format!("idle-{run_id}-{doc}");
        let mut clients = session::connect_many(endpoint, &name, 1, doc).await?;
        let mut client = clients.pop().context("one client")?;
        client.send_stamp(0, 0).await?;
        baseline_clients.push(client);
    }
    for client in baseline_clients {
        holders.push(tokio::spawn(hold(client, stop_rx.clone())));
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_before = crate::procstat::rss_kib(pid)?;
    let per_doc = sessions / IDLE_DOCS;
    for doc in 0..IDLE_DOCS {
        let name = format!("idle-{run_id}-{doc}");
        let first_index = IDLE_DOCS + doc * per_doc;
        for client in session::connect_many(endpoint, &name, per_doc, first_index).await? {
            holders.push(tokio::spawn(hold(client, stop_rx.clone())));
        }
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_after = crate::procstat::rss_kib(pid)?;
    stop_tx.send(true).context("stop idle sessions")?;
    let mut dropped = 0;
    for holder in holders {
        if !holder.await.context("idle holder")? {
            dropped += 1;
        }
    }
    ensure!(
        dropped == 0,
        "{dropped} idle sessions were closed by the server"
    );
    let connected = (per_doc * IDLE_DOCS) as f64;
    let mut metrics = Metrics::new();
    metrics.insert("sessions".into(), connected);
    metrics.insert("rss_before_mib".into(), rss_before as f64 / 1024.0);
    metrics.insert("rss_after_mib".into(), rss_after as f64 / 1024.0);
    metrics.insert(
        "kib_per_session".into(),
        rss_after.saturating_sub(rss_before) as f64 / connected,
    );
    Ok(metrics)
}

/// Keeps an idle session open (reading, so pings are answered) until told
/// to stop. Returns whether it was still open then.
async fn hold(mut client: crate::client::Client, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            changed = stop.changed() => {
                let _sender_gone = changed;
                client.close().await;
                return true;
            }
            frame = client.next_frame() => {
                let Ok(frame) = frame else { return false };
                if client.handle_frame(&frame).await.is_err() {
                    return false;
                }
            }
        }
    }
}
