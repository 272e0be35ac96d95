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
//! - [`api`]: the REST API under `/api/` and its OpenAPI document.
//! - [`auth`]: JWT verification before the upgrade, document grants.
//! - [`config`]: [`GatewayConfig`], the limits and timers of a session.
//! - [`editor`]: the editor page compiled into the binary.
//! - [`error`]: [`ApiError`], the JSON refusal, and close codes.
//! - [`routes`]: the router, upgrade dispatch, health and readiness.
//! - [`session`]: the socket loop of one y-websocket session.
//! - [`lifecycle`]: [`Lifecycle`], draining state shared with the server.
//! - [`limits`]: connection counts, upgrade and update rates.

pub mod api;
pub mod auth;
pub mod config;
pub mod editor;
pub mod error;
pub mod hocuspocus;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod session;

pub use config::GatewayConfig;
pub use error::ApiError;
pub use lifecycle::Lifecycle;
pub use metrics::Metrics;
pub use routes::{AppState, metrics_router, router};
