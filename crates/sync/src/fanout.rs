//! The sessions of one document as outboxes, and sending one frame to many
//! of them.
//!
//! A session whose queue is full, in frames or in bytes (or gone), is
//! removed and its overflow token tripped, so the gateway disconnects it:
//! the client re-syncs when it reconnects instead of silently missing a
//! frame.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc::error::TrySendError;
use tracing::info;

use bytes::Bytes;

use crate::frames::{Outbound, SessionId, SessionOutbox, prefixed};

/// Distinct prefixes one broadcast shares a built frame for. Sessions of a
/// document nearly always share one prefix (its Hocuspocus address) or
/// none; past this many, a frame is built per session.
const SHARED_PREFIXES: usize = 4;

/// The outboxes of one document's sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    outboxes: HashMap<SessionId, SessionOutbox>,
    /// Sessions whose protocol carries stateless messages (Hocuspocus).
    stateless: HashSet<SessionId>,
}

impl Sessions {
    pub(crate) fn insert(&mut self, id: SessionId, outbox: SessionOutbox) {
        self.outboxes.insert(id, outbox);
    }

    pub(crate) fn remove(&mut self, id: SessionId) {
        self.outboxes.remove(&id);
        self.stateless.remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.outboxes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.outboxes.is_empty()
    }

    pub(crate) fn contains(&self, id: SessionId) -> bool {
        self.outboxes.contains_key(&id)
    }

    /// Marks a session as one that receives stateless messages.
    pub(crate) fn want_stateless(&mut self, id: SessionId) {
        self.stateless.insert(id);
    }

    /// Tells every session its document was deleted. The outboxes stay
    /// until each session leaves: dropping them here would end the
    /// gateway's writers before the close frame is sent.
    pub(crate) fn tell_deleted(&self) {
        for outbox in self.outboxes.values() {
            outbox.deleted.cancel();
        }
    }

    /// Queues a frame for one session (behind its prefix); `false` if its
    /// outbox is full or gone.
    pub(crate) fn send_to(&self, id: SessionId, outbound: Outbound) -> bool {
        self.outboxes
            .get(&id)
            .is_some_and(|outbox| outbox.try_queue(outbox.framed(&outbound)).is_ok())
    }

    /// Offers a frame to every session but `except`.
    pub(crate) fn broadcast(&mut self, doc: &str, outbound: &Outbound, except: Option<SessionId>) {
        self.broadcast_to(doc, outbound, except, |_| true);
    }

    /// Offers a stateless message to every session that takes them but
    /// `except`.
    pub(crate) fn broadcast_stateless(
        &mut self,
        doc: &str,
        outbound: &Outbound,
        except: Option<SessionId>,
    ) {
        let stateless = std::mem::take(&mut self.stateless);
        self.broadcast_to(doc, outbound, except, |id| stateless.contains(id));
        self.stateless = stateless;
    }

    /// [`Sessions::broadcast`] to the sessions `wanted` accepts.
    pub(crate) fn broadcast_to(
        &mut self,
        doc: &str,
        outbound: &Outbound,
        except: Option<SessionId>,
        wanted: impl Fn(&SessionId) -> bool,
    ) {
        let mut framed = PrefixedFrames::new(outbound);
        self.outboxes.retain(|id, outbox| {
            if Some(*id) == except || !wanted(id) {
                return true;
            }
            match outbox.try_queue(framed.for_prefix(&outbox.prefix)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    info!(
                        doc = %doc,
                        session = %id,
                        queued_bytes = outbox.queued.get(),
                        "session send queue full; disconnecting it"
                    );
                    outbox.overflowed.cancel();
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// One broadcast's frame behind each prefix it met, built once per prefix
/// and shared (as [`Bytes`]) by every session with that prefix.
struct PrefixedFrames<'a> {
    frame: &'a Outbound,
    built: Vec<(Bytes, Outbound)>,
}

impl<'a> PrefixedFrames<'a> {
    fn new(frame: &'a Outbound) -> Self {
        Self {
            frame,
            built: Vec::new(),
        }
    }

    /// The frame behind `prefix`, built on the first request for it.
    fn for_prefix(&mut self, prefix: &Bytes) -> Outbound {
        if prefix.is_empty() {
            return self.frame.clone();
        }
        if let Some((_, built)) = self.built.iter().find(|(known, _)| known == prefix) {
            return built.clone();
        }
        let built = prefixed(prefix, self.frame);
        if self.built.len() < SHARED_PREFIXES {
            self.built.push((prefix.clone(), built.clone()));
        }
        built
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::PrefixedFrames;

    #[test]
    fn a_prefixed_frame_is_built_once_per_prefix_and_shared() {
        let frame = Bytes::from_static(b"\x00\x02update");
        let mut framed = PrefixedFrames::new(&frame);
        let empty = framed.for_prefix(&Bytes::new());
        assert_eq!(empty.as_ptr(), frame.as_ptr(), "no prefix: the same bytes");
        let prefix = Bytes::from_static(b"\x03doc");
        let first = framed.for_prefix(&prefix);
        let second = framed.for_prefix(&Bytes::copy_from_slice(b"\x03doc"));
        assert_eq!(&first[..], b"\x03doc\x00\x02update");
        assert_eq!(first.as_ptr(), second.as_ptr(), "one build per prefix");
        let other = framed.for_prefix(&Bytes::from_static(b"\x01x"));
        assert_eq!(&other[..], b"\x01x\x00\x02update");
    }
}
