//! Whether the node takes new sessions.
//!
//! One token says "draining": once it is cancelled, readiness answers 503,
//! upgrades are refused and every open session closes with 1012 ("service
//! restart"). A node makes it a child of its root token
//! ([`Lifecycle::under`]), so cancelling the root (a shutdown that ran out
//! of time) drains too.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by the router and the server's shutdown sequence.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Cancelled when the node starts draining: readiness goes false, new
    /// upgrades are refused, and sessions close.
    draining: CancellationToken,
    /// Every session task, so shutdown can wait for them as one step of
    /// its drain, before it flushes what they committed. A tracker of its
    /// own because the node's tracker also holds the HTTP servers, which
    /// stop only after that flush.
    sessions: TaskTracker,
}

impl Lifecycle {
    /// A node that takes sessions, draining only when told to
    /// ([`Lifecycle::start_draining`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A node that takes sessions until [`Lifecycle::start_draining`] or
    /// until `parent` is cancelled.
    pub fn under(parent: &CancellationToken) -> Self {
        Self {
            draining: parent.child_token(),
            sessions: TaskTracker::new(),
        }
    }

    /// Whether the node is draining (readiness false, upgrades refused).
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Starts draining: readiness goes false, new upgrades are refused, open
    /// sessions are told to close.
    pub fn start_draining(&self) {
        self.draining.cancel();
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

    /// Cancelled when sessions must close (with 1012, "service restart").
    pub(crate) fn sessions_stop(&self) -> &CancellationToken {
        &self.draining
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.sessions
    }
}
