//! The flags of identity providers (JWKS), token checks, and a permission
//! service.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::duration::parse_duration;

/// Identity providers and permission services. With `--auth-jwks-url` or
/// `--auth-webhook-url` set, `--auth-jwt-secret` and `--auth-jwt-public-key`
/// must not be.
#[derive(Debug, Args)]
pub struct IdpArgs {
    /// Verify JWTs with the keys of this JWKS URL (an identity provider's
    /// `jwks_uri`), by `kid`. https, or plain http to a loopback address.
    #[arg(long, env = "WEFT_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// How often the key set is fetched again (a token naming an unknown
    /// `kid` also fetches it, at most every 30 s).
    #[arg(long, env = "WEFT_AUTH_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub auth_jwks_refresh: Duration,

    /// A PEM file of CA certificates trusted for `--auth-jwks-url`, besides
    /// the system's (which `SSL_CERT_FILE` / `SSL_CERT_DIR` also set).
    #[arg(long, env = "WEFT_AUTH_JWKS_CA")]
    pub auth_jwks_ca: Option<PathBuf>,

    /// Tokens must carry this `iss` (exactly).
    #[arg(long, env = "WEFT_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// Tokens must name one of these in `aud` (repeatable; comma-separated
    /// in the variable). Unset: tokens with an `aud` are refused.
    #[arg(long, env = "WEFT_AUTH_AUDIENCE", value_delimiter = ',')]
    pub auth_audience: Vec<String>,

    /// The claim holding the document grants (glob to "r" or "rw").
    #[arg(long, env = "WEFT_AUTH_DOCS_CLAIM", default_value = "docs")]
    pub auth_docs_claim: String,

    /// The claim holding the admin flag (JSON true).
    #[arg(long, env = "WEFT_AUTH_ADMIN_CLAIM", default_value = "admin")]
    pub auth_admin_claim: String,

    /// Ask this permission service before each upgrade, Hocuspocus document
    /// and REST document request. https, or plain http to a loopback
    /// address.
    #[arg(long, env = "WEFT_AUTH_WEBHOOK_URL")]
    pub auth_webhook_url: Option<String>,

    /// The permission service must answer within this; else 503.
    #[arg(long, env = "WEFT_AUTH_WEBHOOK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub auth_webhook_timeout: Duration,

    /// A PEM file of CA certificates trusted for `--auth-webhook-url`,
    /// besides the system's.
    #[arg(long, env = "WEFT_AUTH_WEBHOOK_CA")]
    pub auth_webhook_ca: Option<PathBuf>,
}
