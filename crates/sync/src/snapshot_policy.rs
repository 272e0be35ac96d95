//! When a document's snapshot is due: one rule for every writer of
//! snapshots (a node in embedded mode, and the persistence worker, which
//! counts every record it reads as an update).
//!
//! Pure: it reads clocks it is given and holds no document.

use std::time::Duration;

use tokio::time::Instant;

/// Changes not yet covered by a stored snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    /// When the first change after the last snapshot was applied.
    pub since: Instant,
    /// When the latest change was applied.
    pub last: Instant,
    /// How many updates were applied since the last snapshot.
    pub updates: u64,
}

impl Dirty {
    /// `updates` changes, the first and latest at `now`.
    pub fn new(now: Instant, updates: u64) -> Self {
        Self {
            since: now,
            last: now,
            updates,
        }
    }

    /// Records one more change at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.last = now;
        self.updates += 1;
    }

    /// Records one change at `now` on `dirty`, starting it if clean.
    pub fn note_change(dirty: &mut Option<Self>, now: Instant) {
        dirty.get_or_insert(Self::new(now, 0)).touch(now);
    }
}

/// Snapshot size per step of the update-count rule: a document whose last
/// snapshot holds `n` whole steps waits for `(1 + n) * max_updates`
/// updates (see [`SnapshotPolicy::due_sized`]).
pub const SNAPSHOT_BYTES_PER_STEP: usize = 16 * 1024;

/// When a dirty document is snapshotted: once it has been quiet for
/// `debounce`, or dirty for `max_delay` even if edits keep coming (so the
/// log of a busy document stays short), or once `max_updates` updates were
/// applied since the last snapshot (more for a large document, see
/// [`SnapshotPolicy::due_sized`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Quiet time after the latest change.
    pub debounce: Duration,
    /// Longest a change waits for its snapshot.
    pub max_delay: Duration,
    /// Most updates a snapshot waits for.
    pub max_updates: u64,
}

impl SnapshotPolicy {
    /// Whether a document with changes `dirty` is due for a snapshot at
    /// `now`.
    pub fn due(&self, dirty: &Dirty, now: Instant) -> bool {
        now.duration_since(dirty.last) >= self.debounce
            || now.duration_since(dirty.since) >= self.max_delay
            || dirty.updates >= self.max_updates
    }

    /// [`SnapshotPolicy::due`] for a document whose last stored snapshot
    /// held `snapshot_bytes` bytes: the update count that makes it due
    /// grows by `max_updates` for every [`SNAPSHOT_BYTES_PER_STEP`] of it.
    ///
    /// A snapshot encodes the whole document, so at a fixed count a
    /// growing document pays more per update for its snapshots (an
    /// automerge-paper replay at 100,000 edits spent a tenth of its
    /// instructions there). Scaled, a snapshot costs at most about one
    /// step's bytes encoded per `max_updates` updates, whatever the size;
    /// in exchange a busy large document's log between snapshots is longer
    /// (a load replays more updates), still cut at `max_delay`.
    pub fn due_sized(&self, dirty: &Dirty, now: Instant, snapshot_bytes: usize) -> bool {
        let steps = u64::try_from(snapshot_bytes / SNAPSHOT_BYTES_PER_STEP).unwrap_or(u64::MAX);
        let max_updates = self.max_updates.saturating_mul(steps.saturating_add(1));
        now.duration_since(dirty.last) >= self.debounce
            || now.duration_since(dirty.since) >= self.max_delay
            || dirty.updates >= max_updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: SnapshotPolicy = SnapshotPolicy {
        debounce: Duration::from_secs(2),
        max_delay: Duration::from_secs(30),
        max_updates: 1000,
    };

    #[test]
    fn a_quiet_document_is_due_after_the_debounce() {
        let start = Instant::now();
        let dirty = Dirty::new(start, 1);
        assert!(!POLICY.due(&dirty, start + Duration::from_millis(1999)));
        assert!(POLICY.due(&dirty, start + Duration::from_secs(2)));
    }

    #[test]
    fn a_busy_document_is_due_after_the_max_delay() {
        let start = Instant::now();
        let mut dirty = Dirty::new(start, 1);
        let mut now = start;
        while now < start + Duration::from_secs(29) {
            now += Duration::from_secs(1);
            dirty.touch(now);
            assert!(!POLICY.due(&dirty, now), "edits keep coming: debounced");
        }
        assert!(POLICY.due(&dirty, start + Duration::from_secs(30)));
    }

    #[test]
    fn many_updates_make_a_snapshot_due_at_once() {
        let start = Instant::now();
        let mut dirty: Option<Dirty> = None;
        for _ in 0..999 {
            Dirty::note_change(&mut dirty, start);
        }
        let Some(mut dirty) = dirty else {
            panic!("changes were noted");
        };
        assert_eq!(dirty.updates, 999);
        assert!(!POLICY.due(&dirty, start));
        dirty.touch(start);
        assert!(POLICY.due(&dirty, start));
    }

    #[test]
    fn a_large_document_waits_for_more_updates() {
        let start = Instant::now();
        let dirty = Dirty::new(start, 2999);
        let small = SNAPSHOT_BYTES_PER_STEP - 1;
        assert!(
            POLICY.due_sized(&dirty, start, small),
            "under one step: as due"
        );
        let two_steps = 2 * SNAPSHOT_BYTES_PER_STEP;
        assert!(!POLICY.due_sized(&dirty, start, two_steps));
        assert!(POLICY.due_sized(&Dirty::new(start, 3000), start, two_steps));
        assert!(
            POLICY.due_sized(&dirty, start + Duration::from_secs(30), two_steps),
            "the max delay still holds"
        );
        assert!(!POLICY.due_sized(&dirty, start, usize::MAX), "saturates");
    }
}
