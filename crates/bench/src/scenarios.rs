//! The scenarios of `make bench`, each a function from a running server and
//! a size to named metrics.
//!
//! | scenario | shape | metrics |
//! | --- | --- | --- |
//! | latency | writers on endpoint 0, readers on the last endpoint, steady rate | p50/p90/p99/max, server CPU per update |
//! | fan-out | one writer, many readers of one document, one node | deliveries/s, p99, deliveries per server CPU second |
//! | throughput | one writer and one reader per document, many documents, one node | updates/s, server CPU µs per update |
//! | maxrate | the throughput shape, raised step by step until a step fails (`maxrate.rs`) | highest sustained updates/s, its p50/p99, server and driver CPU |
//! | idle | many synced sessions doing nothing | server RSS per session |
//! | stalled | readers of one busy document that stop reading (`stalled.rs`) | server RSS per stalled reader, readers cut off |
//! | trace | one writer replays a real editing trace, one reader follows; then fresh clients load it (warm, and cold after a restart) | edits/s, server CPU, document size, load times |

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

/// How long scenario 1 sends to a document of its own before measuring,
/// unmeasured. Every server is started fresh for each run; this lets each
/// one reach the state a deployment serving traffic is in (the JVM of a
/// Kafka broker compiles its produce and fetch paths; Node.js its
/// handlers; connections and consumers are set up) before the clock starts.
const LATENCY_WARMUP_SECONDS: f64 = 3.0;
/// The warm-up's rate: the measured rate, at most this.
const LATENCY_WARMUP_MAX_RATE: f64 = 500.0;

