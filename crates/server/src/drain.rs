//! The steps of a node's shutdown, in the order they run, so callers (and
//! tests) can watch the drain rather than guess it from logs, and hold it
//! at a step to look at the node there.

use std::time::Duration;

use tokio::sync::oneshot;

/// Where a node is in its life. The order of the variants is the order
/// the drain goes through them; a node never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DrainPhase {
    /// Serving: taking sessions (ready once the bus and store answer).
    Serving,
    /// Readiness answers 503, upgrades are refused with 503 and
    /// `Retry-After` (the listener stays open, so clients get an answer
    /// rather than a refused connection), and open sessions were told to
    /// close with 1012.
    Draining,
    /// Every session task has ended.
    SessionsClosed,
    /// Updates are refused, and the committer committed everything that
    /// was queued and applied it to its documents: the log holds every
    /// acknowledged update.
    CommitsFlushed,
    /// Housekeeping and the bus task stopped, and every dirty document was
    /// snapshotted (embedded mode; in a cluster the persistence worker
    /// writes the snapshots, and this step only stops the tasks).
    SnapshotsWritten,
    /// The HTTP listeners stopped and every task of the node ended.
    Stopped,
}

/// One step the drain reached, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainStep {
    /// The phase reached.
    pub phase: DrainPhase,
    /// Time since the drain started.
    pub elapsed: Duration,
}

/// What a finished drain went through, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Every phase after [`DrainPhase::Serving`], in the order reached.
    pub steps: Vec<DrainStep>,
}

impl DrainReport {
    /// The phases reached, in order.
    pub fn phases(&self) -> Vec<DrainPhase> {
        self.steps.iter().map(|step| step.phase).collect()
    }

    /// How long the whole drain took.
    pub fn elapsed(&self) -> Duration {
        self.steps
            .last()
            .map_or(Duration::ZERO, |step| step.elapsed)
    }
}

/// Keeps a node's drain at the phase it was taken for, once the drain
/// reaches it, until the hold is released or dropped (see
/// [`NodeHandle::hold_at`](crate::NodeHandle::hold_at)). The grace keeps
/// running meanwhile.
#[derive(Debug)]
pub struct DrainHold {
    /// Dropping it lets the drain go on; nothing is ever sent.
    _release: oneshot::Sender<()>,
}

impl DrainHold {
    /// A hold and what the drain awaits at its phase.
    pub(crate) fn new() -> (Self, oneshot::Receiver<()>) {
        let (release, released) = oneshot::channel();
        (Self { _release: release }, released)
    }

    /// Lets the drain go on past the held phase.
    pub fn release(self) {}
}
