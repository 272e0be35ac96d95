//! Who may open which document: JWT verification before the upgrade.
//!
//! The token is checked, and the document's access decided, *before* the
//! `101 Switching Protocols`, so a refused client gets a 401 or 403 with a
//! JSON body it can act on instead of a socket that closes for no stated
//! reason. With a static key ([`Authenticator::Jwt`]) or an identity
//! provider's key set ([`Authenticator::Jwks`], [`jwks`]), verification is
//! CPU work on data the request carries; the key set is fetched in the
//! background, and per request only when a token names an unknown `kid`
//! (at most every 30 s). A permission service ([`Authenticator::Webhook`],
//! [`webhook`]) is asked per request unless its answer is cached, bounded by
//! its timeout, and fails closed (503).
//!
//! # Where the token comes from
//!
//! Browsers cannot set headers on a WebSocket, so y-websocket clients send
//! the token as a query parameter (`params: { token }` in its options,
//! arriving as `?token=...`). Other clients may send
//! `Authorization: Bearer <token>`; when both are present the header wins.
//! See [`token_from_request`]. A query string is a credential here: whoever
//! logs request URIs logs tokens.
//!
//! # Keys and algorithms
//!
//! A [`JwtVerifier`] holds one key and accepts exactly one algorithm, chosen
//! by that key: HS256 for a shared secret, RS256 for an RSA public key, ES256
//! for an EC P-256 public key, EdDSA for an Ed25519 public key. The token's
//! own `alg` header is never trusted to pick the algorithm, so neither
//! `alg: none` nor an HS256 token "signed" with the bytes of a public key
//! (algorithm confusion) gets through.
//!
//! # Claims
//!
//! `sub` (a non-empty string) and `exp` are required; `nbf` is checked when
//! present. Both times get [`LEEWAY_SECS`] of slack. `docs` maps document
//! globs to `"rw"` (read-write) or `"r"` (read-only):
//!
//! ```json
//! { "sub": "alice", "exp": 1767225600, "docs": { "team-a/**": "rw", "public/*": "r" } }
//! ```
//!
//! `admin: true` grants read-write on every document and the REST API's
//! administrative routes (deleting a document).
//!
//! A token without `docs` is valid but grants nothing. Any other value than
//! `"r"` or `"rw"` makes the whole token invalid rather than being skipped,
//! so an issuer's typo is seen at once instead of looking like a missing
//! grant. When several globs match a document, the widest access wins
//! (`rw` over `r`). Without a configured audience, a token carrying an
//! `aud` claim is refused: RFC 7519 says a recipient that is not named in
//! `aud` must reject the token.
//!
//! # Document globs
//!
//! Document names may contain `/`, which globs treat as a separator:
//!
//! - `*` matches any run of characters (possibly empty) except `/`;
//! - `**` matches any run of characters (possibly empty), `/` included;
//! - `?` matches exactly one character except `/`;
//! - every other character matches itself: there are no classes, braces or
//!   escapes, so a glob without wildcards matches exactly that name.
//!
//! So `team-a/*` grants `team-a/notes` but not `team-a/x/y`; `team-a/**`
//! grants both (and `team-a/` too, but not `team-a`); `**` grants every
//! document. A glob matches the whole decoded document name, never a part.
//!
//! # Issuer, audience, claim names
//!
//! A [`TokenPolicy`] (from `--auth-issuer`, `--auth-audience`,
//! `--auth-docs-claim`, `--auth-admin-claim`) requires `iss` and `aud` when
//! set (an `aud` is refused when no audience is configured, as above) and
//! names the claims the grants and the admin flag are read from.

mod grant;
pub mod https;
pub mod jwks;
mod policy;
mod verifier;
pub mod webhook;

use std::net::IpAddr;
use std::sync::Arc;

pub use self::grant::{Access, DocGrant};
pub use self::jwks::{Jwks, JwksConfig};
pub use self::policy::{DEFAULT_ADMIN_CLAIM, DEFAULT_DOCS_CLAIM, TokenPolicy};
pub use self::verifier::{AuthError, AuthSetupError, Claims, JwtVerifier, LEEWAY_SECS};
pub use self::webhook::{Webhook, WebhookConfig};
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// How upgrades are authenticated.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// No authentication: everyone may read and write every document. For
    /// development and for deployments that authenticate in front of Weft.
    Open,
    /// A JWT is required and decides which documents may be opened.
    Jwt(Arc<JwtVerifier>),
    /// A JWT signed by one of an identity provider's keys (JWKS).
    Jwks(Arc<Jwks>),
    /// A permission service decides (`--auth-webhook-url`).
    Webhook(Arc<Webhook>),
}

/// What a permission service is told about a request besides the document
/// and the token. Empty unless the authenticator is a webhook.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The request's headers (the upgrade's, for a Hocuspocus socket).
    pub headers: HeaderMap,
    /// The peer's address.
    pub remote: Option<IpAddr>,
}

impl Authenticator {
    /// Decides access for `doc` given the token found in the request
    /// (`None` = no token). [`Authenticator::Open`] grants
    /// [`Access::ReadWrite`] whatever the token, so turning authentication
    /// off never breaks clients that still send one.
    pub async fn authorize(
        &self,
        token: Option<&str>,
        doc: &str,
        context: &RequestContext,
    ) -> Result<Access, AuthError> {
        self.authorize_as(token, doc, context)
            .await
            .map(|(access, _)| access)
    }

