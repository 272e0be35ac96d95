//! The node's main HTTP server on `--listen`: plain, or TLS with
//! `--tls-cert` (see [`crate::tls`]). Either way the connections are served
//! by [`crate::http::serve`], with its deadlines and caps on connections
//! that have not upgraded.

use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{HttpLimits, HttpMetrics};
use crate::tls::{CertificateStore, TlsConfig, TlsListener, keys};

/// The HTTP server's router, limits and metrics.
#[derive(Debug)]
pub struct App {
    /// The gateway's routes.
    pub router: axum::Router,
    /// Deadlines and caps for connections not yet upgraded.
    pub limits: HttpLimits,
    /// Their metrics.
    pub metrics: HttpMetrics,
}

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
        return Ok(tasks.spawn(crate::http::serve_tcp(
            listener,
            app.router,
            app.limits,
            app.metrics,
            stop.clone(),
        )));
    };
    let certificates = Arc::new(CertificateStore::new(keys::load(&tls.cert, &tls.key)?));
    tasks.spawn(certificates.clone().watch(tls.clone(), stop.clone()));
    let listener = TlsListener::start(listener, certificates, stop.clone(), tasks)
        .context("--tls-cert / WEFT_TLS_CERT: set up TLS")?
        // TLS streams get TCP_NODELAY before their handshake
        // (`TlsListener`).
        .tap_io(|_tls| {});
    Ok(tasks.spawn(crate::http::serve(
        listener,
        app.router,
        app.limits,
        app.metrics,
        stop.clone(),
    )))
}
