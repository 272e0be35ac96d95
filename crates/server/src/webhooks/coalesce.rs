//! Debouncing per document: the changes of one document that arrive
//! within `--webhook-debounce` of each other (capped by
//! `--webhook-max-delay` from the first) become one event. Pure: no I/O,
//! time passed in.
//!
//! Each document has a queue: sealed events waiting to be sent, in log
//! order, and the open one still collecting edits. Only the queue's front
//! is ever sent, and the next only once it was delivered or given up on
//! ([`Coalescer::done`]), so a document's events arrive in order. A
//! deletion or a restore is an event of its own, sealed at once.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use weft_sync::LogSeq;
use weft_sync::changes::{Change, ChangeKind};

/// An event's merged update is kept below this (a document edited
/// continuously for `--webhook-max-delay` seals its event early).
pub(crate) const MAX_EVENT_UPDATE_BYTES: usize = 4 * 1024 * 1024;

/// Changes of one document, sent as one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) doc: String,
    pub(crate) kind: ChangeKind,
    /// The first change's log position.
    pub(crate) from: LogSeq,
    /// The last change's log position.
    pub(crate) to: LogSeq,
    /// The changes' Yjs updates, in log order.
    pub(crate) updates: Vec<Bytes>,
    /// Who wrote them, each once, in order of their first change.
    pub(crate) authors: Vec<String>,
    /// When the last change was accepted (ms since the Unix epoch).
    pub(crate) at_ms: Option<i64>,
    count: usize,
    bytes: usize,
    first_seen: Instant,
    last_seen: Instant,
}

impl Batch {
    fn new(change: Change, now: Instant) -> Self {
        let mut batch = Self {
            doc: change.doc.clone(),
            kind: change.kind,
            from: change.position,
            to: change.position,
            updates: Vec::new(),
            authors: Vec::new(),
            at_ms: None,
            count: 0,
            bytes: 0,
            first_seen: now,
            last_seen: now,
        };
        batch.add(change, now);
        batch
    }

    fn add(&mut self, change: Change, now: Instant) {
        self.to = change.position;
        self.at_ms = change.at_ms.or(self.at_ms);
        self.last_seen = now;
        if let Some(author) = change.author
            && !self.authors.contains(&author)
        {
            self.authors.push(author);
        }
        self.count += 1;
        self.bytes += change.update.len();
        if !change.update.is_empty() {
            self.updates.push(change.update);
        }
    }

    fn due(&self, now: Instant, timing: Timing) -> bool {
        now >= self.last_seen + timing.debounce || now >= self.first_seen + timing.max_delay
    }

    fn deadline(&self, timing: Timing) -> Instant {
        (self.last_seen + timing.debounce).min(self.first_seen + timing.max_delay)
    }
}

/// `--webhook-debounce` and `--webhook-max-delay`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) debounce: Duration,
    pub(crate) max_delay: Duration,
}

#[derive(Debug, Default)]
struct DocQueue {
    sealed: VecDeque<Batch>,
    open: Option<Batch>,
    /// The front of `sealed` is being delivered.
    in_flight: bool,
}

/// The events of every document not yet delivered.
#[derive(Debug)]
pub(crate) struct Coalescer {
    timing: Timing,
    docs: HashMap<String, DocQueue>,
    /// Changes held (sealed, open and in flight), for the reader's bound.
    changes: usize,
    /// Their bytes.
    bytes: usize,
    in_flight: usize,
}

impl Coalescer {
    pub(crate) fn new(timing: Timing) -> Self {
        Self {
            timing,
            docs: HashMap::new(),
            changes: 0,
            bytes: 0,
            in_flight: 0,
        }
    }

    /// Adds the next change of the log (changes come in log order).
    pub(crate) fn push(&mut self, change: Change, now: Instant) {
        self.changes += 1;
        self.bytes += change.update.len();
        let queue = self.docs.entry(change.doc.clone()).or_default();
        // A change before the open event's last one (a replay re-reads
        // the log) starts an event of its own: an event covers one run of
        // positions.
        let joins_open = queue.open.as_ref().is_some_and(|open| {
            open.kind == ChangeKind::Changed
                && change.kind == ChangeKind::Changed
                && change.position > open.to
                && open.bytes + change.update.len() <= MAX_EVENT_UPDATE_BYTES
        });
        if joins_open {
            if let Some(open) = queue.open.as_mut() {
                open.add(change, now);
            }
            return;
        }
        if let Some(open) = queue.open.take() {
            queue.sealed.push_back(open);
        }
        let batch = Batch::new(change, now);
        if batch.kind == ChangeKind::Changed {
            queue.open = Some(batch);
        } else {
            queue.sealed.push_back(batch);
        }
    }

    /// Seals what is due and takes the events to send now: each
    /// document's front, if none of its events is in flight, `room` at
    /// most. They stay held until [`done`](Self::done).
    pub(crate) fn take_ready(&mut self, now: Instant, room: usize) -> Vec<Batch> {
        let mut candidates = Vec::new();
        for (doc, queue) in &mut self.docs {
            if queue
                .open
                .as_ref()
                .is_some_and(|open| open.due(now, self.timing))
                && let Some(open) = queue.open.take()
            {
                queue.sealed.push_back(open);
            }
            if queue.in_flight {
                continue;
            }
            if let Some(front) = queue.sealed.front() {
                candidates.push((front.from, doc.clone()));
            }
        }
        // Oldest first, so a bounded room serves the log in order.
        candidates.sort_unstable();
        candidates.truncate(room);
        let mut ready = Vec::with_capacity(candidates.len());
        for (_, doc) in candidates {
            if let Some(queue) = self.docs.get_mut(&doc)
                && let Some(front) = queue.sealed.front()
            {
                queue.in_flight = true;
                ready.push(front.clone());
            }
        }
        self.in_flight += ready.len();
        ready
    }

    /// The document's event in flight was delivered or given up on.
    pub(crate) fn done(&mut self, doc: &str) {
        let Some(queue) = self.docs.get_mut(doc) else {
            return;
        };
        if !queue.in_flight {
            return;
        }
        queue.in_flight = false;
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(front) = queue.sealed.pop_front() {
            self.changes = self.changes.saturating_sub(front.count);
            self.bytes = self.bytes.saturating_sub(front.bytes);
        }
        if queue.sealed.is_empty() && queue.open.is_none() {
            self.docs.remove(doc);
        }
    }

    /// When the next open event becomes due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.docs
            .values()
            .filter_map(|queue| queue.open.as_ref())
            .map(|open| open.deadline(self.timing))
            .min()
    }

    /// The earliest log position not yet delivered or given up on. Every
    /// event counts, not only each document's front: after a replay a
    /// later event of a document may cover earlier positions.
    pub(crate) fn oldest_held(&self) -> Option<LogSeq> {
        self.docs
            .values()
            .flat_map(|queue| queue.sealed.iter().chain(queue.open.as_ref()))
            .map(|batch| batch.from)
            .min()
    }

    /// Changes and bytes held.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.changes, self.bytes)
    }

    /// Events in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
