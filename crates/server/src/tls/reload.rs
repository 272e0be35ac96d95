//! The key new handshakes present, and its reload when the files change.
//!
//! [`CertificateStore`] is the rustls certificate resolver: every handshake
//! takes the current `CertifiedKey` under a read lock held for one `Arc`
//! clone. [`CertificateStore::watch`] checks the files' modification time
//! and length every `--tls-reload-interval` and swaps in a pair that
//! changed and loads; a pair that does not load (a half-written file, a key
//! that does not match yet) is logged and the previous one kept, and is
//! tried again at the next change. Polling rather than inotify: Kubernetes
//! updates a mounted Secret by swapping a symlink, which a watch on the
//! file itself misses, while its metadata (symlinks followed) changes.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::TlsConfig;
use super::keys;

/// The certificate and key handshakes present now.
#[derive(Debug)]
pub struct CertificateStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateStore {
    /// A store presenting `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// Presents `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write() = key;
    }

    /// The certificate chain presented now (leaf first).
    pub fn chain(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        self.current.read().cert.clone()
    }

    /// Checks the files every `config.reload_interval` until `stop`, and
    /// replaces the key when they changed and load.
    pub async fn watch(self: Arc<Self>, config: TlsConfig, stop: CancellationToken) {
        let mut seen = fingerprint(&config.cert, &config.key).await;
        let mut ticks = tokio::time::interval(config.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = fingerprint(&config.cert, &config.key).await;
            if now == seen {
                continue;
            }
            seen = now;
            let (cert, key) = (config.cert.clone(), config.key.clone());
            match tokio::task::spawn_blocking(move || keys::load(&cert, &key)).await {
                Ok(Ok(loaded)) => {
                    self.replace(loaded);
                    info!(cert = %config.cert.display(), "TLS certificate reloaded");
                }
                Ok(Err(error)) => {
                    warn!(
                        error = format!("{error:#}"),
                        "TLS certificate not reloaded; the previous one stays"
                    );
                }
                Err(error) => warn!(error = %error, "TLS certificate reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// What says a file changed: its modification time and length (`None`
/// while it cannot be read).
type FileStamp = Option<(SystemTime, u64)>;

async fn fingerprint(cert: &Path, key: &Path) -> (FileStamp, FileStamp) {
    (stamp(cert).await, stamp(key).await)
}

async fn stamp(path: &Path) -> FileStamp {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}
