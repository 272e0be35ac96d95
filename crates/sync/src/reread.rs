//! When a document that holds updates it cannot integrate is read again
//! from the log.
//!
//! A replica applies every record it receives, and yrs keeps an update
//! whose dependencies it lacks pending until they arrive. For a moment that
//! is normal: a node applies its own records on acknowledgement and other
//! nodes' on consumption, so another node's edit of this node's edit can
//! come first. For longer, the replica missed a record that the log holds:
//! nothing else would ever bring it, and every client of this node would
//! lack it too. So after [`MISSING_GRACE`] the document's records are read
//! again (snapshot and log, as when it loads) and, if updates still wait,
//! whatever the records add is applied and broadcast. A document whose
//! missing dependency the log does not hold either (a client sent an
//! update built on something it never sent) is read again at growing,
//! jittered intervals, up to [`REREAD_MAX_WAIT`] (twice it with jitter),
//! so the documents of one failure are not all read again at once.
//!
//! Pure scheduling: the registry runs the re-read, the document applies it.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Pauses;

/// How long a document may hold updates it cannot integrate before it is
/// read again from the log. Well past how long they wait normally (for
/// this node's own acknowledgement, or behind a backlog of deliveries: at
/// most 2.5 s in stress runs on a two-core machine at a load average of
/// 25, 80 ms at the median), short enough that a user does not wait long
/// for a missing edit.
pub(crate) const MISSING_GRACE: Duration = Duration::from_secs(10);
/// The first wait after a re-read that did not resolve them (jittered: up
/// to twice it); doubled each time up to [`REREAD_MAX_WAIT`].
const REREAD_FIRST_WAIT: Duration = Duration::from_secs(5);
/// The longest delay between re-reads of one document (jittered: up to
/// twice it).
const REREAD_MAX_WAIT: Duration = Duration::from_secs(300);

/// The re-read schedule of one document.
#[derive(Debug, Default)]
pub(crate) struct Reread {
    /// A re-read is running.
    running: bool,
    /// No re-read before this (after one that found nothing to integrate).
    not_before: Option<Instant>,
    /// The waits after re-reads that find nothing, while they keep
    /// finding nothing.
    pauses: Option<Pauses>,
    /// The latest of those waits (zero before the first).
    wait: Duration,
}

impl Reread {
    /// Whether a re-read is due for updates missing since `missing_since`
    /// (`None`: nothing is missing); if so it is now running.
    pub(crate) fn claim(
        &mut self,
        missing_since: Option<Instant>,
        now: Instant,
        grace: Duration,
    ) -> bool {
        let due = !self.running
            && missing_since.is_some_and(|since| now.duration_since(since) >= grace)
            && self.not_before.is_none_or(|not_before| now >= not_before);
        if due {
            self.running = true;
        }
        due
    }

    /// The re-read ended: `unresolved` if updates still wait and it
    /// changed nothing (the next one waits longer), else the schedule
    /// starts afresh.
    pub(crate) fn finished(&mut self, unresolved: bool, now: Instant) {
        if unresolved {
            let wait = self
                .pauses
                .get_or_insert_with(|| Pauses::new(REREAD_FIRST_WAIT, REREAD_MAX_WAIT))
                .next_pause();
            self.running = false;
            self.not_before = Some(now + wait);
            self.wait = wait;
        } else {
            *self = Self::default();
        }
    }

    /// The re-read could not read the log: it is tried again after the
    /// usual wait.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.running = false;
        let wait = self.wait.max(REREAD_FIRST_WAIT);
        self.not_before = Some(now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reread_that_finds_nothing_waits_longer_each_time() {
        let start = Instant::now();
        let mut reread = Reread::default();
        assert!(!reread.claim(Some(start), start, MISSING_GRACE));
        let due = start + MISSING_GRACE;
        assert!(reread.claim(Some(start), due, MISSING_GRACE));
        assert!(
            !reread.claim(Some(start), due, MISSING_GRACE),
            "one at a time"
        );
        reread.finished(true, due);
        assert!(!reread.claim(Some(start), due + Duration::from_secs(4), MISSING_GRACE));
        assert!(
            reread.claim(Some(start), due + REREAD_FIRST_WAIT * 2, MISSING_GRACE),
            "the first wait is below twice its delay (jitter)"
        );
        reread.finished(true, due);
        assert!(
            reread.wait >= REREAD_FIRST_WAIT * 2 && reread.wait < REREAD_FIRST_WAIT * 4,
            "doubled, jittered: {:?}",
            reread.wait
        );
        reread.finished(false, due);
        assert!(reread.claim(Some(start), due, MISSING_GRACE));
        assert!(!Reread::default().claim(None, due, MISSING_GRACE));
    }
}
