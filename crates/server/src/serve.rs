//! The node's main HTTP server on `--listen`: plain, or TLS with
//! `--tls-cert` (see [`crate::tls`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::{CertificateStore, TlsConfig, TlsListener, keys};

/// The router with each connection's address (`ConnectInfo<SocketAddr>`).
pub type App = IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>;

/// Spawns the server of `app` on `listener` (on `tasks`, until `stop`):
/// TLS when `tls` is set, with its certificate reloaded when the files
/// change. Fails, naming the flag, if the certificate cannot be loaded.
pub fn spawn(
    listener: TcpListener,
    tls: Option<&TlsConfig>,
    app: App,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let Some(tls) = tls else {
        // Yjs frames are small and latency-bound: without TCP_NODELAY, Nagle's
        // algorithm and the peer's delayed ACK hold a frame back ~40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(error = %error, "set TCP_NODELAY");
            }
        });
        return Ok(tasks.spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        ));
    };
    let certificates = Arc::new(CertificateStore::new(keys::load(&tls.cert, &tls.key)?));
    tasks.spawn(certificates.clone().watch(tls.clone(), stop.clone()));
    let listener = TlsListener::start(listener, certificates, stop.clone(), tasks)
        .context("--tls-cert / WEFT_TLS_CERT: set up TLS")?
        // Only for the connection's address: axum provides `ConnectInfo`
        // for a `TapIo` of any listener. TLS streams get TCP_NODELAY
        // before their handshake (`TlsListener`).
        .tap_io(|_tls| {});
    Ok(tasks.spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    ))
}
