//! Auth while connected: a session's token keeps mattering after the `101`.
//!
//! - **Expiry.** A session remembers when its token expires (`exp` plus
//!   [`LEEWAY_SECS`](crate::auth::LEEWAY_SECS)); the socket keeps one timer
//!   for the earliest of its documents' deadlines and closes with 4401
//!   (`token expired`) when it fires. Clients reconnect with a fresh token.
//! - **Refresh in band.** A Hocuspocus client that sends a new token for a
//!   document it holds has it verified and applied to that document's
//!   session (`grant.rs`): a later `exp`, and a narrower grant downgrades the
//!   session to read-only or detaches the document.
//! - **Revocation** (`rules.rs`, `list.rs`): an administrator revokes a
//!   subject, a token id, or a subject's access to some documents. Records
//!   are durable in a [`RevocationLog`] (the embedded store, or a Kafka topic
//!   of their own) that every node follows; each socket watches the node's
//!   [`RevocationList`] and closes (4403) or downgrades its sessions that a
//!   new revocation matches, and upgrades check tokens against it.
//!
//! This module sits above `auth` (it reads verified claims) and below the
//! socket, the upgrade and the API, which all use it.

mod facts;
mod grant;
mod list;
mod rules;

#[cfg(test)]
mod tests;

pub use self::facts::{TokenFacts, unix_now};
pub use self::grant::SessionGrant;
pub use self::list::{
    MAX_LIVE_REVOCATIONS, RevocationList, RevocationLog, RevocationLogError, Revocations,
    RevokeError,
};
pub use self::rules::{Limit, Revocation, RevocationRequest, RevokedAccess};
