//! Scenario "stalled": readers of one busy document that stop reading.
//!
//! `readers` clients join one document, sync, and never read their socket
//! again (each with a small kernel receive buffer, so the kernel holds
//! little on their behalf and the server's own queue fills). One writer
//! sends updates of [`UPDATE_BYTES`] at [`UPDATE_RATE`] per second for the
//! run's length, and one live reader reads everything: it must receive every
//! update, stalled readers or not.
//!
//! The server's RSS is sampled through the run; its peak growth over the RSS
//! after the joins, divided by the stalled readers, is what each stalled
//! reader cost. Then every stalled reader reads what is left for it: a close
//! frame (and its code), the connection ending without one (the server cut
//! it off and dropped it before the client read that far), or data still
//! flowing (the server still holds the reader). For Weft, the node's own
//! count of send-queue overflows (`weft_send_queue_overflows_total`) says
//! how many it cut off at `--send-queue-bytes`.

use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_protocol::SyncMessage;
use yrs::{Text, Transact};

use crate::client::Client;
use crate::scenarios::Metrics;
use crate::servers::RunningServer;
use crate::session::{self, source_address};

/// Bytes of text each update inserts: the size issue 17 measured stalled
/// readers with.
pub(crate) const UPDATE_BYTES: usize = 60 * 1024;
/// Updates per second the writer sends: 2.4 MB/s to every reader.
pub(crate) const UPDATE_RATE: f64 = 40.0;
/// The run ends early once the server's RSS passes this (a server that
/// holds everything for every stalled reader must not take the machine
/// down); the report then says so.
const RSS_CEILING_KIB: u64 = 4 * 1024 * 1024;
/// A stalled reader's kernel receive buffer.
const STALLED_RECEIVE_BUFFER: u32 = 4 * 1024;
/// Time one client gets to connect and sync.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server's RSS is read during the run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Time one update may take to be written to the server.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the live reader gets, after the last send, to receive the rest.
const LIVE_DRAIN: Duration = Duration::from_secs(30);
/// How long a stalled reader reads what is left before it counts as still
/// held open (data still flowing, or nothing at all). What a cut-off reader
/// finds first is what the kernel buffered for it (megabytes of the server's
/// send buffer, read through its small window on a busy machine), so this
/// is generous.
pub(crate) const STALLED_DRAIN: Duration = Duration::from_secs(10);
/// Pause after the joins before the baseline RSS is read: a measurement
/// choice (every client is synced already), as in the idle scenario.
const SETTLE: Duration = Duration::from_secs(1);

/// How a stalled reader's connection ended, seen from the client.
enum Ending {
    /// A close frame with this code.
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
    /// Still open when the drain ended.
    Open,
}

