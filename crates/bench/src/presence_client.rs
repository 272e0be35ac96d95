//! One client of the presence scenario ([`crate::presence`]): it moves its
//! cursor once a second (an awareness change with the next clock), a few
//! clients also type, and every client records when it first holds each
//! other client's changes.
//!
//! A change counts as seen once the client holds that client's state at
//! least as new (its clock): a server may coalesce, so a frame carrying
//! clock 7 also delivers clock 6 if 6 never came. Each change's latency is
//! from its send to that frame's arrival. Awareness frames are read
//! without allocating (client id and clock only; the state's JSON is
//! skipped), so the driver keeps up with a million entries a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use weft_protocol::message::MSG_AWARENESS;
use weft_protocol::{AwarenessUpdate, AwarenessUpdateEntry, Message};
use yrs::StateVector;
use yrs::block::ClientID;
use yrs::encoding::read::{Cursor, Read};

use crate::client::{Client, read_stamps, stamp_count};
use crate::session::DidNotKeepUp;

/// Latencies are recorded in microseconds up to one minute.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Between two cursor moves of one client.
pub(crate) const CHANGE_PERIOD: Duration = Duration::from_secs(1);

/// What every client of one run shares.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) clients: usize,
    pub(crate) typists: usize,
    /// Awareness changes each client sends (clocks 1..=changes).
    pub(crate) changes: u32,
    /// Updates each typist sends.
    pub(crate) stamps: u32,
    pub(crate) stamp_period: Duration,
    /// When the first change is due (phases spread the rest over a second).
    pub(crate) start: Instant,
    /// When a client that still lacks a final state or an update fails.
    pub(crate) deadline: Instant,
    /// `sent_at[client][clock]`: when that change was sent (driver clock,
    /// nanoseconds), 0 until it is.
    pub(crate) sent_at: Vec<Box<[AtomicU64]>>,
    /// Clients holding everything.
    pub(crate) complete: AtomicUsize,
    /// Set once every client holds everything: they may stop reading.
    pub(crate) all_complete: watch::Sender<bool>,
}

impl Run {
    /// The awareness client id of client `index` (never 0).
    fn client_id(index: usize) -> u64 {
        index as u64 + 1
    }

    fn change_due(&self, index: usize, clock: u32) -> Instant {
        let phase = CHANGE_PERIOD.mul_f64(index as f64 / self.clients as f64);
        self.start + phase + CHANGE_PERIOD * clock.saturating_sub(1)
    }

    fn stamp_due(&self, typist: usize, seq: u32) -> Instant {
        let phase = self
            .stamp_period
            .mul_f64(typist as f64 / self.typists.max(1) as f64);
        self.start + phase + self.stamp_period * seq
    }
}

/// What one client measured.
#[derive(Debug)]
pub(crate) struct Observed {
    /// Send to seen, per (other client, change), microseconds.
    pub(crate) presence_us: Histogram<u64>,
    /// Send to applied, per (typist's update, other client), microseconds.
    pub(crate) update_us: Histogram<u64>,
    /// The client's document at the end.
    pub(crate) state_vector: StateVector,
    pub(crate) client: Client,
}

/// What a client has seen of the others.
struct Seen {
    /// Newest clock seen per client index.
    clocks: Vec<u32>,
    /// Clients whose final change was seen.
    final_states: usize,
    /// Stamps applied per typist.
    stamps: Vec<u32>,
    presence_us: Histogram<u64>,
    update_us: Histogram<u64>,
}

/// Drives client `index` for the whole run.
pub(crate) async fn participate(
    mut client: Client,
    index: usize,
    run: Arc<Run>,
) -> anyhow::Result<Observed> {
    let mut seen = Seen {
        clocks: vec![0; run.clients],
        final_states: 0,
        stamps: vec![0; run.typists],
        presence_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")?,
        update_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")?,
    };
    let typist = index < run.typists;
    let mut clock = 0_u32;
    let mut seq = 0_u32;
    let mut all_complete = run.all_complete.subscribe();
    let mut complete = false;
    loop {
        if !complete && holds_everything(&run, index, &seen, clock, seq, &client) {
            complete = true;
            if run.complete.fetch_add(1, Ordering::AcqRel) + 1 == run.clients {
                run.all_complete.send_replace(true);
            }
        }
        if complete && *all_complete.borrow() {
            break;
        }
        tokio::select! {
            frame = client.next_frame() => {
                let frame = frame.map_err(|error| DidNotKeepUp(format!("client {index}: {error:#}")))?;
                receive(&mut client, &frame, index, &run, &mut seen).await?;
            }
            () = sleep_until(run.change_due(index, clock + 1)), if clock < run.changes => {
                clock += 1;
                run.sent_at[index][clock as usize].store(crate::clock::nanos(), Ordering::Release);
                client.send_yjs(&cursor_frame(index, clock)).await?;
            }
            () = sleep_until(run.stamp_due(index, seq)), if typist && seq < run.stamps => {
                client.send_stamp(index, u64::from(seq)).await?;
                seq += 1;
            }
            _ = all_complete.changed(), if complete => {}
            () = sleep_until(run.deadline) => {
                if complete {
                    break;
                }
                let updates: u32 = seen.stamps.iter().sum();
                return Err(DidNotKeepUp(format!(
                    "client {index} held {} of {} final states and {updates} of {} updates by its deadline",
                    seen.final_states,
                    run.clients - 1,
                    run.stamps as usize * run.typists,
                ))
                .into());
            }
        }
    }
    let state_vector = client.state_vector();
    Ok(Observed {
        presence_us: seen.presence_us,
        update_us: seen.update_us,
        state_vector,
        client,
    })
}

