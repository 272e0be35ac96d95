//! What a session was granted, and by which token: checked at the upgrade,
//! again on an in-band refresh, and against every new revocation.

use std::sync::Arc;

use crate::auth::{Access, AuthError, Authenticator, RequestContext};

use super::facts::TokenFacts;
use super::list::RevocationList;

/// What one session may do, and the token that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// Read or read-write.
    pub access: Access,
    /// The token's facts; `None` without authentication (open mode).
    /// Shared: every idle session holds one.
    pub token: Option<Arc<TokenFacts>>,
}

impl SessionGrant {
    /// Verifies `token` for `doc` and applies the node's revocations: the
    /// token's access, narrowed by every revocation that matches it, or
    /// [`AuthError::Revoked`] if one takes all access away (and
    /// [`AuthError::Forbidden`] if the token grants nothing to begin with).
    /// Also who the caller is, for history: the token's `sub` (the
    /// permission service's), or [`weft_sync::ANONYMOUS`].
    ///
    /// A permission service (`--auth-webhook-url`) decides without a token
    /// Weft can read, so its sessions carry no token facts: revocations and
    /// expiry do not apply to them (the service's own answer does, per
    /// `ttl_s`).
    pub async fn check(
        auth: &Authenticator,
        revocations: &RevocationList,
        token: Option<&str>,
        doc: &str,
        now: u64,
        context: &RequestContext,
    ) -> Result<(Self, Arc<str>), AuthError> {
        let claims = match auth {
            Authenticator::Open => {
                let grant = Self {
                    access: Access::ReadWrite,
                    token: None,
                };
                return Ok((grant, Arc::from(weft_sync::ANONYMOUS)));
            }
            Authenticator::Webhook(_) => {
                let (access, author) = auth.authorize_as(token, doc, context).await?;
                return Ok((
                    Self {
                        access,
                        token: None,
                    },
                    author,
                ));
            }
            Authenticator::Jwt(verifier) => {
                verifier.verify(token.ok_or(AuthError::MissingToken)?)?
            }
            Authenticator::Jwks(keys) => keys.verify(token.ok_or(AuthError::MissingToken)?).await?,
        };
        let access = claims.access_to(doc).ok_or(AuthError::Forbidden)?;
        let facts = TokenFacts::of(&claims);
        let access = revocations
            .limit(&facts, doc, now)
            .map_or(Some(access), |limit| limit.apply(access))
            .ok_or(AuthError::Revoked)?;
        let author = Arc::from(claims.sub);
        Ok((
            Self {
                access,
                token: Some(Arc::new(facts)),
            },
            author,
        ))
    }

    /// This grant after the revocations in `list`: `None` when they take all
    /// access away.
    pub fn revised(&self, list: &RevocationList, doc: &str, now: u64) -> Option<Access> {
        let Some(facts) = &self.token else {
            return Some(self.access);
        };
        match list.limit(facts, doc, now) {
            Some(limit) => limit.apply(self.access),
            None => Some(self.access),
        }
    }
}
