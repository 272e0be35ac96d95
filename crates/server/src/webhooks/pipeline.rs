//! One target's loop: read the log after the cursor, debounce, send each
//! document's events one at a time (at most [`MAX_IN_FLIGHT`] documents at
//! once), store the delivered position: the earliest change not yet
//! delivered or dead-lettered, minus one. So the stored position never
//! passes a change the target did not get, and a restart re-delivers what
//! was in flight (at least once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_sync::backoff::Pauses;
use weft_sync::changes::{ChangeLog, DeadLetter};
use weft_sync::history::History;
use weft_sync::{LogSeq, RootKind, read_roots};

use super::coalesce::{Batch, Coalescer, Timing};
use super::event::{Prepared, delivery_id, prepare};
use super::metrics::WebhookMetrics;
use super::sign::{DELIVERY_HEADER, SIGNATURE_HEADER, signature};

/// Documents whose events are in flight at once, per target.
pub(super) const MAX_IN_FLIGHT: usize = 16;
/// Changes read from the log per query.
const READ_PAGE: u32 = 500;
/// The reader stops while this many changes wait (memory bound)...
const MAX_HELD_CHANGES: usize = 20_000;
/// ... or this many bytes of updates.
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// The first retry's delay; each doubles up to [`MAX_RETRY_DELAY`]
/// (jittered: each pause is up to twice its delay).
pub(super) const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// See [`FIRST_RETRY_DELAY`].
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Store failures (reads, positions, dead letters) are retried from this...
const STORE_RETRY_FIRST: Duration = Duration::from_millis(200);
/// ... up to this.
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// A target and what its pipeline needs.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) url: String,
    pub(super) client: reqwest::Client,
    pub(super) secret: Arc<[u8]>,
    pub(super) timing: Timing,
    pub(super) retry_for: Duration,
    pub(super) log: Arc<dyn ChangeLog>,
    /// `--webhook-roots`, read through `history` at each event's end.
    pub(super) roots: Vec<(RootKind, String)>,
    pub(super) history: Option<Arc<dyn History>>,
    pub(super) metrics: Arc<WebhookMetrics>,
}

/// A replay: the pipeline moves its cursor back to `position` (events read
/// again get new delivery ids) and, if asked, says once its stored
/// delivered position is at or before `position`: from then on a crash
/// cannot lose the replay.
#[derive(Debug)]
pub(super) struct Rewind {
    pub(super) position: LogSeq,
    pub(super) stored: Option<oneshot::Sender<()>>,
}

/// How a delivery task ended.
enum Outcome {
    /// Delivered or dead-lettered: the document's next event may go.
    Settled,
    /// The node stops: neither, so the position must not pass it.
    Stopped,
}

