//! Token verification: one key, the one algorithm it is for, and the
//! claims Weft reads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind as JwtErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use axum::http::StatusCode;

use super::grant::{Access, DocGrant, GlobCache, invalid_docs};
use super::policy::TokenPolicy;

/// Slack, in seconds, granted to `exp` and `nbf`. The issuer's clock and
/// ours are never exactly in step; without slack a token minted a moment
/// ago on a clock that runs ahead would be "not yet valid" here. 30 s covers
/// ordinary NTP drift while keeping an expired token's afterlife short.
pub const LEEWAY_SECS: u64 = 30;

/// HS256 secrets shorter than this are accepted but logged as weak: RFC 7518
/// section 3.2 asks for a key at least as long as the hash output (32 bytes).
const MIN_STRONG_SECRET_BYTES: usize = 32;

/// Verifies tokens against one key, with the one algorithm that key is for.
pub struct JwtVerifier {
    pub(super) key: DecodingKey,
    validation: Validation,
    /// The grants' globs, compiled once each.
    pub(super) globs: GlobCache,
    /// Where the grants and the admin flag are.
    docs_claim: String,
    admin_claim: String,
}

/// Only the algorithm: the key is a secret (HS256) or at least not
/// something logs need to carry.
impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// HS256 with a shared secret. An empty secret is refused (anyone could
    /// mint tokens); one shorter than 32 bytes is accepted with a warning,
    /// since operators may have to match an existing issuer.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthSetupError> {
        if secret.is_empty() {
            return Err(AuthSetupError::EmptySecret);
        }
        if secret.len() < MIN_STRONG_SECRET_BYTES {
            tracing::warn!(
                bytes = secret.len(),
                recommended = MIN_STRONG_SECRET_BYTES,
                "the HS256 secret is short; tokens are easier to forge"
            );
        }
        Ok(Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// A PEM public key file's contents: RSA (RS256), EC P-256 (ES256) or
    /// Ed25519 (EdDSA), told apart by the key itself. SPKI
    /// (`BEGIN PUBLIC KEY`, what openssl and node export) is read for all
    /// three, PKCS#1 (`BEGIN RSA PUBLIC KEY`) for RSA.
    ///
    /// The key is checked here rather than at the first token, so a bad key
    /// file stops the server at startup instead of refusing every client.
    /// A private key is refused with its own error: accepting it would mean
    /// the signing key sits on every Weft node.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, AuthSetupError> {
        match pem_label(pem) {
            Some(label) if label.contains("PRIVATE KEY") => {
                return Err(AuthSetupError::PrivateKey);
            }
            Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
            _ => return Err(AuthSetupError::UnsupportedKey),
        }
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else {
            return Err(AuthSetupError::UnsupportedKey);
        };
        check_public_key(&key, algorithm)?;
        Ok(Self::new(key, algorithm))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let policy = TokenPolicy::default();
        Self {
            key,
            validation,
            globs: GlobCache::default(),
            docs_claim: policy.docs_claim,
            admin_claim: policy.admin_claim,
        }
    }

    /// A key of an identity provider's key set (JWKS), with the algorithm
    /// its `alg` names or, without one, its type's (RSA: RS256, EC P-256:
    /// ES256, Ed25519: EdDSA). Symmetric keys and encryption keys are
    /// refused: a key set is public, so a secret in it would let anyone
    /// sign.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, AuthSetupError> {
        if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
            return Err(AuthSetupError::UnsupportedKey);
        }
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::OctetKey(_), _) => return Err(AuthSetupError::UnsupportedKey),
            (_, Some(named)) => Algorithm::from_str(&named.to_string())
                .map_err(|_| AuthSetupError::UnsupportedKey)?,
            (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(params), None)
                if params.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
            _ => return Err(AuthSetupError::UnsupportedKey),
        };
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(AuthSetupError::UnsupportedKey);
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthSetupError::UnsupportedKey)?;
        jsonwebtoken::crypto::verify("", b"", &key, algorithm)
            .map_err(|_| AuthSetupError::UnsupportedKey)?;
        Ok(Self::new(key, algorithm))
    }

    /// Applies `policy`: the issuer and audiences required, the claims the
    /// grants are read from.
    #[must_use]
    pub fn with_policy(mut self, policy: &TokenPolicy) -> Self {
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &policy.issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if !policy.audiences.is_empty() {
            self.validation.set_audience(&policy.audiences);
            required.push("aud");
        }
        self.validation.set_required_spec_claims(&required);
        self.docs_claim.clone_from(&policy.docs_claim);
        self.admin_claim.clone_from(&policy.admin_claim);
        self
    }

    /// The one algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        // `new` always sets exactly one; HS256 is the library's own default.
        self.validation
            .algorithms
            .first()
            .copied()
            .unwrap_or_default()
    }

    /// Checks the signature, algorithm, `exp`, `nbf`, `sub` and `docs` of a
    /// token and returns what it grants.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let raw = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(AuthError::from_jwt)?
            .claims;
        Claims::from_raw(raw, &self.docs_claim, &self.admin_claim, &self.globs)
            .map_err(AuthError::InvalidToken)
    }
}

