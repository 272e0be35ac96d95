//! Ownership of documents across a cluster (`--cluster-mode ownership`),
//! as the gateway sees it: who serves a document ([`ClusterRoutes`], a seam
//! the node fills from the Kafka owners' group), which sessions to close
//! when their document's partition moves away, and the cluster secret that
//! marks a session another node forwarded.
//!
//! Every node can serve every document safely (an update is durable in the
//! log before any node applies it), so ownership decides only where a
//! session is served: at its document's owner, which reads that partition
//! anyway. A node that does not know an owner serves the session itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::http::HeaderMap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The header a forwarding node sends the owner, holding the cluster
/// secret; a session with it is served where it lands, never forwarded on.
pub const CLUSTER_SECRET_HEADER: &str = "x-weft-cluster-secret";
/// The header a forwarding node sends the owner: the client's address, for
/// the owner's per-address limits (trusted only with the secret).
pub const FORWARDED_FOR_HEADER: &str = "x-weft-forwarded-for";

/// Who serves a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node: serve the session here.
    Here,
    /// Another node, at this `host:port`: forward the session there.
    Forward(String),
}

/// One node of `GET /api/cluster`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClusterNodeView {
    /// The node's id.
    pub id: String,
    /// Where it serves clients (`host:port`).
    pub address: String,
    /// The updates topic's partitions it owns.
    pub partitions: Vec<i32>,
}

/// `GET /api/cluster`: `{"generation":N,"nodes":[...]}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClusterView {
    /// The owners' group generation the assignment was made in.
    pub generation: i64,
    /// Its members.
    pub nodes: Vec<ClusterNodeView>,
}

/// Who owns what, answered by the node (from the Kafka owners' group).
pub trait ClusterRoutes: Send + Sync + fmt::Debug {
    /// Where `doc`'s sessions are served.
    fn route(&self, doc: &str) -> Route;
    /// `doc`'s partition of the updates topic, once known.
    fn partition_of(&self, doc: &str) -> Option<i32>;
    /// The cluster as `GET /api/cluster` shows it.
    fn view(&self) -> ClusterView;
}

/// Ownership as the gateway uses it: routes, the secret, and a stop token
/// per partition for the sessions served here.
#[derive(Clone)]
pub struct Ownership {
    routes: Arc<dyn ClusterRoutes>,
    secret: Arc<str>,
    /// partition -> the token its sessions stop with (a child of the
    /// node's sessions' stop token, so a drain stops them too).
    moves: Arc<Mutex<HashMap<i32, CancellationToken>>>,
}

impl fmt::Debug for Ownership {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Ownership")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Ownership {
    /// Ownership from `routes`; forwarded sessions carry `secret`.
    pub fn new(routes: Arc<dyn ClusterRoutes>, secret: &str) -> Self {
        Self {
            routes,
            secret: secret.into(),
            moves: Arc::default(),
        }
    }

    /// Where `doc`'s sessions are served.
    pub fn route(&self, doc: &str) -> Route {
        self.routes.route(doc)
    }

    /// The cluster, for `GET /api/cluster`.
    pub fn view(&self) -> ClusterView {
        self.routes.view()
    }

    /// The cluster secret forwarded sessions carry.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether a request was forwarded by a node of this cluster: it
    /// carries the secret (compared in constant time).
    pub fn is_forwarded(&self, headers: &HeaderMap) -> bool {
        headers
            .get(CLUSTER_SECRET_HEADER)
            .is_some_and(|value| constant_time_eq(value.as_bytes(), self.secret.as_bytes()))
    }

    /// The token a session of `doc` stops with: its partition's, so a move
    /// closes it; `drain` itself before the partition is known.
    pub(crate) fn session_stop(&self, doc: &str, drain: &CancellationToken) -> CancellationToken {
        let Some(partition) = self.routes.partition_of(doc) else {
            return drain.child_token();
        };
        let mut moves = self.moves.lock();
        let token = moves
            .entry(partition)
            .or_insert_with(|| drain.child_token());
        if token.is_cancelled() {
            *token = drain.child_token();
        }
        token.child_token()
    }

    /// `partitions` moved to other nodes: the sessions of their documents
    /// served here close with 1012 and reconnect, reaching the new owner.
    pub fn partitions_moved(&self, partitions: &[i32]) {
        let mut moves = self.moves.lock();
        for partition in partitions {
            if let Some(token) = moves.remove(partition) {
                token.cancel();
            }
        }
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl ClusterRoutes for Fixed {
        fn route(&self, doc: &str) -> Route {
            if doc == "here" {
                Route::Here
            } else {
                Route::Forward("127.0.0.1:9".to_owned())
            }
        }
        fn partition_of(&self, doc: &str) -> Option<i32> {
            (doc != "unknown").then_some(i32::from(doc.len() > 4))
        }
        fn view(&self) -> ClusterView {
            ClusterView {
                generation: 1,
                nodes: Vec::new(),
            }
        }
    }

    #[test]
    fn a_move_stops_the_sessions_of_its_partitions_only() {
        let ownership = Ownership::new(Arc::new(Fixed), "s3cret");
        let drain = CancellationToken::new();
        let short = ownership.session_stop("here", &drain);
        let long = ownership.session_stop("longer", &drain);
        let unknown = ownership.session_stop("unknown", &drain);
        ownership.partitions_moved(&[1]);
        assert!(long.is_cancelled(), "partition 1 moved");
        assert!(!short.is_cancelled() && !unknown.is_cancelled());
        let again = ownership.session_stop("longer", &drain);
        assert!(!again.is_cancelled(), "a later session gets a fresh token");
        drain.cancel();
        assert!(short.is_cancelled() && unknown.is_cancelled() && again.is_cancelled());
    }

    #[test]
    fn only_the_secret_marks_a_forwarded_session() {
        let ownership = Ownership::new(Arc::new(Fixed), "s3cret");
        let mut headers = HeaderMap::new();
        assert!(!ownership.is_forwarded(&headers));
        headers.insert(CLUSTER_SECRET_HEADER, "s3cre".parse().unwrap());
        assert!(!ownership.is_forwarded(&headers));
        headers.insert(CLUSTER_SECRET_HEADER, "s3cret".parse().unwrap());
        assert!(ownership.is_forwarded(&headers));
    }
}
