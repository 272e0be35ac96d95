//! Coalescing a document's awareness changes: one frame per tick.
//!
//! Every client renews its cursor as it moves, and every change used to go
//! out at once as its own frame to every other session: at 1,500 clients
//! changing once a second that is 2.25 million frames a second, one system
//! call each. Presence needs only the latest state of each client, not
//! every intermediate one, so a document holds the ids of the clients whose
//! state changed and, once per [`AWARENESS_TICK`], encodes their *current*
//! entries (state or removal, with its clock) as one awareness message and
//! sends the same bytes to every session. The other nodes get the same:
//! one bus record per tick with this node's own clients' entries.
//!
//! Like the update batching ([`crate::batching`]), the window opens on the
//! leading edge: a change to a document that flushed nothing in the last
//! tick goes out at once, so a quiet room sees no delay at all, and a busy
//! one at most one tick; and a document with fewer than
//! [`AWARENESS_TICK_MIN_SESSIONS`] sessions never waits.
//!
//! Whom a frame skips: a tick whose changes all came from one session is
//! not sent back to it (a lone change behaves as before). A tick that
//! carries several sessions' clients goes to everyone, senders included:
//! a y-protocols client ignores an entry for its own client id whose clock
//! is not newer than its own, which an echo never is (the client is the one
//! that raised it), so the echo costs a parse, where leaving each sender
//! out would cost one more encode per sender.
//!
//! Removals (a session left, a node went silent) do not wait: they are
//! rare, and a stale cursor is the one thing presence must not show.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use yrs::block::ClientID;

/// How long a document gathers awareness changes before it sends them as
/// one frame. Cursors renew at human speed; 100 ms keeps a moving cursor
/// smooth (ten frames a second per room, whatever its size) and bounds the
/// delay a busy room adds to well under the quarter second users notice.
pub(crate) const AWARENESS_TICK: Duration = Duration::from_millis(100);

/// Documents with fewer sessions relay every change at once: a handful of
/// editors see each other's cursors move with their text, and their
/// fan-out (a few frames per change) costs little.
pub(crate) const AWARENESS_TICK_MIN_SESSIONS: usize = 16;

/// The awareness changes of one document waiting for their tick.
#[derive(Debug, Default)]
pub(crate) struct AwarenessTick {
    /// Clients whose state changed since the last flush. Bounded by the
    /// document's awareness table (one id per client).
    held: HashSet<ClientID>,
    /// When the last tick's frame went out.
    last_flush: Option<Instant>,
    /// A flush is scheduled (a task waits for the end of the tick).
    scheduled: bool,
}

/// What to do after holding a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TickAction {
    /// Flush now: nothing went out for a whole tick.
    FlushNow,
    /// Schedule a flush at this instant.
    FlushAt(Instant),
    /// A flush is already scheduled; it will carry this change.
    Wait,
}

impl AwarenessTick {
    /// Holds the clients whose state changed at `now` in a document of
    /// `sessions` sessions and says when they go.
    pub(crate) fn hold(
        &mut self,
        clients: impl IntoIterator<Item = ClientID>,
        sessions: usize,
        now: Instant,
    ) -> TickAction {
        self.held.extend(clients);
        if self.scheduled {
            return TickAction::Wait;
        }
        if sessions < AWARENESS_TICK_MIN_SESSIONS {
            return TickAction::FlushNow;
        }
        match self.last_flush {
            Some(last) if now < last + AWARENESS_TICK => {
                self.scheduled = true;
                TickAction::FlushAt(last + AWARENESS_TICK)
            }
            _ => TickAction::FlushNow,
        }
    }

    /// Takes the held clients for a flush at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> HashSet<ClientID> {
        self.scheduled = false;
        self.last_flush = Some(now);
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leading_edge_then_one_flush_per_tick() {
        let mut tick = AwarenessTick::default();
        let start = Instant::now();
        let big = AWARENESS_TICK_MIN_SESSIONS;
        assert_eq!(
            tick.hold([ClientID::new(1)], big, start),
            TickAction::FlushNow,
            "a quiet document sends at once"
        );
        assert_eq!(tick.take(start).len(), 1);
        let soon = start + Duration::from_millis(10);
        assert_eq!(
            tick.hold([ClientID::new(1)], big, soon),
            TickAction::FlushAt(start + AWARENESS_TICK)
        );
        assert_eq!(tick.hold([ClientID::new(2)], big, soon), TickAction::Wait);
        assert_eq!(tick.hold([ClientID::new(1)], big, soon), TickAction::Wait);
        let flushed = tick.take(start + AWARENESS_TICK);
        assert_eq!(
            flushed.len(),
            2,
            "one entry per client, however many changes"
        );
        let later = start + AWARENESS_TICK * 3;
        assert_eq!(
            tick.hold([ClientID::new(3)], big, later),
            TickAction::FlushNow
        );
        tick.take(later);
        assert_eq!(
            tick.hold([ClientID::new(3)], big - 1, later),
            TickAction::FlushNow,
            "a small document never waits"
        );
    }
}