/// The label of the first PEM block (`PUBLIC KEY` for
/// `-----BEGIN PUBLIC KEY-----`), read before the key so a private key or a
/// certificate gets a precise refusal.
fn pem_label(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

/// Rejects keys the library would only trip over per token: an RSA key
/// whose DER does not parse, an EC key on another curve than P-256 (ES256
/// is P-256 only), a point that is not on its curve, an Ed25519 key of the
/// wrong length.
fn check_public_key(key: &DecodingKey, algorithm: Algorithm) -> Result<(), AuthSetupError> {
    // Describing the key as a JWK parses it fully (RSA modulus and exponent,
    // EC coordinates and curve, Ed25519 length) without verifying anything.
    let jwk =
        Jwk::from_decoding_key(key, Some(algorithm)).map_err(|_| AuthSetupError::UnsupportedKey)?;
    if let AlgorithmParameters::EllipticCurve(params) = &jwk.algorithm
        && params.curve != EllipticCurve::P256
    {
        return Err(AuthSetupError::UnsupportedCurve);
    }
    // Building the verifier decodes the EC point or Ed25519 key for real
    // (an off-curve point fails here). An empty signature never verifies,
    // so only an error, not `false`, means a bad key.
    jsonwebtoken::crypto::verify("", b"", key, algorithm)
        .map(|_| ())
        .map_err(|_| AuthSetupError::UnsupportedKey)
}

/// The payload as signed. The grants stay loosely typed here (among the
/// other claims) so that a token that is both expired and malformed in
/// its grants is reported as expired: the library checks `exp` only after
/// this deserializes.
#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    #[serde(deserialize_with = "numeric_date")]
    exp: u64,
    /// Every other claim, among them the grants and the admin flag under
    /// the names the policy gives.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
    /// When the token was issued (revocations compare it).
    #[serde(default, deserialize_with = "optional_numeric_date")]
    iat: Option<u64>,
    /// The token's own id (a revocation may name it).
    #[serde(default)]
    jti: Option<String>,
}

/// An optional [`numeric_date`].
fn optional_numeric_date<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    numeric_date(deserializer).map(Some)
}

/// A JWT NumericDate: whole seconds, or fractional ones (RFC 7519 allows
/// them, and `Date.now() / 1000` without rounding produces them), rounded
/// as the library rounds them for its own `exp` check.
fn numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                // Saturates at u64::MAX; the library refuses such a value
                // anyway.
                .map(|seconds| seconds.round() as u64)
        })
        .ok_or_else(|| serde::de::Error::custom("not a NumericDate"))
}

/// Claims Weft reads from a verified token.
#[derive(Debug, Clone)]
pub struct Claims {
    /// Who the token was issued to; for logs.
    pub sub: String,
    /// When the token expires, in seconds since the Unix epoch. Checked at
    /// the upgrade, and a session is closed once it passes (`live`).
    pub exp: u64,
    /// When the token was issued (`iat`), if it says.
    pub iat: Option<u64>,
    /// The token's id (`jti`), if it has one.
    pub jti: Option<String>,
    /// The document grants, in glob order.
    pub docs: Vec<DocGrant>,
    /// `admin: true`: read-write on every document, and the REST API's
    /// administrative routes (deleting a document, listing all of them).
    pub admin: bool,
}

