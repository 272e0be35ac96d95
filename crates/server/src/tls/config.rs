//! The TLS flags and the validated [`TlsConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::keys;

/// Serving TLS.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) to serve `wss://` and `https://`
    /// on `--listen`. Needs `--tls-key`. Unset: plain `ws://` and `http://`.
    #[arg(long, env = "WEFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "WEFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for a change;
    /// a changed pair is loaded for new connections (open sessions stay).
    #[arg(long, env = "WEFT_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub tls_reload_interval: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (examples: 5s, 1m)"))
}

/// The validated TLS settings of a node.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `--tls-reload-interval`.
    pub reload_interval: Duration,
}

/// Shortest `--tls-reload-interval`: each check reads two files' metadata.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

impl TlsConfig {
    /// `None` without `--tls-cert`; otherwise the settings, once the pair
    /// was read and matched (so a bad file fails before anything listens).
    pub fn from_args(args: &TlsArgs) -> anyhow::Result<Option<Self>> {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            return Ok(None);
        };
        if args.tls_reload_interval < MIN_RELOAD_INTERVAL {
            anyhow::bail!(
                "--tls-reload-interval / WEFT_TLS_RELOAD_INTERVAL must be at least {MIN_RELOAD_INTERVAL:?}"
            );
        }
        keys::load(cert, key)?;
        Ok(Some(Self {
            cert: cert.clone(),
            key: key.clone(),
            reload_interval: args.tls_reload_interval,
        }))
    }
}
