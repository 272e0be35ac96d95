//! The awareness table of one document: who is here, where their cursor is.
//!
//! Awareness is ephemeral: it is never stored. The server keeps the latest
//! state of every client so a joining session sees who is present, and
//! remembers which session sent each client's state so that, when the
//! session goes away, its clients' states are removed for everyone else
//! (no ghost cursors).
//!
//! The merge rule is the one of y-protocols `awareness.js`: an entry wins if
//! its clock is newer, or if it has the same clock and removes a state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use weft_protocol::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::block::ClientID;

use crate::SessionId;
use crate::bus::Origin;

/// The JSON a removed state is encoded as.
const REMOVED_STATE: &str = "null";

#[derive(Debug, Clone)]
struct ClientEntry {
    clock: u32,
    /// `None` once removed; the clock is kept so a stale update cannot bring
    /// the state back.
    state: Option<Arc<str>>,
    /// Who last set this state.
    owner: Owner,
}

/// Who set an awareness state: a session of this node, or another node
/// (whose own sessions are its business: it publishes their removals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A session of this node.
    Session(SessionId),
    /// Another node (one incarnation of it).
    Peer(Origin),
}

impl From<SessionId> for Owner {
    fn from(session: SessionId) -> Self {
        Self::Session(session)
    }
}

/// One tick's awareness entries: the latest of each client that changed.
#[derive(Debug)]
pub(crate) struct Coalesced {
    /// Every entry: what this node's sessions are sent.
    pub(crate) all: AwarenessUpdate,
    /// The entries this node's own sessions set: what the other nodes are
    /// sent (theirs they already have).
    pub(crate) local: Option<AwarenessUpdate>,
    /// The one session that set every entry, if a single one did: it is
    /// not sent its own states back.
    pub(crate) only_session: Option<SessionId>,
}

/// Latest awareness state per client id.
#[derive(Debug, Default)]
pub(crate) struct AwarenessTable {
    clients: HashMap<ClientID, ClientEntry>,
}

impl AwarenessTable {
    /// Merges an update received from `origin` and returns the entries that
    /// changed the table (what to relay), or `None` if nothing changed.
    pub(crate) fn apply(
        &mut self,
        update: AwarenessUpdate,
        origin: impl Into<Owner>,
    ) -> Option<AwarenessUpdate> {
        let origin = origin.into();
        let mut accepted = HashMap::new();
        for (client_id, entry) in update.clients {
            let removes = entry.json.as_ref() == REMOVED_STATE;
            let wins = match self.clients.get(&client_id) {
                None => true,
                Some(current) => {
                    current.clock < entry.clock
                        || (current.clock == entry.clock && removes && current.state.is_some())
                }
            };
            if !wins {
                continue;
            }
            let state = if removes {
                None
            } else {
                Some(entry.json.clone())
            };
            self.clients.insert(
                client_id,
                ClientEntry {
                    clock: entry.clock,
                    state,
                    owner: origin.clone(),
                },
            );
            accepted.insert(client_id, entry);
        }
        if accepted.is_empty() {
            None
        } else {
            Some(AwarenessUpdate { clients: accepted })
        }
    }

    /// Every present client's state, for a joining session.
    pub(crate) fn snapshot(&self) -> Option<AwarenessUpdate> {
        let clients: HashMap<ClientID, AwarenessUpdateEntry> = self
            .clients
            .iter()
            .filter_map(|(client_id, entry)| {
                let json = entry.state.clone()?;
                Some((
                    *client_id,
                    AwarenessUpdateEntry {
                        clock: entry.clock,
                        json,
                    },
                ))
            })
            .collect();
        if clients.is_empty() {
            None
        } else {
            Some(AwarenessUpdate { clients })
        }
    }

    /// The current entries (state or removal) of `clients`, for one tick's
    /// frame; `None` if none of them is in the table.
    pub(crate) fn coalesce(&self, clients: &HashSet<ClientID>) -> Option<Coalesced> {
        let mut all = HashMap::with_capacity(clients.len());
        let mut local = HashMap::new();
        let mut sessions = HashSet::new();
        let mut from_peers = false;
        for client_id in clients {
            let Some(entry) = self.clients.get(client_id) else {
                continue;
            };
            let json = entry
                .state
                .clone()
                .unwrap_or_else(|| Arc::from(REMOVED_STATE));
            let encoded = AwarenessUpdateEntry {
                clock: entry.clock,
                json,
            };
            match &entry.owner {
                Owner::Session(session) => {
                    sessions.insert(*session);
                    local.insert(*client_id, encoded.clone());
                }
                Owner::Peer(_) => from_peers = true,
            }
            all.insert(*client_id, encoded);
        }
        if all.is_empty() {
            return None;
        }
        let only_session = match (from_peers, sessions.len()) {
            (false, 1) => sessions.into_iter().next(),
            _ => None,
        };
        Some(Coalesced {
            all: AwarenessUpdate { clients: all },
            local: (!local.is_empty()).then_some(AwarenessUpdate { clients: local }),
            only_session,
        })
    }