/// Scenario 1 (and, with one endpoint, a same-node latency curve):
/// `writers` writers on the first endpoint, `readers` readers on the last,
/// `rate` updates per second in total for `seconds`, after an unmeasured
/// warm-up on another document.
pub(crate) async fn latency(
    server: &RunningServer,
    writers: usize,
    readers: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Metrics> {
    let warmup_rate = rate.min(LATENCY_WARMUP_MAX_RATE);
    let warmup_per_writer = ((warmup_rate * LATENCY_WARMUP_SECONDS) / writers as f64)
        .ceil()
        .max(1.0) as u32;
    let warmup = Plan {
        doc: format!("warmup-{}", crate::clock::nanos()),
        writers,
        readers,
        writer_endpoint: 0,
        reader_endpoint: server.endpoints.len() - 1,
        updates_per_writer: warmup_per_writer,
        total_rate: warmup_rate,
        deadline: deadline_for(warmup_per_writer, writers, warmup_rate),
    };
    session::run(&server.endpoints, &warmup)
        .await
        .context("warm-up")?;
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
    // Weft's writer node says how long its part took (the peers have no
    // such figures).
    let writer_node = server.endpoints[0].addr;
    let weft = server.kind().is_weft();
    let before = if weft {
        Some(crate::prom::scrape(writer_node)?)
    } else {
        None
    };
    let (outcome, cpu) =
        session::run_measured(&server.endpoints, &plan, || server.cpu_seconds()).await?;
    let mut metrics = Metrics::new();
    latency_metrics(&outcome, &mut metrics);
    let updates = f64::from(updates_per_writer) * writers as f64;
    metrics.insert("server_cpu_s".into(), cpu);
    metrics.insert("cpu_us_per_update".into(), cpu * 1e6 / updates);
    if let Some(before) = before {
        let after = crate::prom::scrape(writer_node)?;
        let mean_ms = |name: &str| {
            crate::prom::histogram_mean_between(&before, &after, name).map(|s| s * 1_000.0)
        };
        // Client frame to durable acknowledgement on the writer's node...
        if let Some(commit) = mean_ms("weft_update_commit_seconds") {
            metrics.insert("commit_mean_ms".into(), commit);
        }
        // ...of which the produce request to the broker's acks=all answer.
        if let Some(publish) = mean_ms("weft_publish_seconds") {
            metrics.insert("publish_mean_ms".into(), publish);
        }
        if let Some(batch) =
            crate::prom::histogram_mean_between(&before, &after, "weft_publish_batch_updates")
        {
            metrics.insert("publish_batch_mean".into(), batch);
        }
    }
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
    let driver_before = crate::procstat::cpu_seconds(std::process::id())?;
    let (outcome, cpu) =
        session::run_measured(&server.endpoints, &plan, || server.cpu_seconds()).await?;
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

/// Edits the writer may be ahead of the reader in scenario 5 (counted in
/// inserted characters, the writer's clock): the replay goes as fast as the
/// server delivers, without an unbounded queue in front of it.
pub(crate) const TRACE_WINDOW: u32 = 2_000;
/// Deadline of a replay: a base plus a per-edit allowance (2 ms, many times
/// what any measured server needs; reaching it means the server stalled).
const TRACE_BASE_DEADLINE: Duration = Duration::from_secs(30);
const TRACE_PER_EDIT: Duration = Duration::from_millis(2);
/// Time a fresh client gets to connect and load the replayed document.
const TRACE_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Scenario 5: one writer replays `trace` (one update per transaction)
/// into a fresh document while a reader connected from the start follows;
/// then a fresh client loads the result from the running server (warm) and,
/// for Weft, from a restarted one (cold: SIGTERM, then start again on the
/// same store). The peers keep nothing across a restart without a
/// persistence extension, so they have no cold load.
pub(crate) async fn trace_replay(
    server: &mut RunningServer,
    programs: &crate::processes::Programs,
    trace: &crate::trace::Trace,
) -> anyhow::Result<Metrics> {
    use crate::trace::{TEXT_NAME, apply_txn, char_offset_doc, text_of};
    use futures::FutureExt as _;
    use yrs::{ReadTxn, StateVector, Transact};

    ensure!(
        server.server_pids.len() == 1,
        "the trace is replayed on one node"
    );
    let endpoint = server.endpoints[0].clone();
    let doc_name = format!("trace-{}", crate::clock::nanos());
    let edits = trace.edits();
    let deadline = TRACE_BASE_DEADLINE + TRACE_PER_EDIT * u32::try_from(edits).unwrap_or(u32::MAX);
    let connect_timeout = Duration::from_secs(10);
    let mut reader =
        crate::client::Client::connect(&endpoint, &doc_name, None, connect_timeout).await?;
    let mut writer =
        crate::client::Client::connect(&endpoint, &doc_name, None, connect_timeout).await?;
    // The document is new and empty: the writer's replica becomes one whose
    // offsets count characters, as the trace's do.
    writer.doc = char_offset_doc();
    let writer_id = writer.doc.client_id();
    let text = writer.doc.get_or_insert_text(TEXT_NAME);

    // The reader publishes how far it is (the writer's clock it has seen)
    // and finishes when its text is the expected one.
    let (progress_tx, mut progress_rx) = watch::channel(0_u32);
    let (final_tx, final_rx) = watch::channel::<Option<u32>>(None);
    let expected = trace.end_content.clone();
    let cpu_before = server.cpu_seconds()?;
    let started = std::time::Instant::now();
    let reader_task = tokio::spawn(async move {
        let mut final_rx = final_rx;
        loop {
            let target = *final_rx.borrow_and_update();
            if let Some(target) = target
                && reader.state_vector().get(&writer_id) >= target
                && text_of(&reader.doc) == expected
            {
                return anyhow::Ok(reader);
            }
            tokio::select! {
                changed = final_rx.changed() => {
                    changed.context("the writer stopped")?;
                }
                frame = reader.next_frame() => {
                    if reader.handle_frame(&frame?).await?.is_none() {
                        continue;
                    }
                    let clock = reader.state_vector().get(&writer_id);
                    let _no_writer_left = progress_tx.send(clock);
                }
            }
        }
    });
    let abort_reader = reader_task.abort_handle();
    let replay = async {
        for txn in &trace.txns {
            let update = apply_txn(&writer.doc, &text, txn);
            let frame = weft_protocol::SyncMessage::Update(update).encode_frame();
            writer.send_yjs(&frame).await?;
            // Servers may echo the writer's own updates back (the reference
            // server does): read what has arrived, so that no server finds
            // the writer a slow consumer. The writer has it all already.
            while let Some(frame) = writer.next_frame().now_or_never() {
                let _echo = frame?;
            }
            let clock = writer.state_vector().get(&writer_id);
            let floor = clock.saturating_sub(TRACE_WINDOW);
            while *progress_rx.borrow_and_update() < floor {
                tokio::select! {
                    changed = progress_rx.changed() => {
                        changed.context("reader stopped during the replay")?;
                    }
                    frame = writer.next_frame() => {
                        let _echo = frame?;
                    }
                }
            }
        }
        let final_clock = writer.state_vector().get(&writer_id);
        final_tx
            .send(Some(final_clock))
            .context("reader stopped before the end")?;
        anyhow::Ok(())
    };
    let reader_done = async {
        tokio::time::timeout(deadline, async {
            replay.await?;
            reader_task.await.context("reader task")?
        })
        .await
        .with_context(|| format!("the reader did not have the replayed text within {deadline:?}"))?
    };
    let reader = match reader_done.await {
        Ok(reader) => reader,
        Err(error) => {
            abort_reader.abort();
            return Err(error);
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    let writer_text = text_of(&writer.doc);
    ensure!(
        writer_text == trace.end_content,
        "the writer's text is not the trace's end ({} vs {} characters)",
        writer_text.chars().count(),
        trace.end_content.chars().count()
    );
    ensure!(
        text_of(&reader.doc) == writer_text,
        "the reader's text differs from the writer's"
    );
    let doc_bytes = writer
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default())
        .len();

    let mut metrics = Metrics::new();
    metrics.insert("edits".into(), edits as f64);
    metrics.insert("txns".into(), trace.txns.len() as f64);
    metrics.insert("replay_s".into(), elapsed);
    metrics.insert("edits_per_s".into(), edits as f64 / elapsed);
    metrics.insert("server_cpu_s".into(), cpu);
    metrics.insert("doc_kib".into(), doc_bytes as f64 / 1024.0);
    metrics.insert("end_chars".into(), trace.end_content.chars().count() as f64);

    // The writer and the reader stay connected during the warm load:
    // Hocuspocus unloads a document when its last connection closes, and
    // without persistence that loses it.
    let warm_ms = timed_load(&server.endpoints[0], &doc_name, trace).await?;
    metrics.insert("warm_load_ms".into(), warm_ms);
    reader.close().await;
    writer.close().await;

    if server.kind() == crate::servers::ServerKind::Weft {
        let restart = server.restart_weft(programs)?;
        metrics.insert("restart_s".into(), restart.as_secs_f64());
        let cold_ms = timed_load(&server.endpoints[0], &doc_name, trace).await?;
        metrics.insert("cold_load_ms".into(), cold_ms);
    }
    Ok(metrics)
}

/// A fresh client's time to synced (connect, handshake, the server's
/// SyncStep2 applied) in ms, checked against the trace's end.
async fn timed_load(
    endpoint: &crate::client::Endpoint,
    doc_name: &str,
    trace: &crate::trace::Trace,
) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    let client =
        crate::client::Client::connect(endpoint, doc_name, None, TRACE_LOAD_TIMEOUT).await?;
    let ms = started.elapsed().as_secs_f64() * 1_000.0;
    let text = crate::trace::text_of(&client.doc);
    ensure!(
        text == trace.end_content,
        "a fresh client loaded {} characters, not the trace's end ({})",
        text.chars().count(),
        trace.end_content.chars().count()
    );
    client.close().await;
    Ok(ms)
}
