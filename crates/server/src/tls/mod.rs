//! `wss://` and `https://` served by the node itself (`--tls-cert`,
//! `--tls-key`), with rustls on the ring provider.
//!
//! # Layout
//!
//! - [`config`]: the flags and the validated [`TlsConfig`];
//! - [`keys`]: reading a PEM certificate chain and private key into a
//!   rustls `CertifiedKey`, with errors that name the flag;
//! - [`reload`]: the resolver the handshakes ask for the current key, and
//!   the task that reloads it when the files change;
//! - [`listener`]: an `axum::serve` listener that accepts TCP, runs the
//!   handshakes concurrently (bounded, with a timeout) and yields finished
//!   TLS streams.
//!
//! A reload only changes what new handshakes present: open sessions keep
//! the connection (and the key) they were established with.

pub mod config;
pub mod keys;
pub mod listener;
pub mod reload;

pub use config::{TlsArgs, TlsConfig};
pub use listener::TlsListener;
pub use reload::CertificateStore;