/// Whether client `index` sent everything and holds every other client's
/// final state and every update.
fn holds_everything(
    run: &Run,
    index: usize,
    seen: &Seen,
    clock: u32,
    seq: u32,
    client: &Client,
) -> bool {
    let typist = index < run.typists;
    clock == run.changes
        && (!typist || seq == run.stamps)
        && seen.final_states == run.clients - 1
        && (0..run.typists).all(|writer| {
            if writer == index {
                stamp_count(&client.doc, writer) == run.stamps
            } else {
                seen.stamps[writer] == run.stamps
            }
        })
}

/// Handles one frame: awareness is read for clocks, anything else goes to
/// the client's y-sync handling; a new update's stamps are timed.
async fn receive(
    client: &mut Client,
    frame: &[u8],
    index: usize,
    run: &Run,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let now = crate::clock::nanos();
    let Some(message) = client.yjs_message(frame)? else {
        return Ok(());
    };
    let mut latency = |subject: usize, clock: u32| {
        if subject >= run.clients || subject == index {
            return;
        }
        let last = seen.clocks[subject];
        if clock <= last {
            return;
        }
        let newest = clock.min(run.changes);
        for change in last + 1..=newest {
            let sent = run.sent_at[subject][change as usize].load(Ordering::Acquire);
            if sent != 0 {
                let micros = now.saturating_sub(sent) / 1_000;
                seen.presence_us.saturating_record(micros.max(1));
            }
        }
        seen.clocks[subject] = newest;
        if newest == run.changes && last < run.changes {
            seen.final_states += 1;
        }
    };
    if awareness_clocks(&message, &mut latency)? {
        return Ok(());
    }
    if client.handle_frame(frame).await? != Some(false) {
        return Ok(());
    }
    for writer in 0..run.typists {
        if writer == index {
            continue;
        }
        let from = seen.stamps[writer];
        for (seq, nanos) in read_stamps(&client.doc, writer, from) {
            if seq != u64::from(seen.stamps[writer]) {
                bail!(
                    "client {index}: typist {writer}'s update {seq} arrived where {} was due",
                    seen.stamps[writer]
                );
            }
            seen.stamps[writer] += 1;
            let micros = crate::clock::nanos().saturating_sub(nanos) / 1_000;
            seen.update_us.saturating_record(micros.max(1));
        }
    }
    Ok(())
}

/// Calls `visit(client index, clock)` for each entry of an awareness
/// message; `false` if `message` is not one.
fn awareness_clocks(message: &[u8], visit: &mut impl FnMut(usize, u32)) -> anyhow::Result<bool> {
    let mut cursor = Cursor::new(message);
    let tag: u32 = cursor.read_var().context("read message type")?;
    if tag != MSG_AWARENESS {
        return Ok(false);
    }
    let update = cursor.read_buf().context("read awareness update")?;
    let mut entries = Cursor::new(update);
    let count: u32 = entries.read_var().context("read entry count")?;
    for _ in 0..count {
        let client_id: u64 = entries.read_var().context("read client id")?;
        let clock: u32 = entries.read_var().context("read clock")?;
        let _state: &str = entries.read_string().context("read state")?;
        if let Some(subject) = client_id
            .checked_sub(1)
            .and_then(|subject| usize::try_from(subject).ok())
        {
            visit(subject, clock);
        }
    }
    Ok(true)
}

/// Client `index`'s awareness change `clock`: a cursor, as y-prosemirror
/// and y-codemirror publish it.
fn cursor_frame(index: usize, clock: u32) -> Vec<u8> {
    let anchor = clock * 7 % 1_000;
    let state = format!(
        r##"{{"user":{{"name":"user {index}","color":"#{:06x}"}},"cursor":{{"anchor":{anchor},"head":{}}}}}"##,
        index * 2_654_435 % 0x100_0000,
        anchor + 3
    );
    let update = AwarenessUpdate {
        clients: [(
            ClientID::new(Run::client_id(index)),
            AwarenessUpdateEntry {
                clock,
                json: Arc::from(state),
            },
        )]
        .into(),
    };
    Message::Awareness(update).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awareness_clocks_reads_what_the_codec_writes() {
        let frame = cursor_frame(41, 3);
        let mut visited = Vec::new();
        let is_awareness = awareness_clocks(&frame, &mut |subject, clock| {
            visited.push((subject, clock));
        })
        .unwrap();
        assert!(is_awareness);
        assert_eq!(visited, vec![(41, 3)]);
        let Ok(Message::Awareness(decoded)) = weft_protocol::decode_frame(&frame) else {
            panic!("a valid awareness frame");
        };
        let json = &decoded.clients[&ClientID::new(42)].json;
        assert!(
            json.contains(r#""cursor":{"anchor":21,"head":24}"#),
            "{json}"
        );
        let sync = weft_protocol::SyncMessage::Update(vec![0, 0]).encode_frame();
        assert!(!awareness_clocks(&sync, &mut |_, _| panic!("not awareness")).unwrap());
    }
}