    /// [`Authenticator::authorize`], also naming who the caller is, for
    /// history: the token's `sub` (the permission service's `sub`), or
    /// [`weft_sync::ANONYMOUS`] when nothing names one.
    pub async fn authorize_as(
        &self,
        token: Option<&str>,
        doc: &str,
        context: &RequestContext,
    ) -> Result<(Access, Arc<str>), AuthError> {
        let named = |claims: Claims| {
            let access = claims.access_to(doc).ok_or(AuthError::Forbidden)?;
            Ok((access, Arc::from(claims.sub)))
        };
        match self {
            Self::Open => Ok((Access::ReadWrite, Arc::from(weft_sync::ANONYMOUS))),
            Self::Jwt(verifier) => named(verifier.verify(token.ok_or(AuthError::MissingToken)?)?),
            Self::Jwks(keys) => named(keys.verify(token.ok_or(AuthError::MissingToken)?).await?),
            Self::Webhook(service) => {
                let decision = service
                    .decide(doc, token, &context.headers, context.remote)
                    .await?;
                let access = decision.access.ok_or(AuthError::Forbidden)?;
                let author = decision
                    .sub
                    .map_or_else(|| Arc::from(weft_sync::ANONYMOUS), Arc::from);
                Ok((access, author))
            }
        }
    }

    /// Whether upgrades are let through without a token.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    /// The context a permission service needs from a request; empty (no
    /// copy of the headers) for the other authenticators.
    pub fn context(&self, headers: &HeaderMap, remote: IpAddr) -> RequestContext {
        match self {
            Self::Webhook(_) => RequestContext {
                headers: headers.clone(),
                remote: Some(remote),
            },
            _ => RequestContext::default(),
        }
    }

    /// Whether the authenticator can decide: an identity provider's keys
    /// must be loaded.
    pub fn check_ready(&self) -> Result<(), String> {
        match self {
            Self::Jwks(keys) => keys.check_ready(),
            _ => Ok(()),
        }
    }

    /// Who a REST API request is, from its bearer token (`None` = none).
    /// [`Authenticator::Open`] lets everyone in as an administrator, like
    /// the WebSocket path lets everyone read and write. A permission
    /// service is asked about `doc` (the route's document); without one
    /// the caller has access to nothing.
    pub async fn api_caller(
        &self,
        token: Option<&str>,
        doc: Option<&str>,
        context: &RequestContext,
    ) -> Result<ApiCaller, AuthError> {
        match self {
            Self::Open => Ok(ApiCaller::Open),
            Self::Jwt(verifier) => {
                let claims = verifier.verify(token.ok_or(AuthError::MissingToken)?)?;
                Ok(ApiCaller::Token(claims))
            }
            Self::Jwks(keys) => {
                let claims = keys.verify(token.ok_or(AuthError::MissingToken)?).await?;
                Ok(ApiCaller::Token(claims))
            }
            Self::Webhook(service) => {
                let Some(doc) = doc else {
                    return Ok(ApiCaller::Decided {
                        doc: String::new(),
                        access: None,
                    });
                };
                let decision = service
                    .decide(doc, token, &context.headers, context.remote)
                    .await?;
                Ok(ApiCaller::Decided {
                    doc: doc.to_owned(),
                    access: decision.access,
                })
            }
        }
    }
}

/// Who calls the REST API.
#[derive(Debug, Clone)]
pub enum ApiCaller {
    /// No authentication is configured: everything is allowed.
    Open,
    /// A verified token.
    Token(Claims),
    /// The permission service's decision on one document.
    Decided {
        /// The document asked about (empty: none).
        doc: String,
        /// The access granted to it.
        access: Option<Access>,
    },
}

impl ApiCaller {
    /// The access the caller has to `doc`.
    pub fn access_to(&self, doc: &str) -> Option<Access> {
        match self {
            Self::Open => Some(Access::ReadWrite),
            Self::Token(claims) => claims.access_to(doc),
            Self::Decided {
                doc: decided,
                access,
            } => access.filter(|_| decided == doc),
        }
    }

    /// Who the caller is, for history: the token's `sub`, or
    /// [`weft_sync::ANONYMOUS`] without authentication.
    pub fn author(&self) -> Arc<str> {
        match self {
            Self::Open => Arc::from(weft_sync::ANONYMOUS),
            Self::Token(claims) => Arc::from(claims.sub.as_str()),
            Self::Decided { .. } => Arc::from(weft_sync::ANONYMOUS),
        }
    }

    /// Whether the caller may use the administrative routes.
    pub fn is_admin(&self) -> bool {
        match self {
            Self::Open => true,
            Self::Token(claims) => claims.admin,
            Self::Decided { .. } => false,
        }
    }
}

/// The token a request carries: the `Authorization: Bearer <token>` header
/// if it has one, otherwise the first non-empty `token` query parameter,
/// form-decoded (`+` is a space, as in `application/x-www-form-urlencoded`;
/// what y-websocket's `params` option sends). `None` if neither.
///
/// A header with another scheme (`Basic ...`) is not a bearer token and
/// does not hide the query parameter. A query value that is not UTF-8 once
/// decoded is returned lossily, so the client hears "invalid token" rather
/// than "missing token".
pub fn token_from_request(parts: &Parts) -> Option<String> {
    bearer_token(parts).or_else(|| query_token(parts))
}

fn bearer_token(parts: &Parts) -> Option<String> {
    bearer_token_of(&parts.headers)
}

/// The `Authorization: Bearer <token>` of a request's headers, if any (the
/// REST API takes its token only there).
pub fn bearer_token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
        })
}

fn query_token(parts: &Parts) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).ok()?;
    pairs
        .into_iter()
        .find_map(|(key, value)| (key == "token" && !value.is_empty()).then_some(value))
}

#[cfg(test)]
mod tests;
