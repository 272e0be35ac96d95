//! Where a submitted update's outcome goes once the committer has it.
//!
//! A submitter that must answer its client (Hocuspocus's sync status, the
//! REST API's response) waits on a [`PendingAck`](crate::PendingAck): a
//! oneshot per update, and the committer wakes its task with the outcome.
//!
//! A y-websocket session answers nothing: its client hears of a durable
//! update from nobody, and only a failure matters (the session closes so
//! the client re-sends). Waking its socket task for every acknowledgement
//! would carry nothing, so such a session submits through an
//! [`AckWindow`]: a place per update in flight (a semaphore, the bound
//! that stops a fast writer reading its socket) and a failure flag. The
//! committer frees the place on success, which wakes no task unless the
//! session waits for room, and trips the flag on failure, which wakes it
//! to close.

use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::PublishError;
use crate::store::LogSeq;

/// What a submitted update's outcome resolves.
#[derive(Debug)]
pub(crate) enum AckTo {
    /// A waiting [`PendingAck`](crate::PendingAck).
    Waiter(oneshot::Sender<Result<LogSeq, PublishError>>),
    /// A place in a session's [`AckWindow`].
    Window(WindowPlace),
}

impl AckTo {
    /// Hands the submitter its outcome (a submitter gone is no error).
    pub(crate) fn resolve(self, outcome: Result<LogSeq, PublishError>) {
        match self {
            Self::Waiter(sender) => {
                let _submitter_may_be_gone = sender.send(outcome);
            }
            Self::Window(place) => place.resolve(outcome),
        }
    }
}

/// The updates a session has in the committer, acknowledged without a
/// wake-up each (see the module's documentation).
#[derive(Debug)]
pub struct AckWindow {
    /// One permit per update that may be in flight.
    places: Arc<Semaphore>,
    /// Tripped by the first update that failed to commit.
    failed: CancellationToken,
    /// Why it failed.
    failure: parking_lot::Mutex<Option<PublishError>>,
    /// Observes each durable update's time from submission to commit.
    commit_seconds: Histogram,
}

impl AckWindow {
    /// A window of `capacity` updates in flight, observing commit times
    /// into `commit_seconds`.
    pub fn new(capacity: usize, commit_seconds: Histogram) -> Arc<Self> {
        Arc::new(Self {
            places: Arc::new(Semaphore::new(capacity.max(1))),
            failed: CancellationToken::new(),
            failure: parking_lot::Mutex::new(None),
            commit_seconds,
        })
    }

    /// Whether another update may be submitted now.
    pub fn has_room(&self) -> bool {
        self.places.available_permits() > 0
    }

    /// Resolves once another update may be submitted.
    pub async fn room(&self) {
        // The permit goes back at once: this only waits for one to exist.
        let _place = self.places.acquire().await;
    }

    /// Resolves with the failure of the first update that did not commit.
    pub async fn failed(&self) -> PublishError {
        self.failed.cancelled().await;
        self.failure.lock().take().unwrap_or(PublishError::Stopped)
    }

    /// Takes a place for an update, waiting for one if all are taken.
    pub(crate) async fn place(self: &Arc<Self>) -> WindowPlace {
        let permit = match Arc::clone(&self.places).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::NoPermits) => Arc::clone(&self.places).acquire_owned().await.ok(),
            Err(TryAcquireError::Closed) => None,
        };
        WindowPlace {
            window: Arc::clone(self),
            _permit: permit,
            submitted: Instant::now(),
        }
    }
}

/// One update's place in an [`AckWindow`], freed when it resolves.
#[derive(Debug)]
pub(crate) struct WindowPlace {
    window: Arc<AckWindow>,
    /// `None` only if the semaphore was closed (it never is).
    _permit: Option<OwnedSemaphorePermit>,
    submitted: Instant,
}

impl WindowPlace {
    fn resolve(self, outcome: Result<LogSeq, PublishError>) {
        match outcome {
            Ok(_) => self
                .window
                .commit_seconds
                .observe(self.submitted.elapsed().as_secs_f64()),
            Err(failure) => {
                let mut first = self.window.failure.lock();
                if first.is_none() && !self.window.failed.is_cancelled() {
                    *first = Some(failure);
                }
                drop(first);
                self.window.failed.cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn histogram() -> Histogram {
        Histogram::new([0.001, 0.01, 0.1])
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_has_room_again_once_an_update_resolves() {
        let window = AckWindow::new(2, histogram());
        let first = AckTo::Window(window.place().await);
        let _second = AckTo::Window(window.place().await);
        assert!(!window.has_room());
        let waiting = tokio::time::timeout(Duration::from_secs(1), window.room()).await;
        assert!(waiting.is_err(), "no room while both places are taken");
        first.resolve(Ok(7));
        assert!(window.has_room());
        tokio::time::timeout(Duration::from_secs(1), window.room())
            .await
            .expect("room after one place was freed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_reported_once_and_frees_its_place() {
        let window = AckWindow::new(1, histogram());
        let place = AckTo::Window(window.place().await);
        let failed = tokio::time::timeout(Duration::from_secs(1), window.failed()).await;
        assert!(failed.is_err(), "nothing failed yet");
        place.resolve(Err(PublishError::Failed("disk full".to_owned())));
        assert!(window.has_room());
        let failure = tokio::time::timeout(Duration::from_secs(1), window.failed())
            .await
            .expect("the failure is reported");
        assert!(matches!(failure, PublishError::Failed(reason) if reason == "disk full"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_observes_the_commit_time_and_wakes_nobody() {
        let commit_seconds = histogram();
        let window = AckWindow::new(4, commit_seconds.clone());
        let place = AckTo::Window(window.place().await);
        tokio::time::advance(Duration::from_millis(5)).await;
        place.resolve(Ok(1));
        assert!(!window.failed.is_cancelled());
        let mut encoded = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("commit_seconds", "test", commit_seconds);
        prometheus_client::encoding::text::encode(&mut encoded, &registry)
            .expect("encode the registry");
        assert!(encoded.contains("commit_seconds_count 1"), "{encoded}");
    }
}
