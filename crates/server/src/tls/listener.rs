//! An `axum::serve` listener that speaks TLS.
//!
//! `axum::serve` calls `accept` one connection at a time, so a handshake
//! done inside `accept` would let one slow client stall every other. Here
//! an accept task takes TCP connections and runs each handshake in a task
//! of its own, at most [`MAX_HANDSHAKES`] at once and each within
//! [`HANDSHAKE_TIMEOUT`]; finished streams wait on a bounded channel for
//! `accept`. When the channel is full, handshakes wait, and when the
//! permits run out the accept task stops accepting: the kernel's backlog
//! holds the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::reload::CertificateStore;

/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 1024;
/// A client that has not finished its handshake within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for `axum::serve` to take them.
const READY_QUEUE: usize = 256;
/// Pause after a failed `accept` (out of file descriptors, say), as
/// `axum::serve` does for plain TCP.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// TLS connections ready for HTTP.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (on `tasks`, until `stop`); handshakes
    /// present what `certificates` holds at the time.
    pub fn start(
        tcp: TcpListener,
        certificates: Arc<CertificateStore>,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(server_config));
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let handshakes = tasks.clone();
        tasks.spawn(accept_loop(tcp, acceptor, ready_tx, stop, handshakes));
        Ok(Self { ready, local_addr })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(error = %error, "accept a TLS connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Yjs frames are small and latency-bound (see the plain listener).
        if let Err(error) = stream.set_nodelay(true) {
            debug!(error = %error, "set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = handshake => outcome,
            };
            drop(permit);
            match outcome {
                Ok(Ok(tls)) => {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _sent = ready.send((tls, peer)) => {}
                    }
                }
                Ok(Err(error)) => debug!(%peer, error = %error, "TLS handshake failed"),
                Err(_elapsed) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task stopped (the node is stopping): the server's
            // graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
