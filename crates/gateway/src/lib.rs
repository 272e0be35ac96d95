//! Weft's HTTP edge.
//!
//! One axum router serves two kinds of request on every path:
//!
//! - a WebSocket upgrade at `/{doc}` joins document `doc` (URL-decoded, may
//!   contain `/`) with the y-websocket protocol. The document is joined, and
//!   loaded if needed, *before* the `101 Switching Protocols`, so a refusal
//!   is an HTTP status with a JSON body, not a socket closed without reason;
//! - a WebSocket upgrade at `/` speaks the Hocuspocus protocol (many
//!   documents over one socket);
//! - plain HTTP reaches the service routes (`/healthz`, `/readyz`,
//!   `/metrics`), the REST API (`/api/...`) and the editor page (`/`,
//!   `/assets/...`); any other path is a JSON 404. So a document may be
//!   named `healthz`.
//!
//! The gateway knows documents only through `weft_sync::Registry`; it knows
//! no store and no bus.
//!
//! # Layout
//!
//! From the top down; a module imports only modules below it.
//!
//! - [`routes`]: the router: upgrades first, the service routes, `/api`
//!   nested, the editor page, body limits.
//! - [`api`]: the REST API under `/api/` and its OpenAPI document.
//! - `upgrade`: every check before the `101`, then the socket task (or
//!   the relay to the document's owner).
//! - `forward`: forwarding a session to its document's owner: connecting,
//!   then relaying frames.
//! - `socket`: the one socket loop, generic over the wire protocol
//!   (y-websocket, Hocuspocus) and over `Sink`/`Stream`.
//! - `state`: [`AppState`], what every handler shares.
//! - [`cluster`]: [`cluster::Ownership`], who serves which document in a
//!   cluster of owners, and the sessions a move closes.
//! - [`editor`]: the editor page compiled into the binary.
//! - [`error`]: [`ApiError`], the JSON refusal, and the one mapping from a
//!   failure to its HTTP status and close.
//! - [`metrics`]: [`Metrics`], the node's Prometheus metrics.
//! - [`live`]: auth while connected: session grants, token expiry,
//!   revocations and their log.
//! - [`auth`]: JWT verification before the upgrade, document grants.
//! - [`limits`]: connection counts, upgrade and update rates.
//! - [`lifecycle`]: [`Lifecycle`], draining state shared with the server.
//! - [`close`]: [`close::CloseReason`], why a socket closed: code, reason,
//!   metric.
//! - [`config`]: [`GatewayConfig`], the limits and timers of a session.

pub mod api;
pub mod auth;
pub mod close;
pub mod cluster;
pub mod config;
pub mod editor;
pub mod error;
mod forward;
pub mod lifecycle;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod routes;
mod socket;
mod state;
mod upgrade;

pub use config::GatewayConfig;
pub use error::ApiError;
pub use lifecycle::Lifecycle;
pub use metrics::Metrics;
pub use routes::{metrics_router, router};
pub use state::AppState;
