//! Where the registry's tasks run.
//!
//! Every task goes on the tracker the registry was given (the node's), so
//! the node's last shutdown step waits for everything it started. A node's
//! tracker also holds tasks that outlive the registry (its HTTP servers),
//! so each task is counted a second time by the group of the registry it
//! belongs to (the committer; housekeeping and the bus task): a step of the
//! registry's shutdown waits for its own group alone.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// Tasks spawned on a node's tracker and counted by one group of the
/// registry as well.
#[derive(Debug, Clone)]
pub(crate) struct TaskGroup {
    /// The tracker every task of the node is on.
    node: TaskTracker,
    /// This group's tasks only.
    group: TaskTracker,
}

impl TaskGroup {
    /// A new, empty group whose tasks go on `node`.
    pub(crate) fn on(node: &TaskTracker) -> Self {
        Self {
            node: node.clone(),
            group: TaskTracker::new(),
        }
    }

    /// Spawns `task` on the node's tracker, counted by this group too.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.node.spawn(self.group.track_future(task))
    }

    /// Waits until every task of this group has ended. Tell them to stop
    /// first: this only waits.
    pub(crate) async fn wait(&self) {
        self.group.close();
        self.group.wait().await;
    }
}
