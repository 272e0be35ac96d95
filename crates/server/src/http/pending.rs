//! Connections that have not upgraded yet, counted in all and per address.
//!
//! A connection is pending from its accept until it becomes a WebSocket or
//! closes. A client that opens connections and never finishes a request
//! (slowloris) only ever holds pending ones, so bounding them per address
//! keeps one client from taking the node's file descriptors, and bounding
//! them in all keeps the node's memory for connections bounded whatever the
//! number of addresses.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingRefusal {
    /// The node holds `--max-pending-connections` already.
    Node,
    /// This address holds `--max-pending-connections-per-ip` already.
    Address,
}

impl PendingRefusal {
    /// The label of `weft_http_connections_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Address => "address",
        }
    }
}

/// The counts, under one lock: every accept takes it once and every close
/// once, which is cheap next to the accept itself.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only addresses holding at least one: an entry is removed at zero, so
    /// the map holds at most `max_total` entries.
    per_address: HashMap<IpAddr, usize>,
}

/// The pending connections of one listener.
#[derive(Debug, Clone)]
pub(crate) struct PendingConnections {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_address: usize,
}

impl PendingConnections {
    /// Limits of 0 mean "no limit".
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total: if max_total == 0 {
                usize::MAX
            } else {
                max_total
            },
            max_per_address: if max_per_address == 0 {
                usize::MAX
            } else {
                max_per_address
            },
        }
    }

    /// Counts a connection from `address`, or says which limit it is over.
    pub(crate) fn admit(&self, address: IpAddr) -> Result<PendingPermit, PendingRefusal> {
        let mut counts = self.counts.lock();
        if counts.total >= self.max_total {
            return Err(PendingRefusal::Node);
        }
        match counts.per_address.entry(address) {
            Entry::Occupied(mut entry) => {
                if *entry.get() >= self.max_per_address {
                    return Err(PendingRefusal::Address);
                }
                *entry.get_mut() += 1;
            }
            Entry::Vacant(entry) => {
                entry.insert(1);
            }
        }
        counts.total += 1;
        Ok(PendingPermit {
            counts: self.counts.clone(),
            address,
        })
    }

    /// Pending connections now, in all.
    pub(crate) fn total(&self) -> usize {
        self.counts.lock().total
    }
}

/// One pending connection; dropping it (upgrade or close) uncounts it.
#[derive(Debug)]
pub(crate) struct PendingPermit {
    counts: Arc<Mutex<Counts>>,
    address: IpAddr,
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Entry::Occupied(mut entry) = counts.per_address.entry(self.address) {
            *entry.get_mut() = entry.get().saturating_sub(1);
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn one_address_is_capped_and_others_still_get_in() {
        let pending = PendingConnections::new(10, 2);
        let first = pending.admit(A);
        let second = pending.admit(A);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(pending.admit(A).err(), Some(PendingRefusal::Address));
        assert!(pending.admit(B).is_ok(), "another address is not affected");
        drop(first);
        assert!(
            pending.admit(A).is_ok(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn the_node_total_is_capped_across_addresses() {
        let pending = PendingConnections::new(2, 5);
        let _a = pending.admit(A);
        let _b = pending.admit(B);
        assert_eq!(pending.total(), 2);
        assert_eq!(pending.admit(B).err(), Some(PendingRefusal::Node));
    }

    #[test]
    fn dropping_every_permit_empties_the_map() {
        let pending = PendingConnections::new(0, 0);
        let permits: Vec<_> = (0..100).map(|_| pending.admit(A)).collect();
        assert!(permits.iter().all(Result::is_ok));
        drop(permits);
        assert_eq!(pending.total(), 0);
        assert!(pending.counts.lock().per_address.is_empty());
    }
}
