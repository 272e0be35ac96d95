//! The sockets a node serves on, bound before it starts, so a caller (the
//! binary, or a test on `127.0.0.1:0`) owns the addresses.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};

use crate::cli::ServeArgs;

/// A node's listeners.
#[derive(Debug)]
pub struct Listeners {
    /// WebSocket upgrades, the REST API, health, readiness, `/metrics`.
    pub http: TcpListener,
    /// `/metrics` alone, on an address of its own (`--metrics-listen`).
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `--listen` and, if set, `--metrics-listen`.
    pub async fn bind(args: &ServeArgs) -> anyhow::Result<Self> {
        let http = bind_listener(args.listen)
            .with_context(|| format!("--listen / WEFT_LISTEN {}: bind", args.listen))?;
        let metrics = match args.metrics_listen {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!("--metrics-listen / WEFT_METRICS_LISTEN {address}: bind")
            })?),
            None => None,
        };
        Ok(Self { http, metrics })
    }
}

/// Connections the kernel queues for the WebSocket listener before they
/// are accepted (capped by `net.core.somaxconn`, 4096 on recent Linux).
/// When a node dies, its clients all reconnect to the others at once: with
/// tokio's default of 1,024, a storm of 1,000 reconnects overflowed the
/// queue of the node taking them over, and each dropped connection waited
/// for TCP's 1 s SYN retry.
pub const LISTEN_BACKLOG: u32 = 8192;

/// A listener on `address`, as `TcpListener::bind` makes one (address
/// reuse on Unix) but with [`LISTEN_BACKLOG`].
pub fn bind_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