/// Runs `target`'s pipeline until `stop`.
pub(super) async fn run(
    target: Arc<Target>,
    mut end: watch::Receiver<LogSeq>,
    mut replays: mpsc::Receiver<Rewind>,
    stop: CancellationToken,
) {
    let Some(mut cursor) = start_position(&target, &stop).await else {
        return;
    };
    info!(target = %target.url, position = cursor, "webhook pipeline started");
    let mut saved = cursor;
    let mut generation = 0_u64;
    let mut events = Coalescer::new(target.timing);
    let mut deliveries = JoinSet::new();
    let mut docs_in_flight = HashMap::new();
    let mut read_pauses = Pauses::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    let mut read_again_at: Option<Instant> = None;
    // Replays waiting to hear that the stored position is at or before
    // theirs (at most the replay queue's size: a replay's sender waits for
    // its answer before sending another).
    let mut unconfirmed: Vec<(LogSeq, oneshot::Sender<()>)> = Vec::new();
    loop {
        let log_end = *end.borrow_and_update();
        let (held_changes, held_bytes) = events.held();
        let may_read = read_again_at.is_none_or(|at| Instant::now() >= at);
        let mut read_full_page = false;
        if may_read
            && log_end > cursor
            && held_changes < MAX_HELD_CHANGES
            && held_bytes < MAX_HELD_BYTES
        {
            match target.log.changes_after(cursor, None, READ_PAGE).await {
                Ok(changes) => {
                    read_again_at = None;
                    read_pauses = Pauses::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
                    read_full_page = changes.len() >= READ_PAGE as usize;
                    let now = Instant::now();
                    for change in changes {
                        cursor = change.position;
                        events.push(change, now);
                    }
                }
                Err(error) => {
                    warn!(target = %target.url, error = %error, "webhooks: read the log");
                    read_again_at = Some(Instant::now() + read_pauses.next_pause());
                }
            }
        }
        let room = MAX_IN_FLIGHT.saturating_sub(events.in_flight());
        for batch in events.take_ready(Instant::now(), room) {
            let doc = batch.doc.clone();
            let handle = deliveries.spawn(deliver(target.clone(), batch, generation, stop.clone()));
            docs_in_flight.insert(handle.id(), doc);
        }
        let delivered = events
            .oldest_held()
            .map_or(cursor, |oldest| (oldest - 1).min(cursor));
        if delivered != saved {
            match target
                .log
                .save_delivered_position(&target.url, delivered)
                .await
            {
                Ok(()) => saved = delivered,
                Err(error) => {
                    warn!(target = %target.url, error = %error, "webhooks: store the delivered position");
                }
            }
        }
        confirm_rewinds(&mut unconfirmed, saved);
        if read_full_page {
            continue;
        }
        let wake_at = [events.next_deadline(), read_again_at]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            () = stop.cancelled() => break,
            changed = end.changed() => {
                if changed.is_err() {
                    // The feed stopped: the node is stopping.
                    break;
                }
            }
            Some(joined) = deliveries.join_next_with_id() => {
                let (id, outcome) = match joined {
                    Ok((id, outcome)) => (id, outcome),
                    // A delivery task does not panic; should one, its
                    // document is retried from the position on restart.
                    Err(error) => (error.id(), Outcome::Stopped),
                };
                if let (Some(doc), Outcome::Settled) = (docs_in_flight.remove(&id), outcome) {
                    events.done(&doc);
                }
            }
            () = sleep_until_or_forever(wake_at) => {}
            Some(rewind) = replays.recv() => {
                generation += 1;
                cursor = cursor.min(rewind.position);
                if let Some(stored) = rewind.stored {
                    unconfirmed.push((rewind.position, stored));
                }
                info!(target = %target.url, position = rewind.position, "webhooks: replay");
            }
        }
    }
    deliveries.abort_all();
}

