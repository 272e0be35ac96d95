//! Scenario 7: a join storm. Many clients join one large document at
//! once, on a warm server (the document is loaded: a client stays
//! connected) and, for Weft, on a cold one (the node was restarted after the
//! document was written, so the storm's first joiners load it from the
//! store).
//!
//! The shape, for `clients` clients and a document of about `doc_bytes`:
//!
//! 1. the driver builds the document in its own yrs `Doc` (a map of
//!    sections, each a text written paragraph by paragraph, see
//!    [`build_document`]) in transactions of about [`CHUNK_BYTES`](crate::joinstorm_doc::CHUNK_BYTES), and an uploader sends each transaction's update
//!    over the ordinary client path; a watcher client, connected before the
//!    upload, waits until the server broadcast all of it (its state vector
//!    equals the driver's) and stays connected: the document is warm;
//! 2. the storm: every client is spawned first and waits on one signal,
//!    then connects, sends a SyncStep1 with an empty state vector and waits
//!    for the server's SyncStep2. Its join time runs from the signal to the
//!    SyncStep2 received in full;
//! 3. the checks: every client hashes its SyncStep2 payload; the payloads
//!    of a sample of clients ([`CONTENT_SAMPLE`]) are applied to a fresh
//!    yrs `Doc` each and compared with the driver's (every section), and
//!    every other payload must hash the same as the first of them (the
//!    reference: one server answers one version with the same bytes);
//! 4. Weft only: the clients close, the node is restarted on its store, and
//!    step 2 and 3 run again on the cold node.
//!
//! Memory is the server's RSS sampled every 20 ms during each storm, once
//! every client synced (still connected), and
//! for the cold storm also the restarted process's high-water mark (it
//! started just before, so its peak is the storm's).

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use weft_protocol::{Message, SyncMessage, decode_frame};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::client::{Client, Dialect, Endpoint, strip_hocus};
use crate::joinstorm_doc::{Content, build_document, content_of};
use crate::processes::Programs;
use crate::scenarios::Metrics;
use crate::servers::{RunningServer, ServerKind};
use crate::session;
use crate::storm::{percentile, sample_peak_rss};

/// The servers the join storm runs against (each alone: the storm is about
/// one node).
pub(crate) const SERVERS: &[ServerKind] = &[
    ServerKind::Weft,
    ServerKind::YWebsocket,
    ServerKind::Hocuspocus,
];

/// Clients whose payload is applied and compared with the driver's content.
const CONTENT_SAMPLE: usize = 5;
/// Largest frame and message a storm client accepts (tungstenite's default
/// frame limit, 16 MiB, is below the document's size).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// How long the whole upload may take until the watcher holds everything.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one client may take from the signal to its SyncStep2.
const JOIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Read buffer of a storm client (it grows for the large frame).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Updates of about [`CHUNK_BYTES`](crate::joinstorm_doc::CHUNK_BYTES) the uploader may send beyond what the
/// watcher holds (2 MiB, half the server's default `--send-queue-bytes`).
const UPLOAD_WINDOW: usize = 4;

/// Whether `state` holds everything up to `mark`.
fn covers(state: &StateVector, mark: &StateVector) -> bool {
    mark.iter()
        .all(|(client, clock)| state.get(client) >= *clock)
}

