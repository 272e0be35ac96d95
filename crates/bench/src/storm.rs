//! Scenario 6: a reconnect storm. A node holding every client is killed
//! (SIGKILL: no shutdown, no goodbye), and every client reconnects at once
//! to where a load balancer would send it, and re-syncs.
//!
//! The shape, for `clients` clients over `docs` documents:
//!
//! 1. every client connects to node A (endpoint 0) and appends one unique
//!    string (its edit) to its document's root array
//!    [`EDITS_ARRAY`](crate::storm_editor::EDITS_ARRAY); the storm starts
//!    once every client holds every edit of its document, so each edit was
//!    accepted and broadcast by the server before the kill (Weft broadcasts
//!    an update only once the broker has acknowledged it);
//! 2. node A is killed. Two-node servers: the clients go to node B
//!    (endpoint 1). A single-process server (Weft alone on its SQLite
//!    store; the reference server and Hocuspocus alone, which have no
//!    clustering) is started again on the same port and the clients go back
//!    there;
//! 3. each client, which keeps its replica as a browser's provider does,
//!    reconnects (immediately, then with a bounded exponential backoff, a
//!    bounded number of times) and is re-synced when it has applied the
//!    server's SyncStep2 and its replica holds every edit of its document;
//! 4. the checks, while the clients are connected: every client's array
//!    holds each edit of its document exactly once (no lost and no
//!    duplicated content), and a fresh client of the serving node loads the
//!    same, exactly once;
//! 5. the clients close; the serving node's RSS is read after its documents
//!    unloaded (Weft: its `weft_documents_loaded` gauge is 0, with a short
//!    `--doc-unload-grace`; the peers unload a document when its last
//!    connection closes) and [`AFTER_SETTLE`] more.
//!
//! Memory is the serving node's (node B, or the started-again process):
//! before (no clients, no documents: node B before the kill, or the
//! single-process server freshly started, before the run), the peak sampled
//! every [`RSS_SAMPLE`] from the kill to the last re-sync, and after.
//!
//! This module drives the storm and checks it; each client's side of it is
//! [`crate::storm_editor`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::client::{Client, Endpoint};
use crate::processes::Programs;
use crate::scenarios::Metrics;
use crate::servers::{RunningServer, ServerKind};
use crate::session;
use crate::storm_editor::{Editor, Signals, edit_mismatch, edit_text, edits_of, holds_all};

/// Weft's `--doc-unload-grace` in this scenario, so that "after" is reached
/// in seconds (the default keeps an idle document for 30 s).
const WEFT_UNLOAD_GRACE: &str = "1s";
/// Period of the RSS samples during the storm.
const RSS_SAMPLE: Duration = Duration::from_millis(20);
/// How long Weft may take to unload the documents once the clients left.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Period of the unload probe (a gauge polled: nothing to await).
const UNLOAD_POLL: Duration = Duration::from_millis(100);
/// Pause between the documents unloading and reading RSS "after", so the
/// allocator's and runtime's deferred frees have happened. A measurement
/// choice, the same for every server, not synchronisation.
const AFTER_SETTLE: Duration = Duration::from_secs(2);
/// How long a fresh client may take to hold every edit after the storm.
const FRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings this scenario starts servers with.
pub(crate) fn programs(base: &Programs) -> Programs {
    let mut programs = base.clone();
    programs.weft_extra_args.extend([
        "--doc-unload-grace".to_owned(),
        WEFT_UNLOAD_GRACE.to_owned(),
    ]);
    programs
}

/// The `quantile` (0..=1) of `sorted` by nearest rank.
pub(crate) fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The value of an unlabelled gauge in a Prometheus text exposition.
fn gauge_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// Weft's `weft_documents_loaded` at `addr` (a plain HTTP/1.1 `GET`).
async fn weft_loaded_documents(addr: SocketAddr) -> anyhow::Result<f64> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("send metrics request")?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .context("read metrics")?;
    let text = String::from_utf8_lossy(&response);
    gauge_value(&text, "weft_documents_loaded").context("no weft_documents_loaded in /metrics")
}

/// Samples `pid`'s RSS until told to stop; returns the largest, KiB.
pub(crate) async fn sample_peak_rss(pid: u32, mut stop: watch::Receiver<bool>) -> u64 {
    let mut peak = 0;
    let mut ticker = tokio::time::interval(RSS_SAMPLE);
    loop {
        // A process still starting (or gone) has no RSS to read yet.
        if let Ok(kib) = crate::procstat::rss_kib(pid) {
            peak = peak.max(kib);
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return peak,
        }
    }
}

