//! The facts of a verified token that matter while its session is open,
//! and the clock they are compared with. A leaf of `live`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::{Claims, LEEWAY_SECS};

/// Seconds since the Unix epoch, now (0 for a clock before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The facts of a verified token that matter while its session is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// `sub`.
    pub sub: String,
    /// `jti`, if any.
    pub jti: Option<String>,
    /// `iat`, if any (a token without one counts as issued before every
    /// revocation that names it).
    pub iat: Option<u64>,
    /// `exp`, seconds since the Unix epoch.
    pub exp: u64,
}

impl TokenFacts {
    /// The facts of verified `claims`.
    pub fn of(claims: &Claims) -> Self {
        Self {
            sub: claims.sub.clone(),
            jti: claims.jti.clone(),
            iat: claims.iat,
            exp: claims.exp,
        }
    }

    /// When the session must close: `exp` plus the leeway, in seconds since
    /// the Unix epoch.
    pub fn closes_at(&self) -> u64 {
        self.exp.saturating_add(LEEWAY_SECS)
    }

    /// How long from `now` (Unix seconds) until the session must close.
    pub fn remaining(&self, now: u64) -> Duration {
        Duration::from_secs(self.closes_at().saturating_sub(now))
    }
}
