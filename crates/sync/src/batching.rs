//! Broadcast batching: when a busy document holds its update broadcasts
//! back and merges them.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::fanout::Sessions;
use crate::frames::{Outbound, SessionId, update_frame};

/// When a busy document's update broadcasts are batched.
///
/// Sending a frame costs a system call per session, nearly all of it in
/// the kernel's TCP stack, so a document with many readers spends its CPU
/// per frame, not per byte. Like Nagle's algorithm, a document with at
/// least `min_sessions` sessions broadcasts an update at once if its last
/// broadcast was at least `window` ago; otherwise it holds the update and,
/// at the end of the window, sends everything held as one merged update
/// (one frame per session). A lone edit is never delayed; a stream of edits
/// to a big room is delayed by at most `window`, and each reader gets one
/// frame per window instead of one per edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastBatching {
    /// Longest an update is held back; zero turns batching off.
    pub window: Duration,
    /// Documents with fewer sessions always broadcast at once.
    pub min_sessions: usize,
}

impl BroadcastBatching {
    /// No batching: every update is broadcast as it is applied.
    pub const OFF: Self = Self {
        window: Duration::ZERO,
        min_sessions: usize::MAX,
    };

    /// Whether an update applied at `now` is held back.
    pub(crate) fn holds(
        self,
        sessions: usize,
        last_broadcast: Option<Instant>,
        now: Instant,
    ) -> bool {
        !self.window.is_zero()
            && sessions >= self.min_sessions
            && last_broadcast.is_some_and(|last| now < last + self.window)
    }
}

impl Default for BroadcastBatching {
    fn default() -> Self {
        Self::OFF
    }
}

/// An applied update whose broadcast is held.
#[derive(Debug)]
pub(crate) struct HeldUpdate {
    /// The encoded update.
    pub(crate) update: bytes::Bytes,
    /// The session it came from (`None`: another node).
    pub(crate) origin: Option<SessionId>,
}

/// Sends the held updates as merged updates: every session gets all of
/// them but its own.
pub(crate) fn flush(doc: &str, sessions: &mut Sessions, held: &[HeldUpdate]) {
    let origins: HashSet<SessionId> = held.iter().filter_map(|held| held.origin).collect();
    for frame in merged_frames(doc, held.iter()) {
        sessions.broadcast_to(doc, &frame, None, |id| !origins.contains(id));
    }
    for origin in origins {
        if !sessions.contains(origin) {
            continue;
        }
        let others = held.iter().filter(|held| held.origin != Some(origin));
        if others.clone().next().is_none() {
            continue;
        }
        for frame in merged_frames(doc, others) {
            sessions.broadcast_to(doc, &frame, None, |id| *id == origin);
        }
    }
}

/// The frames that carry every update of `held`: one merged update, or
/// (if merging failed, which updates that applied should never make it) each
/// update in its own frame, so nothing is lost either way.
fn merged_frames<'a>(doc: &str, held: impl Iterator<Item = &'a HeldUpdate>) -> Vec<Outbound> {
    let updates: Vec<&[u8]> = held.map(|held| held.update.as_ref()).collect();
    if let [only] = updates.as_slice() {
        return vec![update_frame(only)];
    }
    match yrs::merge_updates_v1(&updates) {
        Ok(merged) => vec![update_frame(&merged)],
        Err(failure) => {
            warn!(doc = %doc, error = %failure, updates = updates.len(), "merging held updates failed; sending them one by one");
            updates.into_iter().map(update_frame).collect()
        }
    }
}
