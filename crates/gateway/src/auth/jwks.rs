//! An identity provider's key set (JWKS): keys by `kid`, fetched at
//! start-up, refreshed every `--auth-jwks-refresh`, and fetched again when
//! a token names an unknown `kid` (at most every [`ON_DEMAND_INTERVAL`]),
//! so a provider's key rotation is followed without a restart.
//!
//! A failed refresh keeps the keys already loaded (a provider that is down
//! for a moment does not lock everyone out) and is logged at WARN.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::jwk::Jwk;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::https::{FetchError, json_answer};
use super::policy::TokenPolicy;
use super::verifier::{AuthError, Claims, JwtVerifier};

/// An unknown `kid` makes Weft fetch the key set again at most this often,
/// so tokens with made-up `kid`s cannot make it hammer the provider.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(30);

/// Where the key set is and how it is kept.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// `--auth-jwks-url`, checked by [`super::https::check_url`].
    pub url: reqwest::Url,
    /// `--auth-jwks-refresh`.
    pub refresh: Duration,
    /// The client, with `--auth-jwks-ca` among its roots.
    pub client: reqwest::Client,
    /// Issuer, audiences, claim names.
    pub policy: TokenPolicy,
}

/// The keys of one fetch.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<JwtVerifier>>,
    /// Keys without a `kid`: usable only by a token without one, when the
    /// whole set has a single key.
    unnamed: Vec<Arc<JwtVerifier>>,
}

impl KeySet {
    fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    fn key_for(&self, kid: Option<&str>) -> Option<Arc<JwtVerifier>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.len() == 1 => self
                .unnamed
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }
}

/// The state of the fetches, for readiness and the on-demand limit.
#[derive(Default)]
struct Fetches {
    loaded: bool,
    last_error: Option<String>,
    last_on_demand: Option<Instant>,
}

/// A verifier whose keys come from a JWKS URL.
pub struct Jwks {
    config: JwksConfig,
    keys: RwLock<Arc<KeySet>>,
    fetches: Mutex<Fetches>,
    /// One fetch at a time; a token with an unknown `kid` that may not
    /// fetch waits for the fetch in progress, if any.
    fetching: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.config.url.as_str())
            .field("keys", &self.keys.read().len())
            .finish_non_exhaustive()
    }
}

/// The key set document.
#[derive(Deserialize)]
struct JwkSetDocument {
    keys: Vec<serde_json::Value>,
}

/// Why a key set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The fetch failed.
    #[error("fetch the key set")]
    Fetch(#[from] FetchError),
    /// The set holds no key Weft can verify with.
    #[error("the key set holds no RSA, EC or Ed25519 signing key")]
    NoKeys,
}

impl Jwks {
    /// A key set not loaded yet: see [`Jwks::load`].
    pub fn new(config: JwksConfig) -> Self {
        Self {
            config,
            keys: RwLock::default(),
            fetches: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetches the key set and, if it holds a usable key, puts it in place.
    /// Returns how many keys it holds.
    pub async fn load(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.fetching.lock().await;
        let loaded = self.fetch().await;
        let mut fetches = self.fetches.lock();
        match loaded {
            Ok(keys) => {
                let count = keys.len();
                *self.keys.write() = Arc::new(keys);
                fetches.loaded = true;
                fetches.last_error = None;
                Ok(count)
            }
            Err(error) => {
                fetches.last_error = Some(error_chain(&error));
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let document: JwkSetDocument =
            json_answer(self.config.client.get(self.config.url.clone())).await?;
        let mut keys = KeySet::default();
        for value in document.keys {
            let kid = value
                .get("kid")
                .and_then(|kid| kid.as_str())
                .map(str::to_owned);
            let verifier = serde_json::from_value::<Jwk>(value)
                .ok()
                .and_then(|jwk| JwtVerifier::from_jwk(&jwk).ok());
            let Some(verifier) = verifier else {
                debug!(kid = ?kid, "skipping a key of the key set that is not a usable signing key");
                continue;
            };
            let verifier = Arc::new(verifier.with_policy(&self.config.policy));
            match kid {
                Some(kid) => {
                    keys.by_kid.insert(kid, verifier);
                }
                None => keys.unnamed.push(verifier),
            }
        }
        if keys.len() == 0 {
            return Err(JwksError::NoKeys);
        }
        Ok(keys)
    }

    /// Verifies `token` with the key its `kid` names, fetching the set
    /// again first if the `kid` is unknown and the last such fetch was
    /// [`ON_DEMAND_INTERVAL`] ago or more.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::InvalidToken)?;
        let kid = header.kid.as_deref();
        if let Some(key) = self.keys.read().key_for(kid) {
            return key.verify(token);
        }
        if kid.is_some() {
            if self.may_fetch_on_demand() {
                info!(kid = ?kid, "a token names an unknown key: fetching the key set again");
                if let Err(error) = self.load().await {
                    warn!(error = %error_chain(&error), "could not fetch the key set again; keeping the keys loaded");
                }
            } else {
                // A fetch in progress may bring the key: wait for it.
                drop(self.fetching.lock().await);
            }
            if let Some(key) = self.keys.read().key_for(kid) {
                return key.verify(token);
            }
        }
        Err(AuthError::InvalidToken(
            JwtErrorKind::InvalidKeyFormat.into(),
        ))
    }

    fn may_fetch_on_demand(&self) -> bool {
        let mut fetches = self.fetches.lock();
        let now = Instant::now();
        if fetches
            .last_on_demand
            .is_some_and(|last| now.duration_since(last) < ON_DEMAND_INTERVAL)
        {
            return false;
        }
        fetches.last_on_demand = Some(now);
        true
    }

    /// Ready once a key set is loaded; else why not.
    pub fn check_ready(&self) -> Result<(), String> {
        let fetches = self.fetches.lock();
        if fetches.loaded {
            return Ok(());
        }
        Err(format!(
            "the identity provider's keys (--auth-jwks-url) are not loaded yet: {}",
            fetches.last_error.as_deref().unwrap_or("not fetched yet")
        ))
    }

    /// Fetches the set every `--auth-jwks-refresh` until `stop`.
    pub async fn refresh_until(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.config.refresh) => {}
            }
            match self.load().await {
                Ok(keys) => debug!(keys, "key set refreshed"),
                Err(error) => {
                    warn!(error = %error_chain(&error), url = %self.config.url, "could not refresh the key set; keeping the keys loaded");
                }
            }
        }
    }
}

/// A key set error with its causes, for a start-up message.
pub fn describe(error: &JwksError) -> String {
    error_chain(error)
}

/// An error and its sources, `a: b: c`, for logs and readiness.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