/// Waits until the next message of `receiver` while watching the clients:
/// a client that ends (with an error, or early) fails the storm.
async fn next_or_failure<T>(
    receiver: &mut mpsc::Receiver<T>,
    editors: &mut JoinSet<anyhow::Result<Vec<String>>>,
    what: &str,
) -> anyhow::Result<T> {
    tokio::select! {
        message = receiver.recv() => message.with_context(|| format!("every client ended before {what}")),
        Some(ended) = editors.join_next() => {
            ended.context("client task")??;
            bail!("a client ended before {what}")
        }
    }
}

/// Scenario 6 against `server` with `clients` clients over `docs`
/// documents.
pub(crate) async fn storm(
    server: &mut RunningServer,
    programs: &Programs,
    clients: usize,
    docs: usize,
) -> anyhow::Result<Metrics> {
    ensure!(
        docs > 0 && clients >= docs,
        "{clients} clients over {docs} documents"
    );
    let per_doc = clients / docs;
    let failover = server.endpoints.len() >= 2;
    let source_endpoint = server.endpoints[0].clone();
    let target = if failover {
        server.endpoints[1].clone()
    } else {
        server.endpoints[0].clone()
    };
    // Before: the serving process with no clients and no documents.
    let fresh_rss = crate::procstat::rss_kib(server.server_pids[0])?;

    let run_id = crate::clock::nanos();
    let (killed_tx, killed_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(clients);
    let (resynced_tx, mut resynced_rx) = mpsc::channel(clients);
    let signals = Signals {
        killed: killed_rx,
        stop: stop_rx,
        ready: ready_tx,
        resynced: resynced_tx,
    };
    let mut editors = JoinSet::new();
    let mut doc_names = Vec::with_capacity(docs);
    let mut doc_edits = Vec::with_capacity(docs);
    for doc in 0..docs {
        let name = format!("storm-{run_id}-{doc}");
        let expected: Arc<[String]> = (0..per_doc).map(|k| edit_text(doc, k)).collect();
        let first_index = doc * per_doc;
        let connected = session::connect_many(&source_endpoint, &name, per_doc, first_index)
            .await
            .with_context(|| format!("connect the clients of {name}"))?;
        for (k, client) in connected.into_iter().enumerate() {
            let editor = Editor {
                client,
                own_edit: edit_text(doc, k),
                expected: Arc::clone(&expected),
                source: session::source_address(first_index + k),
                target: target.clone(),
            };
            editors.spawn(editor.run(signals.clone()));
        }
        doc_names.push(name);
        doc_edits.push(expected);
    }
    drop(signals);
    let total = per_doc * docs;
    for _ in 0..total {
        next_or_failure(&mut ready_rx, &mut editors, "the kill").await?;
    }

    let rss_before = if failover {
        crate::procstat::rss_kib(server.server_pids[1])?
    } else {
        fresh_rss
    };
    let killed_at = Instant::now();
    killed_tx
        .send(Some(killed_at))
        .context("every client ended before the kill")?;
    server.kill_node(0).context("kill node A")?;
    let serving_pid = if failover {
        server.server_pids[1]
    } else {
        server
            .respawn_same_port(programs)
            .context("start the server again")?
    };
    let (sampler_stop, sampler_stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_peak_rss(serving_pid, sampler_stop_rx));

    let mut resync_times = Vec::with_capacity(total);
    let mut max_attempts = 0;
    for _ in 0..total {
        let resynced = next_or_failure(&mut resynced_rx, &mut editors, "re-syncing").await?;
        resync_times.push(resynced.after);
        max_attempts = max_attempts.max(resynced.attempts);
    }
    let storm_time = killed_at.elapsed();
    let _sampler_gone = sampler_stop.send(true);
    let rss_peak = sampler.await.context("RSS sampler")?;

    // Checks while the clients are connected: the serving node holds what
    // they hold, each edit exactly once.
    let mut fresh_load_max = Duration::ZERO;
    for (name, expected) in doc_names.iter().zip(&doc_edits) {
        let started = Instant::now();
        let found = fresh_edits(&target, name, expected).await?;
        fresh_load_max = fresh_load_max.max(started.elapsed());
        if let Some(mismatch) = edit_mismatch(expected, &found) {
            bail!("a fresh client of {name} at {}: {mismatch}", target.addr);
        }
    }
    stop_tx
        .send(true)
        .context("every client ended before the check")?;
    let mut checked = 0;
    while let Some(ended) = editors.join_next().await {
        let found = ended.context("client task")??;
        let doc = found
            .first()
            .and_then(|edit| doc_edits.iter().position(|edits| edits.contains(edit)))
            .context("a client's array holds no known edit")?;
        if let Some(mismatch) = edit_mismatch(&doc_edits[doc], &found) {
            bail!("a client of {}: {mismatch}", doc_names[doc]);
        }
        checked += 1;
    }
    ensure!(checked == total, "{checked} of {total} clients reported");

    if server.kind().is_weft() {
        wait_unloaded(target.addr).await?;
    }
    tokio::time::sleep(AFTER_SETTLE).await;
    let rss_after = crate::procstat::rss_kib(serving_pid)?;

    resync_times.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut metrics = Metrics::new();
    metrics.insert("clients".into(), total as f64);
    metrics.insert("docs".into(), docs as f64);
    metrics.insert("storm_s".into(), storm_time.as_secs_f64());
    metrics.insert("resync_p50_ms".into(), ms(percentile(&resync_times, 0.50)));
    metrics.insert("resync_p99_ms".into(), ms(percentile(&resync_times, 0.99)));
    metrics.insert("max_attempts".into(), f64::from(max_attempts));
    metrics.insert("fresh_load_max_ms".into(), ms(fresh_load_max));
    metrics.insert("edits_checked".into(), (total * per_doc) as f64);
    metrics.insert("rss_before_mib".into(), mib(rss_before));
    metrics.insert("rss_peak_mib".into(), mib(rss_peak));
    metrics.insert("rss_after_mib".into(), mib(rss_after));
    metrics.insert(
        "rss_after_ratio".into(),
        rss_after as f64 / rss_before.max(1) as f64,
    );
    Ok(metrics)
}

/// A fresh client's edits of `doc_name` once it holds all of `expected`
/// (the peers hold only what the re-synced clients sent back, which may
/// still be arriving: it reads updates until then, bounded in time).
async fn fresh_edits(
    endpoint: &Endpoint,
    doc_name: &str,
    expected: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut fresh = Client::connect(endpoint, doc_name, None, FRESH_TIMEOUT).await?;
    let waited = tokio::time::timeout(FRESH_TIMEOUT, async {
        while !holds_all(&edits_of(&fresh.doc), expected) {
            let frame = fresh.next_frame().await?;
            fresh.handle_frame(&frame).await?;
        }
        anyhow::Ok(())
    })
    .await;
    let found = edits_of(&fresh.doc);
    fresh.close().await;
    match waited {
        Ok(result) => result.map(|()| found),
        Err(_elapsed) => bail!(
            "a fresh client of {doc_name} lacks edits after {FRESH_TIMEOUT:?}: {}",
            edit_mismatch(expected, &found).unwrap_or_default()
        ),
    }
}

/// Waits (bounded) until Weft at `addr` holds no document.
async fn wait_unloaded(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + UNLOAD_TIMEOUT;
    loop {
        let loaded = weft_loaded_documents(addr).await?;
        if loaded == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("weft at {addr} still holds {loaded} documents after {UNLOAD_TIMEOUT:?}");
        }
        tokio::time::sleep(UNLOAD_POLL).await;
    }
}

/// The servers scenario 6 runs against: the two-node ones fail over; the
/// single-process peers (no clustering) are started again in place.
pub(crate) const SERVERS: &[ServerKind] = &[
    ServerKind::WeftCluster,
    ServerKind::HocuspocusRedis,
    ServerKind::Weft,
    ServerKind::YWebsocket,
    ServerKind::Hocuspocus,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&sorted[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn gauge_is_read_from_the_exposition() {
        let text = "# HELP weft_documents_loaded Documents held in memory\n\
                    # TYPE weft_documents_loaded gauge\n\
                    weft_documents_loaded_total 9\n\
                    weft_documents_loaded 3\n";
        assert_eq!(gauge_value(text, "weft_documents_loaded"), Some(3.0));
        assert_eq!(gauge_value(text, "weft_sessions"), None);
    }
}
