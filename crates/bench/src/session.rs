//! A timed editing session among many clients, and its correctness check.
//!
//! Writers send stamped updates at a steady rate (a legitimate timer); every
//! client applies what it receives and counts, per writer, the stamps it
//! has. A client is done when it has every stamp of every writer. Then the
//! check: every client holds every update exactly once and in order (a
//! writer's array holds seq 0, 1, 2, ... and nothing else), all state
//! vectors are equal, and a fresh client of every endpoint loads the same
//! state. Any failure fails the run.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::client::{Client, Endpoint, read_stamps, stamp_count};

/// Connections opened at once: enough to set up thousands of clients in
/// seconds without a SYN backlog overflow on the server.
const CONNECT_PARALLELISM: usize = 64;
/// How long one client may take to connect and sync.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Source addresses clients spread over (127.0.1.1 ..= 127.0.1.250), so no
/// single (source, destination) pair runs out of ephemeral ports.
const SOURCE_ADDRESSES: usize = 250;
/// Latencies are recorded in microseconds up to one minute.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A session whose updates had not all arrived by its deadline: the server
/// (or the driver) did not keep up with the offered rate. Kept apart from
/// correctness failures, which are what a check exists for.
#[derive(Debug)]
pub(crate) struct DidNotKeepUp(pub(crate) String);

impl std::fmt::Display for DidNotKeepUp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "did not keep up: {}", self.0)
    }
}

impl std::error::Error for DidNotKeepUp {}

/// What a session does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) doc: String,
    pub(crate) writers: usize,
    pub(crate) readers: usize,
    /// Endpoint index writers connect to.
    pub(crate) writer_endpoint: usize,
    /// Endpoint index readers connect to.
    pub(crate) reader_endpoint: usize,
    pub(crate) updates_per_writer: u32,
    /// Updates per second, all writers together.
    pub(crate) total_rate: f64,
    /// Time for the whole session after the clients synced.
    pub(crate) deadline: Duration,
}

/// What a session measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Send-to-apply latency at readers, microseconds.
    pub(crate) latency_us: Histogram<u64>,
    /// Update deliveries to readers.
    pub(crate) deliveries: u64,
    /// From the first send to the last reader done.
    pub(crate) elapsed: Duration,
    /// From the first send to the last writer's last send: how long the
    /// writers took to offer their updates (the plan's rate asks for
    /// `updates_per_writer` periods).
    pub(crate) sending: Duration,
}

/// The source address of the `index`-th client.
pub(crate) fn source_address(index: usize) -> IpAddr {
    let last = u8::try_from(1 + index % SOURCE_ADDRESSES).expect("below 251");
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, last))
}

/// Connects `count` clients of `doc` at `endpoint`, `CONNECT_PARALLELISM`
/// at a time, each synced before it is returned.
pub(crate) async fn connect_many(
    endpoint: &Endpoint,
    doc: &str,
    count: usize,
    first_index: usize,
) -> anyhow::Result<Vec<Client>> {
    connect_many_with_window(endpoint, doc, count, first_index, None).await
}

/// [`connect_many`], each socket's receive buffer (SO_RCVBUF) set to
/// `receive_buffer` bytes when given.
pub(crate) async fn connect_many_with_window(
    endpoint: &Endpoint,
    doc: &str,
    count: usize,
    first_index: usize,
    receive_buffer: Option<u32>,
) -> anyhow::Result<Vec<Client>> {
    let gate = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        let gate = Arc::clone(&gate);
        let endpoint = endpoint.clone();
        let doc = doc.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.context("connect gate")?;
            let source = Some(source_address(first_index + index));
            match receive_buffer {
                Some(bytes) => {
                    Client::connect_small_window(&endpoint, &doc, source, CONNECT_TIMEOUT, bytes)
                        .await
                }
                None => Client::connect(&endpoint, &doc, source, CONNECT_TIMEOUT).await,
            }
        }));
    }
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        clients.push(task.await.context("connect task")??);
    }
    Ok(clients)
}

/// Runs `plan` against `endpoints` and checks it.
pub(crate) async fn run(endpoints: &[Endpoint], plan: &Plan) -> anyhow::Result<Outcome> {
    run_measured(endpoints, plan, || Ok(0.0))
        .await
        .map(|(outcome, _)| outcome)
}

