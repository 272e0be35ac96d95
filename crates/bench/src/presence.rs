//! The presence scenario: many clients on one document, each moving its
//! cursor once a second (an awareness change), while a few of them type.
//!
//! The shape, for `clients` clients:
//!
//! 1. every client connects to the one endpoint and syncs the document;
//! 2. for `seconds` seconds, client `i` sends awareness change `k` (clock
//!    `k`, a cursor state) at `start + i/clients s + (k - 1) s`: a change
//!    per client per second, spread in phase over the second; the first
//!    [`TYPISTS`] clients also send [`TYPING_RATE`] document updates a
//!    second each (stamped, as the other scenarios' writers do);
//! 3. every client records, for every other client's every change, the
//!    time from its send until the client holds that client's state at
//!    least as new (by its clock: a server may coalesce presence, so only
//!    the latest state must arrive), and every update's send-to-apply
//!    time;
//! 4. the check: after the load, within [`QUIET_ALLOWANCE`], every client
//!    holds every other client's final state and every update once and in
//!    order, and all replicas have the same state vector.
//!
//! Server CPU (user + system of its processes, from `/proc`) and the
//! driver's own are read over the load, as a share of one core: the driver
//! shares the machine's cores with the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::presence_client::{CHANGE_PERIOD, Observed, Run, participate};
use crate::scenarios::Metrics;
use crate::servers::RunningServer;
use crate::session::{self, DidNotKeepUp};

/// Clients that also type.
pub(crate) const TYPISTS: usize = 5;
/// Updates per second of each typist.
pub(crate) const TYPING_RATE: f64 = 5.0;
/// Between every client synced and the first change: the tasks start.
const START_DELAY: Duration = Duration::from_millis(500);
/// How long after the load every client may take to hold every final state
/// and update before the run fails.
const QUIET_ALLOWANCE: Duration = Duration::from_secs(15);

/// Runs the scenario with `clients` clients for `seconds` seconds.
pub(crate) async fn presence(
    server: &RunningServer,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Metrics> {
    ensure!(clients > TYPISTS, "more clients than typists");
    let endpoint = &server.endpoints[0];
    let doc = format!("presence-{}", crate::clock::nanos());
    let connected = session::connect_many(endpoint, &doc, clients, 0).await?;
    let changes = seconds.round().max(1.0) as u32;
    let stamp_period = Duration::from_secs_f64(1.0 / TYPING_RATE);
    let stamps = (seconds * TYPING_RATE).round().max(1.0) as u32;
    let start = Instant::now() + START_DELAY;
    let load = CHANGE_PERIOD * changes;
    let deadline = start + load + QUIET_ALLOWANCE;
    let (all_complete, _) = watch::channel(false);
    let run = Arc::new(Run {
        clients,
        typists: TYPISTS,
        changes,
        stamps,
        stamp_period,
        start,
        deadline,
        sent_at: (0..clients)
            .map(|_| (0..=changes).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        complete: AtomicUsize::new(0),
        all_complete,
    });
    let mut tasks = Vec::with_capacity(clients);
    for (index, client) in connected.into_iter().enumerate() {
        let run = Arc::clone(&run);
        tasks.push(tokio::spawn(participate(client, index, run)));
    }

    tokio::time::sleep_until(start).await;
    let server_before = server.cpu_seconds()?;
    let driver_before = driver_cpu_seconds()?;
    tokio::time::sleep_until(start + load).await;
    let server_cpu = server.cpu_seconds()? - server_before;
    let driver_cpu = driver_cpu_seconds()? - driver_before;

    let mut observed = Vec::with_capacity(clients);
    let mut first_error = None;
    let mut behind = 0_usize;
    for task in tasks {
        match task.await.context("presence client task")? {
            Ok(outcome) => observed.push(outcome),
            Err(error) => {
                if error.downcast_ref::<DidNotKeepUp>().is_some() {
                    behind += 1;
                }
                first_error.get_or_insert(error);
            }
        }
    }
    let quiet = Instant::now().saturating_duration_since(start + load);
    if let Some(error) = first_error {
        for outcome in observed {
            outcome.client.close().await;
        }
        if behind > 0 {
            return Err(DidNotKeepUp(format!("{behind} of {clients} clients: {error:#}")).into());
        }
        return Err(error);
    }
    let metrics = summarise(&observed, server_cpu, driver_cpu, load, quiet, changes)?;
    for outcome in observed {
        outcome.client.close().await;
    }
    Ok(metrics)
}

/// The driver's own CPU seconds so far.
fn driver_cpu_seconds() -> anyhow::Result<f64> {
    crate::procstat::cpu_seconds(std::process::id())
}

/// Checks that every replica converged and merges the measurements.
fn summarise(
    observed: &[Observed],
    server_cpu: f64,
    driver_cpu: f64,
    load: Duration,
    quiet: Duration,
    changes: u32,
) -> anyhow::Result<Metrics> {
    let mut presence_us = Histogram::<u64>::new(3).context("histogram")?;
    let mut update_us = Histogram::<u64>::new(3).context("histogram")?;
    let first = &observed.first().context("no clients")?.state_vector;
    for (index, outcome) in observed.iter().enumerate() {
        ensure!(
            outcome.state_vector == *first,
            "client {index}'s document differs from client 0's"
        );
        presence_us
            .add(&outcome.presence_us)
            .context("merge histogram")?;
        update_us
            .add(&outcome.update_us)
            .context("merge histogram")?;
    }
    let clients = observed.len() as u64;
    let pairs = clients * (clients - 1) * u64::from(changes);
    ensure!(
        presence_us.len() == pairs,
        "{} of {pairs} (client, change) pairs timed",
        presence_us.len()
    );
    let ms = |micros: u64| micros as f64 / 1_000.0;
    let share = |cpu: f64| cpu / load.as_secs_f64() * 100.0;
    let mut metrics = Metrics::new();
    metrics.insert(
        "presence_p50_ms".into(),
        ms(presence_us.value_at_quantile(0.50)),
    );
    metrics.insert(
        "presence_p99_ms".into(),
        ms(presence_us.value_at_quantile(0.99)),
    );
    metrics.insert("presence_max_ms".into(), ms(presence_us.max()));
    metrics.insert("presence_pairs".into(), presence_us.len() as f64);
    metrics.insert(
        "update_p50_ms".into(),
        ms(update_us.value_at_quantile(0.50)),
    );
    metrics.insert(
        "update_p99_ms".into(),
        ms(update_us.value_at_quantile(0.99)),
    );
    metrics.insert("update_deliveries".into(), update_us.len() as f64);
    metrics.insert("server_cpu_pct".into(), share(server_cpu));
    metrics.insert("driver_cpu_pct".into(), share(driver_cpu));
    metrics.insert("quiet_ms".into(), quiet.as_secs_f64() * 1_000.0);
    Ok(metrics)
}