/// Answers the replays whose position the stored one (`saved`) is at or
/// before, and forgets those whose asker stopped waiting (so the list stays
/// bounded while the store fails).
fn confirm_rewinds(unconfirmed: &mut Vec<(LogSeq, oneshot::Sender<()>)>, saved: LogSeq) {
    let mut index = 0;
    while index < unconfirmed.len() {
        if saved <= unconfirmed[index].0 || unconfirmed[index].1.is_closed() {
            let (_, stored) = unconfirmed.swap_remove(index);
            // The asker may have given up waiting; the rewind stands.
            let _gone = stored.send(());
        } else {
            index += 1;
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The stored position, else (a new target) the log's end now: a new
/// target gets changes from now on (`POST /api/webhooks/replay` sends
/// earlier ones). `None` if stopped first.
async fn start_position(target: &Target, stop: &CancellationToken) -> Option<LogSeq> {
    let mut pauses = Pauses::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    loop {
        let read = match target.log.delivered_position(&target.url).await {
            Ok(Some(position)) => Ok(position),
            Ok(None) => match target.log.log_end().await {
                Ok(end) => target
                    .log
                    .save_delivered_position(&target.url, end)
                    .await
                    .map(|()| end),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match read {
            Ok(position) => return Some(position),
            Err(error) => {
                warn!(target = %target.url, error = %error, "webhooks: read the delivered position");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(pauses.next_pause()) => {}
        }
    }
}

/// Sends one event until a 2xx, or dead-letters it after
/// `--webhook-retry-for`.
async fn deliver(
    target: Arc<Target>,
    batch: Batch,
    generation: u64,
    stop: CancellationToken,
) -> Outcome {
    let Some(roots) = roots_after(&target, &batch, &stop).await else {
        return Outcome::Stopped;
    };
    let prepared = match prepare(&batch, generation, roots) {
        Ok(prepared) => prepared,
        Err(error) => {
            let reason = format!("{error:#}");
            let id = delivery_id(&batch, generation);
            let unsent = Failure {
                reason: &reason,
                attempts: 0,
            };
            return dead_letter(&target, &batch, &id, b"", &unsent, &stop).await;
        }
    };
    let started = Instant::now();
    let mut pauses = Pauses::new(FIRST_RETRY_DELAY, MAX_RETRY_DELAY);
    let mut attempts = 0_u32;
    loop {
        attempts = attempts.saturating_add(1);
        let reason = match attempt(&target, &prepared).await {
            Ok(()) => {
                target.metrics.delivered.inc();
                debug!(target = %target.url, delivery = %prepared.id, doc = %batch.doc, "webhook delivered");
                return Outcome::Settled;
            }
            Err(reason) => reason,
        };
        target.metrics.failed_attempts.inc();
        if started.elapsed() >= target.retry_for {
            let failure = Failure {
                reason: &reason,
                attempts,
            };
            return dead_letter(
                &target,
                &batch,
                &prepared.id,
                &prepared.body,
                &failure,
                &stop,
            )
            .await;
        }
        let pause = pauses.next_pause();
        debug!(target = %target.url, delivery = %prepared.id, reason = %reason, pause = ?pause, "webhook attempt failed");
        tokio::select! {
            () = stop.cancelled() => return Outcome::Stopped,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// `--webhook-roots` as JSON (`{"text":{..},"map":{..},..}`, as
/// `GET /api/documents/{name}` answers), read as the document was at the
/// event's last position; `Some(None)` without the flag; `None` if stopped
/// while the store fails. Roots that cannot be read as the kind asked are
/// null.
async fn roots_after(
    target: &Target,
    batch: &Batch,
    stop: &CancellationToken,
) -> Option<Option<serde_json::Value>> {
    let (false, Some(history)) = (target.roots.is_empty(), target.history.as_ref()) else {
        return Some(None);
    };
    let mut pauses = Pauses::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    let read = loop {
        match history.read_at(&batch.doc, batch.to).await {
            Ok(read) => break read,
            Err(error) => {
                warn!(target = %target.url, error = %error, "webhooks: read the document for --webhook-roots");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(pauses.next_pause()) => {}
        }
    };
    let values = read
        .fold()
        .ok()
        .and_then(|state| read_roots(&state, &target.roots));
    let mut body = serde_json::Map::new();
    for ((kind, root), index) in target.roots.iter().zip(0..) {
        let key = match kind {
            RootKind::Text => "text",
            RootKind::Map => "map",
            RootKind::Array => "array",
            RootKind::XmlFragment => "xml",
        };
        let value = values
            .as_ref()
            .and_then(|values| values.get(index))
            .and_then(|value| serde_json::to_value(value).ok())
            .unwrap_or(serde_json::Value::Null);
        let group = body
            .entry(key)
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let serde_json::Value::Object(group) = group {
            group.insert(root.clone(), value);
        }
    }
    Some(Some(serde_json::Value::Object(body)))
}

/// One POST; `Err` says why it did not count.
async fn attempt(target: &Target, prepared: &Prepared) -> Result<(), String> {
    let sent_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let response = target
        .client
        .post(&target.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(&target.secret, sent_at, &prepared.body),
        )
        .header(DELIVERY_HEADER, &prepared.id)
        .body(prepared.body.clone())
        .send()
        .await
        .map_err(|error| {
            if error.is_timeout() {
                "timed out".to_owned()
            } else {
                format!("request failed: {}", error.without_url())
            }
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Why an event is given up on.
struct Failure<'a> {
    /// The last attempt's failure.
    reason: &'a str,
    /// POSTs tried.
    attempts: u32,
}

/// Stores the event as a dead letter (retrying the store until it takes
/// it, or the node stops).
async fn dead_letter(
    target: &Target,
    batch: &Batch,
    id: &str,
    body: &[u8],
    failure: &Failure<'_>,
    stop: &CancellationToken,
) -> Outcome {
    let reason = failure.reason;
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    let letter = DeadLetter {
        target: &target.url,
        delivery: id,
        doc: &batch.doc,
        from: batch.from,
        to: batch.to,
        body,
        reason,
        attempts: failure.attempts,
        at_ms,
    };
    let mut pauses = Pauses::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    loop {
        match target.log.save_dead_letter(&letter).await {
            Ok(()) => {
                target.metrics.dead_letters.inc();
                warn!(target = %target.url, delivery = %id, doc = %batch.doc, reason, "webhook event dead-lettered");
                return Outcome::Settled;
            }
            Err(error) => {
                warn!(target = %target.url, error = %error, "webhooks: store a dead letter");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Outcome::Stopped,
            () = tokio::time::sleep(pauses.next_pause()) => {}
        }
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
