//! What a token must say besides its signature: the issuer, the audience,
//! and where it keeps its grants.

/// The claim that holds the document grants unless configured otherwise.
pub const DEFAULT_DOCS_CLAIM: &str = "docs";
/// The claim that holds the admin flag unless configured otherwise.
pub const DEFAULT_ADMIN_CLAIM: &str = "admin";

/// The checks and claim names a verifier applies to every token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `--auth-issuer`: the token's `iss` must be exactly this (and is then
    /// required). `None`: `iss` is not checked.
    pub issuer: Option<String>,
    /// `--auth-audience`: the token's `aud` must name one of these (and is
    /// then required). Empty: a token with an `aud` claim is refused
    /// (RFC 7519: a recipient not named in `aud` must reject it).
    pub audiences: Vec<String>,
    /// `--auth-docs-claim`: the top-level claim holding the grants (an
    /// object of glob to `"r"`/`"rw"`).
    pub docs_claim: String,
    /// `--auth-admin-claim`: the top-level claim holding the admin flag
    /// (JSON `true` grants it; anything else does not).
    pub admin_claim: String,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: None,
            audiences: Vec::new(),
            docs_claim: DEFAULT_DOCS_CLAIM.to_owned(),
            admin_claim: DEFAULT_ADMIN_CLAIM.to_owned(),
        }
    }
}
