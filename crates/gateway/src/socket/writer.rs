//! The writing half of a socket: drains the outbox to the socket,
//! batch-flushing the frames already queued, pings on a timer, and writes
//! the close frame the reader chose.
//!
//! The writer takes a frame's bytes off the socket's [`QueuedBytes`] once
//! the frame has left for the kernel, not when it leaves the outbox: the
//! WebSocket sink copies a frame into its write buffer and holds it there
//! while the socket is blocked, so that copy counts against
//! `--send-queue-bytes` too. The sink accepts the next frame only once the
//! previous one is written out, so a frame is known written when the next
//! one is fed, or when the sink is flushed.
//!
//! A frame larger than [`FRAGMENT_BYTES`] goes as RFC 6455 fragments: a
//! Binary frame without FIN, Continue frames, the last with FIN. Each
//! fragment is a slice of the frame's shared `Bytes` (no copy), and the sink
//! takes the next only once the one before is written, so the socket's write
//! buffer holds about one fragment whatever the message's size. A document's
//! full state (tens of MiB, shared by every session joining it) is then
//! copied a fragment at a time per session instead of whole.

use bytes::Bytes;
use futures::{Sink, SinkExt};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use weft_sync::{FrameReceiver, Outbound, QueuedBytes};

use crate::close::CloseReason;
use crate::config::{FRAGMENT_BYTES, GatewayConfig};
use crate::metrics::Metrics;

/// Writes `greeting`, then the outbox, until the reader sends the close
/// (`None`: the peer closed; only the closing handshake is completed) or
/// the socket fails.
pub(super) async fn write_loop<S>(
    mut sink: S,
    mut outbox: FrameReceiver,
    queued: &QueuedBytes,
    greeting: Vec<Outbound>,
    mut close: oneshot::Receiver<Option<CloseReason>>,
    config: &GatewayConfig,
    metrics: &Metrics,
) where
    S: Sink<WsMessage> + Unpin,
{
    for frame in greeting {
        count_sent(metrics, &frame);
        if feed_frame(&mut sink, frame).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(
        Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            closing = &mut close => {
                if let Ok(Some(reason)) = closing {
                    let frame = CloseFrame { code: reason.code().into(), reason: reason.reason().into() };
                    let _peer_may_be_gone = sink.send(WsMessage::Close(Some(frame))).await;
                } else {
                    let _peer_may_be_gone = sink.close().await;
                }
                return;
            }
            frame = outbox.recv() => {
                let Some(frame) = frame else { return };
                if write_batch(&mut sink, &mut outbox, queued, frame, metrics).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes `first` and every frame already queued behind it, then flushes
/// once: under fan-out a slow flush per frame would be the bottleneck.
/// Each frame's bytes are taken off `queued` once it is written out.
async fn write_batch<S>(
    sink: &mut S,
    outbox: &mut FrameReceiver,
    queued: &QueuedBytes,
    first: Outbound,
    metrics: &Metrics,
) -> Result<(), S::Error>
where
    S: Sink<WsMessage> + Unpin,
{
    count_sent(metrics, &first);
    let mut unwritten = first.len();
    feed_frame(sink, first).await?;
    while let Ok(frame) = outbox.try_recv() {
        count_sent(metrics, &frame);
        let len = frame.len();
        feed_frame(sink, frame).await?;
        // The sink took this frame only once the one before was written.
        queued.remove(unwritten);
        unwritten = len;
    }
    sink.flush().await?;
    queued.remove(unwritten);
    Ok(())
}

/// Feeds one binary message: whole up to [`FRAGMENT_BYTES`], as zero-copy
/// fragments of that size above it (see the module's documentation).
async fn feed_frame<S>(sink: &mut S, frame: Outbound) -> Result<(), S::Error>
where
    S: Sink<WsMessage> + Unpin,
{
    if frame.len() <= FRAGMENT_BYTES {
        return sink.feed(WsMessage::Binary(frame)).await;
    }
    let mut opcode = OpCode::Data(Data::Binary);
    let mut start = 0;
    // At most `frame.len() / FRAGMENT_BYTES + 1` rounds.
    while start < frame.len() {
        let end = frame.len().min(start.saturating_add(FRAGMENT_BYTES));
        let last = end == frame.len();
        let fragment = Frame::message(frame.slice(start..end), opcode, last);
        sink.feed(WsMessage::Frame(fragment)).await?;
        opcode = OpCode::Data(Data::Continue);
        start = end;
    }
    Ok(())
}

fn count_sent(metrics: &Metrics, frame: &Outbound) {
    metrics.messages_sent.inc();
    metrics.bytes_sent.inc_by(frame.len() as u64);
}