/// Runs the scenario with `readers` stalled readers for `seconds`.
pub(crate) async fn stalled(
    server: &RunningServer,
    readers: usize,
    seconds: f64,
    weft: bool,
) -> anyhow::Result<Metrics> {
    ensure!(
        server.server_pids.len() == 1,
        "stalled readers are measured on one node"
    );
    let pid = server.server_pids[0];
    let endpoint = &server.endpoints[0];
    let doc = format!("stalled-{}", crate::clock::nanos());
    let mut writer =
        Client::connect(endpoint, &doc, Some(source_address(0)), CONNECT_TIMEOUT).await?;
    let live = Client::connect(endpoint, &doc, Some(source_address(1)), CONNECT_TIMEOUT).await?;
    let stalled =
        session::connect_many_with_window(endpoint, &doc, readers, 2, Some(STALLED_RECEIVE_BUFFER))
            .await?;
    tokio::time::sleep(SETTLE).await;
    let rss_before = crate::procstat::rss_kib(pid)?;
    let overflows_before = overflows(server, weft)?;

    let updates = (seconds * UPDATE_RATE).round().max(1.0) as usize;
    let (sent_count, sent_watch) = tokio::sync::watch::channel(0);
    let mut live_reader = tokio::spawn(read_updates(live, sent_watch));
    let mut peak = rss_before;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / UPDATE_RATE));
    let mut sampler = tokio::time::interval(RSS_SAMPLE_EVERY);
    let mut sent = 0;
    while sent < updates {
        tokio::select! {
            _ = ticker.tick() => {
                tokio::time::timeout(SEND_TIMEOUT, send_padding(&mut writer, sent))
                    .await
                    .context("the server stopped reading the writer's updates")??;
                sent += 1;
                sent_count.send_replace(sent);
            }
            _ = sampler.tick() => {
                peak = peak.max(crate::procstat::rss_kib(pid)?);
                if peak > RSS_CEILING_KIB {
                    break;
                }
            }
            // The writer reads too (a server may echo its updates back).
            frame = writer.socket.next() => {
                ensure!(matches!(frame, Some(Ok(_))), "the writer's connection ended");
            }
        }
    }
    drop(sent_count);
    let capped = sent < updates;
    let updates = sent;
    let received = tokio::time::timeout(LIVE_DRAIN, async {
        loop {
            tokio::select! {
                received = &mut live_reader => return received,
                _ = sampler.tick() => {
                    if let Ok(rss) = crate::procstat::rss_kib(pid) {
                        peak = peak.max(rss);
                    }
                }
            }
        }
    })
    .await
    .context("the live reader did not receive every update in time")?
    .context("live reader task")??;
    ensure!(
        received == updates,
        "the live reader received {received} of {updates} updates"
    );
    let overflows_after = overflows(server, weft)?;
    writer.close().await;

    let endings = futures::future::join_all(stalled.into_iter().map(drain)).await;
    let count =
        |wanted: fn(&Ending) -> bool| endings.iter().filter(|ending| wanted(ending)).count() as f64;
    let mut metrics = Metrics::new();
    metrics.insert("stalled_readers".into(), readers as f64);
    metrics.insert("updates".into(), updates as f64);
    metrics.insert("rss_capped".into(), if capped { 1.0 } else { 0.0 });
    metrics.insert(
        "mib_sent_per_reader".into(),
        (updates * UPDATE_BYTES) as f64 / (1024.0 * 1024.0),
    );
    metrics.insert("rss_before_mib".into(), rss_before as f64 / 1024.0);
    metrics.insert("rss_peak_mib".into(), peak as f64 / 1024.0);
    metrics.insert(
        "kib_per_stalled_reader".into(),
        peak.saturating_sub(rss_before) as f64 / readers.max(1) as f64,
    );
    metrics.insert(
        "closes_1013_seen".into(),
        count(|e| matches!(e, Ending::Closed(1013))),
    );
    metrics.insert(
        "closes_other_seen".into(),
        count(|e| matches!(e, Ending::Closed(code) if *code != 1013)),
    );
    metrics.insert(
        "dropped_seen".into(),
        count(|e| matches!(e, Ending::Dropped)),
    );
    metrics.insert("still_open".into(), count(|e| matches!(e, Ending::Open)));
    if weft {
        metrics.insert(
            "server_overflows".into(),
            overflows_after - overflows_before,
        );
    }
    Ok(metrics)
}

/// Sends update `seq`: [`UPDATE_BYTES`] of text at the start of root "pad".
async fn send_padding(writer: &mut Client, seq: usize) -> anyhow::Result<()> {
    let update = {
        let text = writer.doc.get_or_insert_text("pad");
        let mut txn = writer.doc.transact_mut();
        let letter = char::from(b'a' + u8::try_from(seq % 26).unwrap_or(0));
        text.insert(&mut txn, 0, &letter.to_string().repeat(UPDATE_BYTES));
        txn.encode_update_v1()
    };
    writer
        .send_yjs(&SyncMessage::Update(update).encode_frame())
        .await
}

/// Reads until every update sent is applied (the writer's count is final
/// once its sender is dropped); returns how many were.
async fn read_updates(
    mut live: Client,
    mut sent: tokio::sync::watch::Receiver<usize>,
) -> anyhow::Result<usize> {
    let text = live.doc.get_or_insert_text("pad");
    let mut sending = true;
    let mut applied = 0;
    loop {
        if !sending && applied >= *sent.borrow() {
            return Ok(applied);
        }
        tokio::select! {
            changed = sent.changed(), if sending => sending = changed.is_ok(),
            frame = live.next_frame() => {
                live.handle_frame(&frame?).await?;
                applied = text.len(&live.doc.transact()) as usize / UPDATE_BYTES;
            }
        }
    }
}

/// Reads what is left for a stalled reader, for at most [`STALLED_DRAIN`].
async fn drain(mut reader: Client) -> Ending {
    let ending = tokio::time::timeout(STALLED_DRAIN, async {
        loop {
            match reader.socket.next().await {
                Some(Ok(WsMessage::Close(frame))) => {
                    return Ending::Closed(frame.map_or(1005, |frame| u16::from(frame.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ending::Dropped,
            }
        }
    })
    .await;
    ending.unwrap_or(Ending::Open)
}

/// Weft's count of send-queue overflows (0 for a peer).
fn overflows(server: &RunningServer, weft: bool) -> anyhow::Result<f64> {
    if !weft {
        return Ok(0.0);
    }
    let page = crate::prom::scrape(server.endpoints[0].addr)?;
    Ok(crate::prom::value(&page, "weft_send_queue_overflows_total"))
}