/// Uploads the document through an uploader client and returns the
/// watcher, which holds all of it (the server has applied and broadcast
/// every update) and keeps the document loaded.
async fn upload(
    endpoint: &Endpoint,
    name: &str,
    doc: &Doc,
    updates: &[Vec<u8>],
) -> anyhow::Result<Client> {
    let mut watcher = Client::connect(
        endpoint,
        name,
        Some(session::source_address(0)),
        UPLOAD_TIMEOUT,
    )
    .await?;
    let mut uploader = Client::connect(
        endpoint,
        name,
        Some(session::source_address(1)),
        UPLOAD_TIMEOUT,
    )
    .await?;
    let expected = doc.transact().state_vector();
    // The state each update brings the document to, so the uploader stays
    // at most UPLOAD_WINDOW updates ahead of the watcher: a watcher that read
    // only afterwards, or fell further behind, would have more than the
    // server's `--send-queue-bytes` (4 MiB) queued and be closed with 1013.
    let scratch = Doc::new();
    let mut marks = Vec::with_capacity(updates.len());
    for update in updates {
        let mut txn = scratch.transact_mut();
        txn.apply_update(Update::decode_v1(update).context("decode an upload update")?)
            .context("apply an upload update")?;
        marks.push(txn.state_vector());
    }
    tokio::time::timeout(UPLOAD_TIMEOUT, async {
        for (index, update) in updates.iter().enumerate() {
            let behind = index
                .checked_sub(UPLOAD_WINDOW)
                .and_then(|mark| marks.get(mark));
            if let Some(mark) = behind {
                while !covers(&watcher.state_vector(), mark) {
                    let frame = watcher.next_frame().await?;
                    watcher.handle_frame(&frame).await?;
                }
            }
            let frame = SyncMessage::Update(update.clone()).encode_frame();
            uploader.send_yjs(&frame).await?;
        }
        while watcher.state_vector() != expected {
            let frame = watcher.next_frame().await?;
            watcher.handle_frame(&frame).await?;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| {
        format!("the watcher did not receive the whole document within {UPLOAD_TIMEOUT:?}")
    })??;
    uploader.close().await;
    ensure!(
        content_of(&watcher.doc) == content_of(doc),
        "the watcher's document differs from the driver's"
    );
    Ok(watcher)
}

/// One client's join.
struct Joined {
    elapsed: Duration,
    hash: u64,
    bytes: usize,
    /// `Some(equal)` if the payload was applied and compared.
    content_equal: Option<bool>,
    /// Held open until the storm ends, as joined editors stay.
    client: Client,
}

fn hash_of(payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

fn applies_to(payload: &[u8], expected: &Content) -> anyhow::Result<bool> {
    let doc = Doc::new();
    let update = Update::decode_v1(payload).context("decode SyncStep2 payload")?;
    doc.transact_mut()
        .apply_update(update)
        .context("apply SyncStep2 payload")?;
    Ok(content_of(&doc) == *expected)
}

/// The SyncStep2 payload in a server frame, if it is one.
fn sync_step2_payload(client: &Client, frame: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let yjs = match client.dialect {
        Dialect::YWebsocket => std::borrow::Cow::Borrowed(frame),
        Dialect::Hocuspocus => match strip_hocus(frame)? {
            Some(yjs) => yjs,
            None => return Ok(None),
        },
    };
    match decode_frame(&yjs).context("decode frame")? {
        Message::Sync(SyncMessage::SyncStep2(update)) => Ok(Some(update)),
        _ => Ok(None),
    }
}

/// Joins from `source` once `start` fires; see the module docs.
async fn join(
    endpoint: Endpoint,
    name: Arc<str>,
    index: usize,
    mut start: watch::Receiver<bool>,
    expected: Arc<Content>,
) -> anyhow::Result<Joined> {
    start
        .wait_for(|go| *go)
        .await
        .context("the storm never started")?;
    let started = Instant::now();
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let source = Some(session::source_address(2 + index));
    let payload = tokio::time::timeout(JOIN_TIMEOUT, async {
        let mut client = Client::open(&endpoint, &name, source, config, Doc::new(), None).await?;
        let step1 = SyncMessage::SyncStep1(StateVector::default()).encode_frame();
        client.send_yjs(&step1).await?;
        loop {
            let frame = client.next_message().await?;
            if let Some(payload) = sync_step2_payload(&client, &frame)? {
                return anyhow::Ok((client, payload));
            }
        }
    })
    .await
    .with_context(|| format!("client {index} not synced within {JOIN_TIMEOUT:?}"))?;
    let (client, payload) = payload?;
    let elapsed = started.elapsed();
    let content_equal = if index < CONTENT_SAMPLE {
        Some(applies_to(&payload, &expected)?)
    } else {
        None
    };
    Ok(Joined {
        elapsed,
        hash: hash_of(&payload),
        bytes: payload.len(),
        content_equal,
        client,
    })
}

/// What one storm measured.
struct Round {
    times: Vec<Duration>,
    rss_peak_kib: u64,
    /// Once every client synced, before they close.
    rss_synced_kib: u64,
    payload_bytes: usize,
    /// Payloads equal to client 0's, byte for byte (by hash).
    hash_matched: usize,
    /// Payloads applied and compared with the driver's content.
    content_checked: usize,
}

/// Runs one storm of `clients` joins at `endpoint` and checks it.
async fn storm_round(
    endpoint: &Endpoint,
    pid: u32,
    name: &str,
    clients: usize,
    expected: &Arc<Content>,
) -> anyhow::Result<Round> {
    let name: Arc<str> = Arc::from(name);
    let (start_tx, start_rx) = watch::channel(false);
    let mut joins = JoinSet::new();
    for index in 0..clients {
        joins.spawn(join(
            endpoint.clone(),
            Arc::clone(&name),
            index,
            start_rx.clone(),
            Arc::clone(expected),
        ));
    }
    let (sampler_stop, sampler_stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_peak_rss(pid, sampler_stop_rx));
    start_tx
        .send(true)
        .context("every client ended before the storm")?;
    let mut joined = Vec::with_capacity(clients);
    while let Some(result) = joins.join_next().await {
        joined.push(result.context("join task")??);
    }
    let _sampler_gone = sampler_stop.send(true);
    let rss_peak_kib = sampler.await.context("RSS sampler")?;
    // Every client synced and still connected: what the server keeps.
    let rss_synced_kib = crate::procstat::rss_kib(pid)?;

    joined.sort_by_key(|one| one.content_equal.is_none());
    let reference = joined.first().context("no client joined")?;
    ensure!(
        reference.content_equal == Some(true),
        "a sampled client's document differs from the driver's"
    );
    let reference_hash = reference.hash;
    let payload_bytes = reference.bytes;
    let mut hash_matched = 0;
    let mut content_checked = 0;
    let mut times = Vec::with_capacity(clients);
    for one in joined {
        times.push(one.elapsed);
        if one.hash == reference_hash {
            hash_matched += 1;
        }
        if let Some(equal) = one.content_equal {
            ensure!(
                equal,
                "a sampled client's document differs from the driver's"
            );
            content_checked += 1;
        } else if one.hash != reference_hash {
            bail!(
                "a client's SyncStep2 ({} bytes) differs from the reference ({payload_bytes} bytes)",
                one.bytes
            );
        }
        one.client.close().await;
    }
    times.sort();
    Ok(Round {
        times,
        rss_peak_kib,
        rss_synced_kib,
        payload_bytes,
        hash_matched,
        content_checked,
    })
}

fn record_round(metrics: &mut Metrics, prefix: &str, round: &Round) {
    let ms = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    metrics.insert(
        format!("{prefix}_p50_ms"),
        ms(percentile(&round.times, 0.50)),
    );
    metrics.insert(
        format!("{prefix}_p99_ms"),
        ms(percentile(&round.times, 0.99)),
    );
    metrics.insert(
        format!("{prefix}_max_ms"),
        ms(percentile(&round.times, 1.0)),
    );
    metrics.insert(
        format!("{prefix}_rss_peak_mib"),
        round.rss_peak_kib as f64 / 1024.0,
    );
    metrics.insert(
        format!("{prefix}_rss_synced_mib"),
        round.rss_synced_kib as f64 / 1024.0,
    );
    metrics.insert(format!("{prefix}_hash_matched"), round.hash_matched as f64);
    metrics.insert(
        format!("{prefix}_content_checked"),
        round.content_checked as f64,
    );
    metrics.insert(
        format!("{prefix}_payload_mib"),
        round.payload_bytes as f64 / (1024.0 * 1024.0),
    );
}

/// Scenario 7 against `server`: `clients` joins of a document of about
/// `doc_bytes`, warm, then (Weft) cold.
pub(crate) async fn join_storm(
    server: &mut RunningServer,
    programs: &Programs,
    clients: usize,
    doc_bytes: usize,
) -> anyhow::Result<Metrics> {
    ensure!(clients > 0, "no clients");
    let name = format!("joinstorm-{}", crate::clock::nanos());
    let built = Instant::now();
    let (doc, updates) = build_document(doc_bytes);
    let build_s = built.elapsed().as_secs_f64();
    let expected = Arc::new(content_of(&doc));
    let state_bytes = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default())
        .len();

    let uploaded = Instant::now();
    let watcher = upload(&server.endpoints[0], &name, &doc, &updates)
        .await
        .context("upload")?;
    let upload_s = uploaded.elapsed().as_secs_f64();
    let rss_loaded_kib = crate::procstat::rss_kib(server.server_pids[0])?;

    let mut metrics = Metrics::new();
    metrics.insert("clients".into(), clients as f64);
    metrics.insert("doc_mib".into(), state_bytes as f64 / (1024.0 * 1024.0));
    metrics.insert("updates".into(), updates.len() as f64);
    metrics.insert("build_s".into(), build_s);
    metrics.insert("upload_s".into(), upload_s);
    metrics.insert("rss_loaded_mib".into(), rss_loaded_kib as f64 / 1024.0);

    let warm = storm_round(
        &server.endpoints[0],
        server.server_pids[0],
        &name,
        clients,
        &expected,
    )
    .await?;
    record_round(&mut metrics, "warm", &warm);
    watcher.close().await;
    // Said now: a cold storm that fails the run would take these along.
    eprintln!("joinstorm  {:<28} warm: {metrics:?}", server.kind().label());

    if server.kind().is_weft() {
        server.restart_weft(programs).context("restart weft")?;
        let pid = server.server_pids[0];
        let cold = storm_round(&server.endpoints[0], pid, &name, clients, &expected).await?;
        record_round(&mut metrics, "cold", &cold);
        let hwm_kib = crate::procstat::peak_rss_kib(pid)?;
        metrics.insert("cold_rss_hwm_mib".into(), hwm_kib as f64 / 1024.0);
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_checked_against_the_content() {
        let (doc, updates) = build_document(2 * crate::joinstorm_doc::CHUNK_BYTES);
        let content = content_of(&doc);
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(applies_to(&state, &content).expect("apply"));
        assert!(!applies_to(&updates[0], &content).expect("apply"));
        assert_eq!(hash_of(&state), hash_of(&state.clone()));
        assert_ne!(hash_of(&state), hash_of(&updates[0]));
    }
}
