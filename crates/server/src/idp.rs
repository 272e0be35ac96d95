//! From the authentication flags to the node's [`Authenticator`]: a static
//! key, an identity provider's key set, or a permission service, with the
//! token checks (`--auth-issuer`, `--auth-audience`, claim names).
//!
//! Every setting is checked here, before anything listens; the key set is
//! fetched for the first time by [`load`] at the start of
//! [`crate::Node::start`], so an unreachable provider also stops the node
//! at start-up, naming `--auth-jwks-url`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weft_gateway::auth::https::{check_url, client};
use weft_gateway::auth::{
    Authenticator, Jwks, JwksConfig, JwtVerifier, TokenPolicy, Webhook, WebhookConfig,
};

use crate::cli::AuthArgs;

/// Each fetch of the key set must finish within this.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The refresh may not be shorter than this: a provider is not to be
/// polled in a loop.
const MIN_JWKS_REFRESH: Duration = Duration::from_secs(1);

/// Builds the authenticator the flags describe; `Open` if none.
pub fn authenticator(args: &AuthArgs) -> anyhow::Result<Authenticator> {
    let idp = &args.idp;
    let given = [
        args.auth_jwt_secret.is_some(),
        args.auth_jwt_public_key.is_some(),
        idp.auth_jwks_url.is_some(),
        idp.auth_webhook_url.is_some(),
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        bail!(
            "set at most one of --auth-jwt-secret, --auth-jwt-public-key, --auth-jwks-url and --auth-webhook-url"
        );
    }
    let policy = policy(args)?;
    if let Some(secret) = &args.auth_jwt_secret {
        let verifier = JwtVerifier::hs256(secret.as_bytes())
            .context("--auth-jwt-secret / WEFT_AUTH_JWT_SECRET")?;
        return Ok(Authenticator::Jwt(Arc::new(verifier.with_policy(&policy))));
    }
    if let Some(path) = &args.auth_jwt_public_key {
        let pem = std::fs::read(path).with_context(|| {
            format!(
                "--auth-jwt-public-key / WEFT_AUTH_JWT_PUBLIC_KEY: read {}",
                path.display()
            )
        })?;
        let verifier = JwtVerifier::from_public_key_pem(&pem).with_context(|| {
            format!(
                "--auth-jwt-public-key / WEFT_AUTH_JWT_PUBLIC_KEY: {}",
                path.display()
            )
        })?;
        return Ok(Authenticator::Jwt(Arc::new(verifier.with_policy(&policy))));
    }
    if let Some(url) = &idp.auth_jwks_url {
        let url = check_url(url).context("--auth-jwks-url / WEFT_AUTH_JWKS_URL")?;
        if idp.auth_jwks_refresh < MIN_JWKS_REFRESH {
            bail!("--auth-jwks-refresh / WEFT_AUTH_JWKS_REFRESH must be at least 1s");
        }
        let ca = read_ca(
            idp.auth_jwks_ca.as_deref(),
            "--auth-jwks-ca / WEFT_AUTH_JWKS_CA",
        )?;
        let client = client(ca.as_deref(), JWKS_FETCH_TIMEOUT)
            .context("--auth-jwks-ca / WEFT_AUTH_JWKS_CA")?;
        return Ok(Authenticator::Jwks(Arc::new(Jwks::new(JwksConfig {
            url,
            refresh: idp.auth_jwks_refresh,
            client,
            policy,
        }))));
    }
    if let Some(url) = &idp.auth_webhook_url {
        let url = check_url(url).context("--auth-webhook-url / WEFT_AUTH_WEBHOOK_URL")?;
        if idp.auth_webhook_timeout.is_zero() {
            bail!("--auth-webhook-timeout / WEFT_AUTH_WEBHOOK_TIMEOUT must be greater than zero");
        }
        let ca = read_ca(
            idp.auth_webhook_ca.as_deref(),
            "--auth-webhook-ca / WEFT_AUTH_WEBHOOK_CA",
        )?;
        let client = client(ca.as_deref(), idp.auth_webhook_timeout)
            .context("--auth-webhook-ca / WEFT_AUTH_WEBHOOK_CA")?;
        return Ok(Authenticator::Webhook(Arc::new(Webhook::new(
            WebhookConfig { url, client },
        ))));
    }
    if idp.auth_issuer.is_some() || !idp.auth_audience.is_empty() {
        bail!(
            "--auth-issuer and --auth-audience check tokens: set --auth-jwks-url, --auth-jwt-secret or --auth-jwt-public-key too"
        );
    }
    Ok(Authenticator::Open)
}

fn policy(args: &AuthArgs) -> anyhow::Result<TokenPolicy> {
    let idp = &args.idp;
    let issuer = idp.auth_issuer.as_deref().map(str::trim);
    if issuer.is_some_and(str::is_empty) {
        bail!("--auth-issuer / WEFT_AUTH_ISSUER is empty");
    }
    let audiences: Vec<String> = idp
        .auth_audience
        .iter()
        .map(|audience| audience.trim().to_owned())
        .filter(|audience| !audience.is_empty())
        .collect();
    if idp.auth_docs_claim.trim().is_empty() {
        bail!("--auth-docs-claim / WEFT_AUTH_DOCS_CLAIM is empty");
    }
    if idp.auth_admin_claim.trim().is_empty() {
        bail!("--auth-admin-claim / WEFT_AUTH_ADMIN_CLAIM is empty");
    }
    Ok(TokenPolicy {
        issuer: issuer.map(str::to_owned),
        audiences,
        docs_claim: idp.auth_docs_claim.trim().to_owned(),
        admin_claim: idp.auth_admin_claim.trim().to_owned(),
    })
}

fn read_ca(path: Option<&Path>, setting: &str) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|path| {
        std::fs::read(path).with_context(|| format!("{setting}: read {}", path.display()))
    })
    .transpose()
}

/// Fetches an identity provider's key set for the first time; fails,
/// naming the setting, if it cannot be had.
pub async fn load(auth: &Authenticator) -> anyhow::Result<()> {
    if let Authenticator::Jwks(keys) = auth {
        let count = keys
            .load()
            .await
            .map_err(|error| anyhow::anyhow!(weft_gateway::auth::jwks::describe(&error)))
            .context("--auth-jwks-url / WEFT_AUTH_JWKS_URL: load the key set")?;
        tracing::info!(keys = count, "identity provider's key set loaded");
    }
    Ok(())
}