/// [`run`], also returning the server CPU seconds (read by `server_cpu`)
/// spent while updates flowed: from every client synced to the last reader
/// done. Connecting and the final check are left out, so the CPU measured
/// is that of the updates alone.
pub(crate) async fn run_measured(
    endpoints: &[Endpoint],
    plan: &Plan,
    server_cpu: impl Fn() -> anyhow::Result<f64>,
) -> anyhow::Result<(Outcome, f64)> {
    let writer_endpoint = &endpoints[plan.writer_endpoint];
    let reader_endpoint = &endpoints[plan.reader_endpoint];
    let writers = connect_many(writer_endpoint, &plan.doc, plan.writers, 0).await?;
    let readers = connect_many(reader_endpoint, &plan.doc, plan.readers, plan.writers).await?;
    let cpu_before = server_cpu()?;

    let period = Duration::from_secs_f64(plan.writers as f64 / plan.total_rate);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + plan.deadline;
    let mut tasks = Vec::new();
    for (index, client) in writers.into_iter().enumerate() {
        let plan = plan.clone();
        let role = format!("writer {index}");
        let task = participate(client, Some(index), plan, period, deadline);
        tasks.push(tokio::spawn(async move { task.await.context(role) }));
    }
    for (index, client) in readers.into_iter().enumerate() {
        let plan = plan.clone();
        let role = format!("reader {index}");
        let task = participate(client, None, plan, period, deadline);
        tasks.push(tokio::spawn(async move { task.await.context(role) }));
    }
    let mut latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")?;
    let mut clients = Vec::with_capacity(tasks.len());
    let mut last_send = started;
    // Each failure's text, and whether it was only too slow.
    let mut failures: Vec<(String, bool)> = Vec::new();
    for task in tasks {
        match task.await.context("client task")? {
            Ok((client, histogram, sent_last)) => {
                latency_us.add(&histogram).context("merge histogram")?;
                clients.push(client);
                last_send = last_send.max(sent_last.unwrap_or(started));
            }
            Err(error) => {
                let slow = error.downcast_ref::<DidNotKeepUp>().is_some();
                failures.push((format!("{error:#}"), slow));
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = server_cpu()? - cpu_before;
    if let Some((first, _)) = failures.first() {
        let too_slow = failures.iter().filter(|(_, slow)| *slow).count();
        let summary = format!(
            "{} of {} clients failed ({too_slow} only too slow); first: {first}",
            failures.len(),
            plan.writers + plan.readers
        );
        let Some((first_other, _)) = failures.iter().find(|(_, slow)| !*slow) else {
            return Err(DidNotKeepUp(summary).into());
        };
        bail!("{summary}; first other failure: {first_other}");
    }
    verify(&clients, endpoints, plan).await?;
    for client in clients {
        client.close().await;
    }
    let outcome = Outcome {
        deliveries: latency_us.len(),
        latency_us,
        elapsed,
        sending: last_send.saturating_duration_since(started),
    };
    Ok((outcome, cpu))
}

/// One client's part: send (if a writer) and apply until it has every
/// stamp of every writer, or fail at the deadline. Returns the client, its
/// latencies and (a writer) when it sent its last update.
async fn participate(
    mut client: Client,
    writer: Option<usize>,
    plan: Plan,
    period: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(Client, Histogram<u64>, Option<Instant>)> {
    let mut histogram = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")?;
    let mut seen = vec![0_u32; plan.writers];
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let expected = plan.updates_per_writer;
    let mut sent_last = None;
    loop {
        if seen.iter().all(|count| *count >= expected) {
            return Ok((client, histogram, sent_last));
        }
        let sending = writer.is_some_and(|index| seen[index] < expected);
        tokio::select! {
            _ = ticker.tick(), if sending => {
                let index = writer.expect("sending implies a writer");
                client.send_stamp(index, u64::from(seen[index])).await?;
                seen[index] += 1;
                sent_last = Some(Instant::now());
            }
            frame = client.next_frame() => {
                let frame = frame?;
                let received_at = crate::clock::nanos();
                if client.handle_frame(&frame).await?.is_none() {
                    continue;
                }
                for (other, seen_of_other) in seen.iter_mut().enumerate() {
                    if Some(other) == writer {
                        continue;
                    }
                    let stamps = read_stamps(&client.doc, other, *seen_of_other);
                    for (seq, sent_at) in stamps {
                        ensure!(
                            seq == u64::from(*seen_of_other),
                            "writer {other}: expected seq {} next, got {seq} (lost, duplicated or reordered)",
                            *seen_of_other
                        );
                        *seen_of_other += 1;
                        if writer.is_none() {
                            let micros = received_at.saturating_sub(sent_at) / 1_000;
                            histogram.saturating_record(micros.max(1));
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let state = format!("deadline passed with {seen:?} of {expected} per writer");
                return Err(DidNotKeepUp(state).into());
            }
        }
    }
}

/// The correctness check at the end of a session (while the clients are
/// still connected, so servers without persistence still hold the doc).
async fn verify(clients: &[Client], endpoints: &[Endpoint], plan: &Plan) -> anyhow::Result<()> {
    let Some(first) = clients.first() else {
        return Ok(());
    };
    let reference = first.state_vector();
    for (index, client) in clients.iter().enumerate() {
        ensure!(
            client.state_vector() == reference,
            "client {index} diverged: state vector {:?} vs {:?}",
            client.state_vector(),
            reference
        );
        for writer in 0..plan.writers {
            let count = stamp_count(&client.doc, writer);
            ensure!(
                count == plan.updates_per_writer,
                "client {index} has {count} stamps of writer {writer}, expected {}",
                plan.updates_per_writer
            );
        }
    }
    for endpoint in endpoints {
        let fresh = Client::connect(endpoint, &plan.doc, None, CONNECT_TIMEOUT).await?;
        ensure!(
            fresh.state_vector() == reference,
            "a fresh client of {} loads {:?}, the session ended at {:?}",
            endpoint.addr,
            fresh.state_vector(),
            reference
        );
        for writer in 0..plan.writers {
            let count = stamp_count(&fresh.doc, writer);
            let stamps = read_stamps(&fresh.doc, writer, 0);
            let in_order = stamps
                .iter()
                .enumerate()
                .all(|(position, (seq, _))| *seq == position as u64);
            ensure!(
                count == plan.updates_per_writer && in_order,
                "a fresh client of {} has {count} stamps of writer {writer} (in order: {in_order})",
                endpoint.addr
            );
        }
        fresh.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_is_recognised_through_context_layers() {
        let error: anyhow::Error = DidNotKeepUp("deadline".into()).into();
        let wrapped = error.context("reader 0").context("server logs kept in x");
        assert!(wrapped.downcast_ref::<DidNotKeepUp>().is_some());
        let other = anyhow::anyhow!("server closed the connection").context("reader 1");
        assert!(other.downcast_ref::<DidNotKeepUp>().is_none());
    }

    #[test]
    fn source_addresses_stay_in_loopback() {
        for index in [0, 1, 249, 250, 100_000] {
            let IpAddr::V4(address) = source_address(index) else {
                panic!("not IPv4")
            };
            assert!(address.is_loopback());
            assert_ne!(address.octets()[3], 0);
        }
    }
}
