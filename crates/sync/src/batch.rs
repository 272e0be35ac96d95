//! The rule by which the committer forms batches: when the batch being
//! formed goes. Pure: it holds submissions and reads the clock.

use std::time::Duration;

use tokio::time::Instant;

/// The batch being formed, and when it may go.
///
/// A batch goes when it is full, or once the window has
/// passed since its first update, and only while fewer than the bus's
/// `publish_depth` batches are in flight.
/// A pipelined bus (depth above one, Kafka) also takes a batch at once when
/// nothing is in flight: a lone update never waits for a timer, and under
/// load, batches go at most once per window while earlier ones are in
/// flight. A batch holding a deletion waits until nothing is in flight,
/// because the deletion names everything committed before it.
pub(crate) struct Forming<T> {
    batch: Vec<T>,
    since: Option<Instant>,
    window: Duration,
    max_batch: usize,
    depth: usize,
    has_deletion: bool,
}

impl<T> Forming<T> {
    /// A batch that goes after `window`, holds at most `max_batch`, with at
    /// most `depth` batches in flight.
    pub(crate) fn new(window: Duration, max_batch: usize, depth: usize) -> Self {
        Self {
            batch: Vec::new(),
            since: None,
            window,
            max_batch: max_batch.max(1),
            depth,
            has_deletion: false,
        }
    }

    /// Adds a submission (`deletion`: it deletes its document).
    pub(crate) fn push(&mut self, submission: T, deletion: bool) {
        self.since.get_or_insert_with(Instant::now);
        self.has_deletion |= deletion;
        self.batch.push(submission);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.batch.len() >= self.max_batch
    }

    /// Whether the batch goes now, with `in_flight` batches awaiting their
    /// acknowledgements; `closed`: no more submissions will come.
    pub(crate) fn ready(&self, in_flight: usize, closed: bool) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        if self.waits_for_in_flight(in_flight) {
            return false;
        }
        closed
            || self.is_full()
            || (self.depth > 1 && in_flight == 0)
            || since.elapsed() >= self.window
    }

    /// When the window of the batch runs out, if the batch waits for it
    /// (not if it waits for batches in flight: their answers wake the
    /// loop).
    pub(crate) fn window_end(&self, in_flight: usize) -> Option<Instant> {
        if self.waits_for_in_flight(in_flight) {
            return None;
        }
        self.since.map(|since| since + self.window)
    }

    /// Whether the batch cannot go until a batch in flight is answered: the
    /// pipeline is full, or the batch holds a deletion.
    fn waits_for_in_flight(&self, in_flight: usize) -> bool {
        in_flight >= self.depth || (self.has_deletion && in_flight > 0)
    }

    pub(crate) fn take(&mut self) -> Vec<T> {
        self.since = None;
        self.has_deletion = false;
        // The batch moves into its publish; a fresh one grows with the load
        // instead of reserving `max_batch` slots for every lone update.
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_after_the_window_or_when_full() {
        let mut forming = Forming::new(WINDOW, 2, 1);
        assert!(!forming.ready(0, false), "nothing to send");
        forming.push(1, false);
        assert!(!forming.ready(0, false));
        tokio::time::advance(WINDOW).await;
        assert!(forming.ready(0, false));
        assert!(!forming.ready(1, false), "the pipeline is full");
        forming.push(2, false);
        assert!(forming.is_full());
        assert_eq!(forming.take(), vec![1, 2]);
        assert!(forming.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipelined_bus_takes_a_lone_update_at_once_but_a_deletion_waits() {
        let mut forming = Forming::new(WINDOW, 16, 8);
        forming.push(1, false);
        assert!(forming.ready(0, false), "nothing in flight: at once");
        assert!(
            !forming.ready(1, false),
            "in flight: collects for the window"
        );
        forming.push(2, true);
        tokio::time::advance(WINDOW).await;
        assert!(
            !forming.ready(1, false),
            "a deletion waits for what is in flight"
        );
        assert_eq!(forming.window_end(1), None);
        assert!(forming.ready(0, false));
        assert!(forming.ready(0, true));
    }
}
