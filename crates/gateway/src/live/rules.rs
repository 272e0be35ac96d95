//! Revocation records and the one rule that decides whom they match.
//!
//! A revocation names a subject (`sub`), a token (`jti`), or both, and
//! optionally the documents it covers (`docs`, a glob of the `docs` claim's
//! syntax) and what is left of their access (`access`: `"r"` keeps reading,
//! `"none"`, the default, takes everything). It matches a token that has
//! every named field, that was issued (`iat`) at or before the second of the
//! revocation (a token without `iat` counts as issued before), while the
//! revocation lives: until `expires_at`, `--auth-max-token-lifetime` after
//! it was made, by when every token it could match has expired.

use serde::{Deserialize, Serialize};

use crate::auth::{Access, DocGrant};

use super::facts::TokenFacts;

/// Longest `sub` or `jti` a revocation may name.
pub(super) const MAX_NAME_BYTES: usize = 1024;

/// What a revocation leaves of the access it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokedAccess {
    /// Read-only.
    #[serde(rename = "r")]
    Read,
    /// Nothing: the session is closed.
    #[serde(rename = "none")]
    None,
}

/// A matching revocation's effect on a session, ordered by strength
/// (`ReadOnly < Closed`): of several, the strongest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// At most read-only.
    ReadOnly,
    /// No access.
    Closed,
}

impl Limit {
    /// `access` under this limit; `None`: no access is left.
    pub fn apply(self, access: Access) -> Option<Access> {
        match self {
            Self::ReadOnly => Some(access.min(Access::Read)),
            Self::Closed => None,
        }
    }
}

/// The body of `POST /api/revocations`. A field is given or absent: `null`
/// is refused, like an unknown field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// The subject whose tokens are revoked.
    #[serde(default, deserialize_with = "present")]
    pub sub: Option<String>,
    /// The token id revoked.
    #[serde(default, deserialize_with = "present")]
    pub jti: Option<String>,
    /// The documents covered (a glob); all of them when absent.
    #[serde(default, deserialize_with = "present")]
    pub docs: Option<String>,
    /// What is left of their access; nothing when absent.
    #[serde(default, deserialize_with = "present")]
    pub access: Option<RevokedAccess>,
}

/// A field that, when present, holds a value (not `null`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A revocation as stored in the log and listed by `GET /api/revocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Unique per revocation (the node that made it, and when).
    pub id: String,
    /// The subject, if named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The token id, if named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The documents covered (a glob); every document when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<String>,
    /// What is left of the covered access.
    pub access: RevokedAccess,
    /// When it was made, seconds since the Unix epoch; tokens issued at or
    /// before this second match.
    pub revoked_at: u64,
    /// When it ends, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl RevocationRequest {
    /// Checks the request: a `sub` or a `jti`, each 1 to 1024 bytes; a valid
    /// glob. The error says what is wrong, for a 400.
    pub fn validate(&self) -> Result<(), String> {
        if self.sub.is_none() && self.jti.is_none() {
            return Err("name a \"sub\" or a \"jti\" to revoke".to_owned());
        }
        for (field, value) in [("sub", &self.sub), ("jti", &self.jti)] {
            if let Some(value) = value
                && (value.is_empty() || value.len() > MAX_NAME_BYTES)
            {
                return Err(format!("\"{field}\" must be 1 to {MAX_NAME_BYTES} bytes"));
            }
        }
        if let Some(glob) = &self.docs {
            DocGrant::new(glob, Access::Read)
                .map_err(|_| "\"docs\" must be a glob of 1 to 2048 bytes".to_owned())?;
        }
        Ok(())
    }
}

/// A live revocation, its glob compiled.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) record: Revocation,
    /// `None`: every document.
    glob: Option<DocGrant>,
}

impl Rule {
    /// Compiles `record`'s glob; `None` if the record is not valid (a
    /// record written by a newer or a broken node is skipped, not trusted).
    pub(super) fn new(record: Revocation) -> Option<Self> {
        if record.sub.is_none() && record.jti.is_none() {
            return None;
        }
        let glob = match &record.docs {
            Some(glob) => Some(DocGrant::new(glob, Access::Read).ok()?),
            None => None,
        };
        Some(Self { record, glob })
    }

    /// Whether the revocation still lives at `now`.
    pub(super) fn live(&self, now: u64) -> bool {
        self.record.expires_at > now
    }

    /// Its effect on `token`'s access to `doc` at `now`, if it matches.
    pub(super) fn limit(&self, token: &TokenFacts, doc: &str, now: u64) -> Option<Limit> {
        let record = &self.record;
        let matches = self.live(now)
            && record.sub.as_ref().is_none_or(|sub| *sub == token.sub)
            && record
                .jti
                .as_ref()
                .is_none_or(|jti| token.jti.as_ref() == Some(jti))
            && token.iat.is_none_or(|iat| iat <= record.revoked_at)
            && self.glob.as_ref().is_none_or(|glob| glob.matches(doc));
        matches.then_some(match record.access {
            RevokedAccess::Read => Limit::ReadOnly,
            RevokedAccess::None => Limit::Closed,
        })
    }
}
