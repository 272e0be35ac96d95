//! Where the bus's background tasks run: on the node's task tracker, each
//! stopped by a token of the node's cancellation tree, so the node's
//! shutdown stops them and waits for them like every other task of the
//! node (the live consumer loop, replay passes, heartbeat
//! acknowledgements, repairs of skipped offsets).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's tracker and the token that stops the bus's tasks.
#[derive(Debug, Clone)]
pub struct BusTasks {
    /// Cancelled once the node no longer uses the bus (a child of the
    /// node's root token).
    stop: CancellationToken,
    /// The tracker every task of the node is on.
    tracker: TaskTracker,
}

impl BusTasks {
    /// Tasks on `tracker`, stopped when `stop` is cancelled.
    pub fn new(stop: CancellationToken, tracker: TaskTracker) -> Self {
        Self { stop, tracker }
    }

    /// Spawns `task` on the tracker; once the stop token is cancelled it
    /// is dropped at its next await. Call it from within a runtime.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        // Nobody joins these: their outcome reaches the bus through
        // channels and counters, and the tracker awaits them.
        drop(self.tracker.spawn(async move {
            let _finished_or_stopped = stop.run_until_cancelled(task).await;
        }));
    }

    /// Runs blocking `work` (a librdkafka call) off the runtime, on the
    /// tracker: it cannot be interrupted, so the node's last shutdown step
    /// waits for it to end (librdkafka's request timeouts bound it).
    pub(crate) fn spawn_blocking<F, R>(&self, work: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.tracker.spawn_blocking(work)
    }

    /// Whether the bus was told to stop.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_task_ends_and_leaves_the_tracker_empty() {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let tasks = BusTasks::new(stop.clone(), tracker.clone());
        tasks.spawn(std::future::pending());
        let (release, released) = std::sync::mpsc::channel::<u8>();
        let blocking = tasks.spawn_blocking(move || released.recv().ok());
        assert_eq!(tracker.len(), 2, "both tasks are on the node's tracker");
        release.send(7).expect("the blocking task waits");
        assert_eq!(blocking.await.ok(), Some(Some(7)));
        stop.cancel();
        tracker.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait())
            .await
            .expect("the pending task stops once its token is cancelled");
        assert!(tracker.is_empty() && tasks.stopping());
    }
}
