//! Your own permission service (`--auth-webhook-url`): before an upgrade,
//! for each Hocuspocus document, and for the REST API's document routes,
//! Weft asks it
//!
//! ```json
//! POST {"doc":"team-a/notes","token":"...","headers":{"cookie":"..."},"remote":"203.0.113.7"}
//! ```
//!
//! and it answers `{"access":"rw"|"r"|"none","sub":"alice","ttl_s":60}`.
//! The answer is cached for `ttl_s` seconds (at most [`MAX_TTL`]; absent or
//! 0: not cached) by document, token and `Cookie` header. A service that
//! does not answer within `--auth-webhook-timeout`, answers anything but a
//! 2xx, or answers something else than that JSON makes the request fail
//! with 503 and `Retry-After`: never open access.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

use super::grant::Access;
use super::https::json_answer;
use super::jwks::error_chain;
use super::verifier::AuthError;

/// The longest an answer is cached, whatever its `ttl_s`.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// Answers cached at once; when full, expired ones are dropped, and if none
/// was, the cache starts over (a burst of distinct tokens).
const MAX_CACHED: usize = 10_000;

/// Headers sent to the service at most (the first ones of the request).
const MAX_HEADERS: usize = 64;

/// Where the service is.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `--auth-webhook-url`.
    pub url: reqwest::Url,
    /// A client with the `--auth-webhook-timeout` on each request.
    pub client: reqwest::Client,
}

/// The service's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None` for `"none"`.
    pub access: Option<Access>,
    /// Who the service says the caller is; for logs.
    pub sub: Option<String>,
}

#[derive(Serialize)]
struct Ask<'a> {
    doc: &'a str,
    token: Option<&'a str>,
    headers: BTreeMap<&'a str, String>,
    remote: String,
}

#[derive(Deserialize)]
struct Answer {
    access: String,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    ttl_s: u64,
}

#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    doc: String,
    token: Option<String>,
    cookie: Option<Vec<u8>>,
}

/// The permission service's client and its cache.
pub struct Webhook {
    config: WebhookConfig,
    cache: Mutex<HashMap<CacheKey, (Decision, Instant)>>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.config.url.as_str())
            .field("cached", &self.cache.lock().len())
            .finish()
    }
}

impl Webhook {
    /// A client of the service at `config.url`.
    pub fn new(config: WebhookConfig) -> Self {
        Self {
            config,
            cache: Mutex::default(),
        }
    }

    /// The service's decision for `doc`, cached or asked now.
    pub async fn decide(
        &self,
        doc: &str,
        token: Option<&str>,
        headers: &HeaderMap,
        remote: Option<IpAddr>,
    ) -> Result<Decision, AuthError> {
        let key = CacheKey {
            doc: doc.to_owned(),
            token: token.map(str::to_owned),
            cookie: headers.get(COOKIE).map(|value| value.as_bytes().to_vec()),
        };
        let now = Instant::now();
        if let Some((decision, until)) = self.cache.lock().get(&key)
            && *until > now
        {
            return Ok(decision.clone());
        }
        let ask = Ask {
            doc,
            token,
            headers: headers
                .iter()
                .take(MAX_HEADERS)
                .map(|(name, value)| {
                    (
                        name.as_str(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            remote: remote.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        let answer: Answer = json_answer(self.config.client.post(self.config.url.clone()).json(&ask))
            .await
            .map_err(|error| {
                warn!(error = %error_chain(&error), url = %self.config.url, "the permission service did not answer; refusing with 503");
                AuthError::Unavailable
            })?;
        let access = match answer.access.as_str() {
            "rw" => Some(Access::ReadWrite),
            "r" => Some(Access::Read),
            "none" => None,
            other => {
                warn!(
                    access = other,
                    "the permission service answered an access that is not rw, r or none; refusing with 503"
                );
                return Err(AuthError::Unavailable);
            }
        };
        let decision = Decision {
            access,
            sub: answer.sub,
        };
        let ttl = Duration::from_secs(answer.ttl_s).min(MAX_TTL);
        if !ttl.is_zero() {
            let mut cache = self.cache.lock();
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, (decision.clone(), now + ttl));
        }
        Ok(decision)
    }
}
