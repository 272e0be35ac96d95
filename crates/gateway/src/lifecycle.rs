//! Whether the node takes new sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by the router and the server's shutdown sequence.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    /// Cancelled when sessions must close (with 1012, "service restart").
    sessions_stop: CancellationToken,
    /// Every session task, so shutdown can wait for them.
    sessions: TaskTracker,
}

impl Lifecycle {
    /// A node that takes sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the node is draining (readiness false, upgrades refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts draining: readiness goes false, new upgrades are refused, open
    /// sessions are told to close.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.sessions_stop.cancel();
    }

    /// Waits until every session task has ended.
    pub async fn sessions_closed(&self) {
        self.sessions.close();
        self.sessions.wait().await;
    }

    /// Number of open sessions.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn sessions_stop(&self) -> &CancellationToken {
        &self.sessions_stop
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.sessions
    }
}
