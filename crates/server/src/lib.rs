//! Weft's server: a node (`weft serve`) and a persistence worker
//! (`weft persist`) as libraries, and the command line that configures
//! them. The `weft` binary (`src/main.rs`) parses the command line, sets up
//! logging, binds the listeners, starts one of the two and stops it on
//! SIGTERM or ctrl-c; a test does the same on `127.0.0.1:0`.
//!
//! ```no_run
//! # async fn example(args: weft_server::cli::ServeArgs) -> anyhow::Result<()> {
//! use weft_server::{Listeners, Node, NodeConfig};
//!
//! let config = NodeConfig::from_args(&args)?;
//! let node = Node::start(config, Listeners::bind(&args).await?).await?;
//! weft_server::shutdown::signal().await?;
//! node.shutdown(args.shutdown_grace).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`cli`]: the flags and their `WEFT_*` twins.
//! - [`config`]: from the flags to a node's typed, validated settings.
//! - [`listen`]: the listeners, bound before the node starts.
//! - [`idp`]: the authenticator: static keys, identity providers (JWKS),
//!   a permission service.
//! - [`http`]: the HTTP server: deadlines and caps for connections that
//!   have not upgraded.
//! - [`ownership`]: a cluster of owners (`--cluster-mode ownership`): the
//!   Kafka owners' group answering the gateway's routing questions.
//! - `revocations`: where revocations of tokens are kept: the embedded
//!   store, or the cluster's revocations topic.
//! - [`node`]: [`Node::start`], [`NodeHandle::shutdown`]: the drain in order.
//! - [`drain`]: the phases of a drain, watched (and held) by callers and
//!   tests.
//! - [`persist`]: the persistence worker, started and stopped the same way.
//! - [`shutdown`]: waiting for SIGTERM or ctrl-c.
//! - [`telemetry`]: logs and the OpenTelemetry trace exporter.
//! - [`serve`]: the main HTTP server on `--listen`, plain or TLS.
//! - [`tls`]: `wss://` and `https://` on `--listen`, the certificate
//!   reloaded when its files change.
//! - [`kafka_security`]: the Kafka TLS and SASL flags, the password read
//!   from a flag, its environment twin or a file.

pub mod cli;
pub mod config;
pub mod docs;
pub mod drain;
pub mod http;
pub mod idp;
pub mod kafka_security;
pub mod listen;
pub mod node;
pub mod ownership;
pub mod persist;
mod revocations;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod webhooks;

pub use config::NodeConfig;
pub use drain::{DrainHold, DrainPhase, DrainReport, DrainStep};
pub use listen::Listeners;
pub use node::{Node, NodeHandle};
pub use persist::{PersistConfig, Worker, WorkerHandle};
