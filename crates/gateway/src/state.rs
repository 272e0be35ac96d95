//! What every request handler shares.

use std::sync::Arc;

use weft_sync::Registry;

use crate::api::idempotency::IdempotencyCache;
use crate::auth::Authenticator;
use crate::cluster::Ownership;
use crate::config::GatewayConfig;
use crate::lifecycle::Lifecycle;
use crate::limits::Admission;
use crate::live::Revocations;
use crate::metrics::Metrics;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The node's documents.
    pub registry: Registry,
    /// Draining state and the session tracker.
    pub lifecycle: Lifecycle,
    /// Session limits and timers.
    pub config: Arc<GatewayConfig>,
    /// Who may open which document.
    pub auth: Authenticator,
    /// Connection counts and upgrade rates.
    pub admission: Admission,
    /// The node's metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Revocations (`/api/revocations`), checked at upgrades and applied
    /// to open sessions.
    pub revocations: Revocations,
    /// Who serves which document (`--cluster-mode ownership`); `None`:
    /// every node serves every document it is asked for.
    pub ownership: Option<Ownership>,
    /// Answers of content writes by `Idempotency-Key` (this node's own).
    pub idempotency: Arc<IdempotencyCache>,
}