    /// Removes the states that `session` set and returns the removal to
    /// broadcast, or `None` if it set none.
    pub(crate) fn remove_session(&mut self, session: SessionId) -> Option<AwarenessUpdate> {
        self.remove_where(|owner| *owner == Owner::Session(session))
    }

    /// Removes the states that incarnations of `node` other than `keep` set
    /// (all of them for `keep = None`): the node died or restarted.
    pub(crate) fn remove_peer(&mut self, node: &str, keep: Option<u64>) -> Option<AwarenessUpdate> {
        self.remove_where(|owner| {
            matches!(owner, Owner::Peer(origin)
                if origin.node.as_ref() == node && Some(origin.incarnation) != keep)
        })
    }

    fn remove_where(&mut self, owned: impl Fn(&Owner) -> bool) -> Option<AwarenessUpdate> {
        let mut removed = HashMap::new();
        for (client_id, entry) in &mut self.clients {
            if !owned(&entry.owner) || entry.state.is_none() {
                continue;
            }
            entry.clock = entry.clock.wrapping_add(1);
            entry.state = None;
            removed.insert(
                *client_id,
                AwarenessUpdateEntry {
                    clock: entry.clock,
                    json: Arc::from(REMOVED_STATE),
                },
            );
        }
        if removed.is_empty() {
            None
        } else {
            Some(AwarenessUpdate { clients: removed })
        }
    }

    /// Number of clients with a present state.
    #[cfg(test)]
    pub(crate) fn present(&self) -> usize {
        self.clients
            .values()
            .filter(|entry| entry.state.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(entries: &[(u64, u32, &str)]) -> AwarenessUpdate {
        AwarenessUpdate {
            clients: entries
                .iter()
                .map(|(id, clock, json)| {
                    (
                        ClientID::new(*id),
                        AwarenessUpdateEntry {
                            clock: *clock,
                            json: Arc::from(*json),
                        },
                    )
                })
                .collect(),
        }
    }

    const ALICE: SessionId = SessionId::from_raw(1);
    const BOB: SessionId = SessionId::from_raw(2);

    #[test]
    fn newer_clock_wins_and_stale_is_ignored() {
        let mut table = AwarenessTable::default();
        assert!(
            table
                .apply(update(&[(7, 2, r#"{"a":2}"#)]), ALICE)
                .is_some()
        );
        assert!(
            table
                .apply(update(&[(7, 1, r#"{"a":1}"#)]), ALICE)
                .is_none()
        );
        assert!(
            table
                .apply(update(&[(7, 2, r#"{"a":3}"#)]), ALICE)
                .is_none()
        );
        let snapshot = table.snapshot().unwrap();
        assert_eq!(
            snapshot.clients[&ClientID::new(7)].json.as_ref(),
            r#"{"a":2}"#
        );
    }

    #[test]
    fn removal_with_same_clock_wins_and_stays_removed() {
        let mut table = AwarenessTable::default();
        table.apply(update(&[(7, 2, "{}")]), ALICE);
        assert!(table.apply(update(&[(7, 2, "null")]), ALICE).is_some());
        assert!(table.snapshot().is_none());
        assert!(
            table.apply(update(&[(7, 2, "{}")]), ALICE).is_none(),
            "a stale state cannot come back"
        );
    }

    #[test]
    fn leaving_session_removes_only_its_clients() {
        let mut table = AwarenessTable::default();
        table.apply(update(&[(1, 1, "{}"), (2, 4, "{}")]), ALICE);
        table.apply(update(&[(3, 1, "{}")]), BOB);
        let removal = table.remove_session(ALICE).unwrap();
        assert_eq!(removal.clients.len(), 2);
        assert_eq!(
            removal.clients[&ClientID::new(2)].clock,
            5,
            "removal bumps the clock"
        );
        assert_eq!(table.present(), 1);
        assert!(table.remove_session(ALICE).is_none());
    }

    #[test]
    fn a_dead_or_restarted_peer_loses_its_clients_only() {
        let mut table = AwarenessTable::default();
        let old = Origin {
            node: Arc::from("b"),
            incarnation: 1,
        };
        let new = Origin {
            node: Arc::from("b"),
            incarnation: 2,
        };
        table.apply(update(&[(1, 1, "{}")]), Owner::Peer(old));
        table.apply(update(&[(2, 1, "{}")]), Owner::Peer(new));
        table.apply(update(&[(3, 1, "{}")]), ALICE);
        let restarted = table.remove_peer("b", Some(2)).unwrap();
        assert_eq!(restarted.clients.len(), 1);
        assert!(restarted.clients.contains_key(&ClientID::new(1)));
        let died = table.remove_peer("b", None).unwrap();
        assert!(died.clients.contains_key(&ClientID::new(2)));
        assert_eq!(table.present(), 1, "the local session's client stays");
        assert!(table.remove_peer("b", None).is_none());
    }
}