impl Claims {
    fn from_raw(
        mut raw: RawClaims,
        docs_claim: &str,
        admin_claim: &str,
        globs: &GlobCache,
    ) -> Result<Self, JwtError> {
        if raw.sub.is_empty() {
            return Err(JwtErrorKind::MissingRequiredClaim("sub".to_owned()).into());
        }
        let grants: BTreeMap<String, String> = match raw.other.remove(docs_claim) {
            None | Some(serde_json::Value::Null) => BTreeMap::new(),
            Some(value) => serde_json::from_value(value).map_err(|_| {
                invalid_docs("not an object of globs to \"r\" or \"rw\"".to_owned())
            })?,
        };
        let admin = raw.other.get(admin_claim) == Some(&serde_json::Value::Bool(true));
        let docs = grants
            .into_iter()
            .map(|(glob, access)| {
                let access = match access.as_str() {
                    "rw" => Access::ReadWrite,
                    "r" => Access::Read,
                    other => {
                        return Err(invalid_docs(format!(
                            "grant for {glob:?} is {other:?}, not \"r\" or \"rw\""
                        )));
                    }
                };
                DocGrant::cached(&glob, access, globs)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sub: raw.sub,
            exp: raw.exp,
            docs,
            admin,
            iat: raw.iat,
            jti: raw.jti,
        })
    }

    /// The access this token gives to `doc`, or `None` if no glob matches.
    /// If several globs match, the widest access wins; `admin` grants
    /// read-write everywhere.
    pub fn access_to(&self, doc: &str) -> Option<Access> {
        if self.admin {
            return Some(Access::ReadWrite);
        }
        self.docs
            .iter()
            .filter(|grant| grant.matches(doc))
            .map(DocGrant::access)
            .max()
    }
}

/// Why an upgrade was refused. Logged server-side with its source; the
/// client sees only [`AuthError::status`] and [`AuthError::details`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Authentication is on and the request carries no token.
    #[error("missing token")]
    MissingToken,
    /// Bad signature, malformed token, wrong algorithm, `sub` or `exp`
    /// missing, an `aud` claim, a bad `docs` claim.
    #[error("invalid token")]
    InvalidToken(#[source] JwtError),
    /// `exp` is more than [`LEEWAY_SECS`] in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is more than [`LEEWAY_SECS`] in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token is valid but grants nothing on this document.
    #[error("token grants no access to this document")]
    Forbidden,
    /// The permission service (`--auth-webhook-url`) did not answer in
    /// time, failed, or answered nonsense: 503, never open access.
    #[error("the permission service is unavailable")]
    Unavailable,
    /// A revocation (`POST /api/revocations`) took the token's access to
    /// this document away.
    #[error("token revoked")]
    Revoked,
}

impl AuthError {
    fn from_jwt(error: JwtError) -> Self {
        match error.kind() {
            JwtErrorKind::ExpiredSignature => Self::Expired,
            JwtErrorKind::ImmatureSignature => Self::NotYetValid,
            _ => Self::InvalidToken(error),
        }
    }

    /// 401 when the client must present (another) token, 403 when the
    /// token is fine but does not cover the document: a new token for the
    /// same grants would not help.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden | Self::Revoked => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingToken | Self::InvalidToken(_) | Self::Expired | Self::NotYetValid => {
                StatusCode::UNAUTHORIZED
            }
        }
    }

    /// What the client should do, without internals: which check failed
    /// inside an invalid token is for the server log, not for a prober.
    pub fn details(&self) -> &'static str {
        match self {
            Self::MissingToken => {
                "this server requires a token: send ?token=<jwt> or an Authorization: Bearer header"
            }
            Self::InvalidToken(_) => "the token is not valid for this server; get a new one",
            Self::Expired => "the token has expired; get a new one",
            Self::NotYetValid => {
                "the token is not valid yet; check the issuer's clock or retry shortly"
            }
            Self::Forbidden => "the token grants no access to this document",
            Self::Unavailable => "access cannot be decided right now; retry shortly",
            Self::Revoked => {
                "the token was revoked for this document; a token issued after the revocation is needed"
            }
        }
    }
}

/// Why a [`JwtVerifier`] could not be built from the given key material.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// An empty HS256 secret: anyone could sign tokens.
    #[error("empty secret")]
    EmptySecret,
    /// A private key where the public one belongs.
    #[error("a private key was given; give the public key (openssl pkey -pubout)")]
    PrivateKey,
    /// Not PEM, or a key type or format Weft does not verify with.
    #[error("not a PEM RSA, EC P-256 or Ed25519 public key")]
    UnsupportedKey,
    /// An EC key on a curve other than P-256 (ES256 is P-256 only).
    #[error("EC public key is not on curve P-256, the only one ES256 uses")]
    UnsupportedCurve,
}
