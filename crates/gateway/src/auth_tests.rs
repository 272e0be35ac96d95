//! Tests of the `auth` module.
#![allow(clippy::unwrap_used)]

use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

// Test-only key pairs, generated once with openssl 3:
//   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048
//   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256
//   openssl genpkey -algorithm ED25519
//   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384
// and `openssl pkey -pubout` (`openssl rsa -RSAPublicKey_out` for the
// PKCS#1 form). They protect nothing.
const RSA_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDeQE11EATpyZ9s
BWABR0jazhmZWmW1zOc7jTsW5s3AwLcD9utB1vOnNLyUt1L6mSR2FwPzVhOx+6Or
Tvt4KWEFVN7aSML7/cFgzrLnh0YzqrjrRimmpttx/xxOBTwwAVXDiEJSZRKS9/bj
VefZcmqIf2tm94dFn7hPBOYiD5fV//TsKuyGN90lzNyvUjPu81q9C0VYx3Ta8qTE
NxP1URIaNaAB4LcPza/hnz4GFtq0YtMZ8ZtsZvbNTZAcakwfCab/ydlCKWkNFRXy
/K89xxI+mrIFNEjxmB99h+kQ5P6ldFDem9q7aGlP/gU49z5O9Sr/hPkZvEDHhaMi
WVqI/eJ1AgMBAAECggEAMWX8cVz2opn4T7OgI5ibBlsR0IaJnc9lw9Q/wnbZW5LZ
+s0afB9RN6Rel/VpQZ7hPkgeTisfJIuoVK6w8QPNdzhmcgEDKaw8m45FsHVeMqSr
BkwpfMuQcfWAboz2VDsvu06hYxvo9XaczumspyWprR4ZGqFA1UZLWnDdz8tEdcFM
qtrLagQD0Wrth9dxw5p1D2yKBuLc85Ct4TNX8OKiBML6FbqncTkyCA4h+Ic+DC43
rgv4mBlghBOe7QuOTCxLfMLXV4e40b4wstzQ7xqGOGoG49yVZO2Me3Hyk3bo+pyW
orS+yQPlFxeVE9xOklQSiHcoDNZ549PUehHqZN5VPwKBgQD4Bvk2YLowEVpxq4+o
DMV4dzsD3kaHGxi1zmqIUsEFFRVbT5C1IIX6Ipk8PLz9ezfE31y9gGQQ+L8i0hxC
bKUE0H11Qf7P8HdPqqsVR9tvSMCGb4ylE1rA+ELNOgNlvnh+UbVBqSdjRJPVLZGt
SoK1qtJti68gL4WY313ZP6rMqwKBgQDlZTeBow//AUKN+Xzwwr5D0EykAv1cCjc/
IPDO3w2WdHzGWWzIbI7bKrVx1tO1E1fSCkHwVH4er1J9IXz7eZloO0vKkW/KtTUV
druh418Ix5vzb4/68O5ogwfKav2+czFDK/8mVwUnaz7zhMlNqRMKJJMu25/+d6Z5
hyx1qiXNXwKBgDX7jpI/S0bbAAxtgr7YyMIHcVjOMBuH0kD/xEAXgttQU22kS6Kg
iYh/r0plDd09zE2VL+Iu55iqCy/Q+0WZz/DUT/oNeyBW/iDgzIu9MA1wkDayYLIt
HDuTzTZNwh+K7T7RGdpIrsH0Uxi66lIFPZ28qEAffuZKcZFsTEjUiqAxAoGBANUH
OxXDlW5OAD2SjEmVwFV/kjzZnemkfwu8DoU+tQKc6ObWUuSJk9zKe7fdNbu529tt
tTB3dqwOSr9zovpyQVl/f3H9v+ByiXqGSdccLLwdiqD2YLI8nlomHM0IsN31YbEs
oYU8WMfzm4FQNhVNxyWrM5fXU2xgNxQyyMH4oaRnAoGAJf3jlgjfTQJzuRMjWDDg
2XOe1ODIfvIoVTIvuoNfUxUp5vkNKgjqcw0oICQ0miuMXi9qIIZYe2f0udmvaN4L
os+AHXb/dV7LwPz5A1dquRQrkuy7jC7FCIiIuGnedGs06dHjIwidbkYQa2PZppgI
7biB8FFZLoVnMW2YBaf2hhc=
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA3kBNdRAE6cmfbAVgAUdI
2s4ZmVpltcznO407FubNwMC3A/brQdbzpzS8lLdS+pkkdhcD81YTsfujq077eClh
BVTe2kjC+/3BYM6y54dGM6q460Yppqbbcf8cTgU8MAFVw4hCUmUSkvf241Xn2XJq
iH9rZveHRZ+4TwTmIg+X1f/07CrshjfdJczcr1Iz7vNavQtFWMd02vKkxDcT9VES
GjWgAeC3D82v4Z8+BhbatGLTGfGbbGb2zU2QHGpMHwmm/8nZQilpDRUV8vyvPccS
PpqyBTRI8ZgffYfpEOT+pXRQ3pvau2hpT/4FOPc+TvUq/4T5GbxAx4WjIllaiP3i
dQIDAQAB
-----END PUBLIC KEY-----
";
const RSA_PUBLIC_PKCS1: &str = "\
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEA3kBNdRAE6cmfbAVgAUdI2s4ZmVpltcznO407FubNwMC3A/brQdbz
pzS8lLdS+pkkdhcD81YTsfujq077eClhBVTe2kjC+/3BYM6y54dGM6q460Yppqbb
cf8cTgU8MAFVw4hCUmUSkvf241Xn2XJqiH9rZveHRZ+4TwTmIg+X1f/07Crshjfd
Jczcr1Iz7vNavQtFWMd02vKkxDcT9VESGjWgAeC3D82v4Z8+BhbatGLTGfGbbGb2
zU2QHGpMHwmm/8nZQilpDRUV8vyvPccSPpqyBTRI8ZgffYfpEOT+pXRQ3pvau2hp
T/4FOPc+TvUq/4T5GbxAx4WjIllaiP3idQIDAQAB
-----END RSA PUBLIC KEY-----
";
const EC_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEGYfM45AbRbb4unz
KQ1GOHoczpVsVUgMlc22uXF08iKhRANCAASSZh6z/qoHIjlmot5rlWGkQWoAVcXj
imGUwOnlyMxvoQrq99mYPV2ws4H/Jv8zNdzOfA4Fg6w/2JGMWq1rCj1c
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEkmYes/6qByI5ZqLea5VhpEFqAFXF
44phlMDp5cjMb6EK6vfZmD1dsLOB/yb/MzXcznwOBYOsP9iRjFqtawo9XA==
-----END PUBLIC KEY-----
";
const ED_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIExzztfA3URuECA6S4B3nLIYhDdodltDIi/6gI7Hq4J1
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAWE7DPrlXPuyneLXCOAF6fchk01EpS6N99oz/1dYYg6c=
-----END PUBLIC KEY-----
";
const EC_P384_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE978SpTMKVjWtwQarzkSJ0RHRLhc3TUe9
WQQY5VHKN3JjGYjt06cwltCVQ2go5eyecIGQ/uTP1v2hpTbVR8kvKg5u6u+K0yKt
nwq9Zw8m8cciBiHtPjUJ5AjELV6VZrOS
-----END PUBLIC KEY-----
";

fn now() -> u64 {
    get_current_timestamp()
}

fn hs256_token(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn claims_with(docs: Value) -> Value {
    json!({ "sub": "alice", "exp": now() + 3600, "docs": docs })
}

fn hs256() -> JwtVerifier {
    JwtVerifier::hs256(SECRET).unwrap()
}

fn sign(claims: &Value, algorithm: Algorithm, private_pem: &str) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
        other => panic!("no test key for {other:?}"),
    }
    .unwrap();
    encode(&Header::new(algorithm), claims, &key).unwrap()
}

fn assert_invalid(result: Result<Claims, AuthError>) -> JwtError {
    match result {
        Err(AuthError::InvalidToken(source)) => source,
        other => panic!("expected InvalidToken, got {other:?}"),
    }
}

fn parts(uri: &str, authorization: Option<&str>) -> Parts {
    let mut request = axum::http::Request::builder().uri(uri);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    request.body(()).unwrap().into_parts().0
}

#[test]
fn hs256_grants_rw_and_r_by_glob() {
    let verifier = hs256();
    let token = hs256_token(
        &claims_with(json!({ "team-a/*": "rw", "public/*": "r" })),
        SECRET,
    );
    let claims = verifier.verify(&token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.docs.len(), 2);
    assert_eq!(claims.access_to("team-a/notes"), Some(Access::ReadWrite));
    assert_eq!(claims.access_to("public/readme"), Some(Access::Read));
    assert_eq!(claims.access_to("team-b/notes"), None);
    // A glob matches the whole name, not a prefix or a part.
    assert_eq!(claims.access_to("x/team-a/notes"), None);
    assert_eq!(claims.access_to("team-a"), None);
}

#[test]
fn single_star_stops_at_slash_double_star_does_not() {
    let claims = hs256()
        .verify(&hs256_token(
            &claims_with(json!({ "team-a/*": "rw", "team-b/**": "rw" })),
            SECRET,
        ))
        .unwrap();
    assert_eq!(claims.access_to("team-a/notes"), Some(Access::ReadWrite));
    assert_eq!(claims.access_to("team-a/x/y"), None);
    assert_eq!(claims.access_to("team-a/"), Some(Access::ReadWrite));
    assert_eq!(claims.access_to("team-b/notes"), Some(Access::ReadWrite));
    assert_eq!(claims.access_to("team-b/x/y"), Some(Access::ReadWrite));
    assert_eq!(claims.access_to("team-b"), None);
}

#[test]
fn glob_syntax() {
    let grant = |glob: &str| DocGrant::new(glob, Access::Read).unwrap();
    // `?` is one character, never `/`.
    assert!(grant("doc-?").matches("doc-1"));
    assert!(grant("doc-?").matches("doc-é"));
    assert!(!grant("doc-?").matches("doc-12"));
    assert!(!grant("doc-?").matches("doc-"));
    assert!(!grant("a?b").matches("a/b"));
    // `**` anywhere, not only as a whole path component.
    assert!(grant("team-**").matches("team-a/x/y"));
    assert!(grant("**/notes").matches("a/b/notes"));
    assert!(!grant("**/notes").matches("notes"));
    assert!(grant("**").matches("anything/at/all"));
    assert!(grant("**").matches("line\nbreak"));
    assert!(grant("***").matches("a/b"));
    assert!(grant("*-draft").matches("q3-draft"));
    assert!(!grant("*-draft").matches("plans/q3-draft"));
    // Regex and other glob syntaxes are literal.
    assert!(grant("a.b").matches("a.b"));
    assert!(!grant("a.b").matches("axb"));
    assert!(grant("[x]{y,z}\\+(").matches("[x]{y,z}\\+("));
    assert!(!grant("[ab]").matches("a"));
    assert!(grant("notes-é/*").matches("notes-é/1"));
    // Empty and oversized globs are refused.
    assert!(DocGrant::new("", Access::Read).is_err());
    assert!(DocGrant::new(&"a".repeat(MAX_GLOB_BYTES + 1), Access::Read).is_err());
    assert!(DocGrant::new(&"*".repeat(MAX_GLOB_BYTES), Access::Read).is_ok());
}

#[test]
fn exact_name_matches_only_itself() {
    let claims = hs256()
        .verify(&hs256_token(
            &claims_with(json!({ "specs/design": "r" })),
            SECRET,
        ))
        .unwrap();
    assert_eq!(claims.access_to("specs/design"), Some(Access::Read));
    assert_eq!(claims.access_to("specs/design2"), None);
    assert_eq!(claims.access_to("specs/desig"), None);
    assert_eq!(claims.access_to("specs"), None);
}

#[test]
fn widest_access_wins() {
    // Both orders, since `docs` is a map and grants end up sorted.
    for docs in [
        json!({ "team-a/**": "r", "team-a/notes": "rw" }),
        json!({ "team-a/notes": "r", "**": "rw" }),
    ] {
        let claims = hs256()
            .verify(&hs256_token(&claims_with(docs), SECRET))
            .unwrap();
        assert_eq!(claims.access_to("team-a/notes"), Some(Access::ReadWrite));
    }
    let claims = hs256()
        .verify(&hs256_token(
            &claims_with(json!({ "team-a/**": "r", "team-a/notes": "rw" })),
            SECRET,
        ))
        .unwrap();
    assert_eq!(claims.access_to("team-a/other"), Some(Access::Read));
}

#[test]
fn authorize_maps_grants_to_access_or_forbidden() {
    let auth = Authenticator::Jwt(Arc::new(hs256()));
    assert!(!auth.is_open());
    let token = hs256_token(&claims_with(json!({ "a/*": "rw", "b/*": "r" })), SECRET);
    assert_eq!(
        auth.authorize(Some(&token), "a/1").unwrap(),
        Access::ReadWrite
    );
    assert_eq!(auth.authorize(Some(&token), "b/1").unwrap(), Access::Read);
    let refused = auth.authorize(Some(&token), "c/1").unwrap_err();
    assert!(matches!(refused, AuthError::Forbidden));
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let missing = auth.authorize(None, "a/1").unwrap_err();
    assert!(matches!(missing, AuthError::MissingToken));
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    // No `docs` at all: a valid token that grants nothing.
    let bare = hs256_token(&json!({ "sub": "alice", "exp": now() + 60 }), SECRET);
    assert!(matches!(
        auth.authorize(Some(&bare), "a/1"),
        Err(AuthError::Forbidden)
    ));
}

#[test]
fn open_grants_read_write_to_all() {
    let open = Authenticator::Open;
    assert!(open.is_open());
    assert_eq!(open.authorize(None, "any/doc").unwrap(), Access::ReadWrite);
    assert_eq!(
        open.authorize(Some("garbage"), "x").unwrap(),
        Access::ReadWrite
    );
}

#[test]
fn expired_token_is_expired_beyond_leeway_only() {
    let verifier = hs256();
    let expired = json!({ "sub": "alice", "exp": now() - 3600, "docs": { "**": "rw" } });
    let refused = verifier.verify(&hs256_token(&expired, SECRET)).unwrap_err();
    assert!(matches!(refused, AuthError::Expired), "{refused:?}");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // 45 s ago is past the 30 s leeway (and within the library's default
    // 60 s, so this fails if the leeway is not ours).
    let just_expired = json!({ "sub": "alice", "exp": now() - 45 });
    assert!(matches!(
        verifier.verify(&hs256_token(&just_expired, SECRET)),
        Err(AuthError::Expired)
    ));
    // 10 s ago is within it.
    let within = json!({ "sub": "alice", "exp": now() - 10 });
    assert!(verifier.verify(&hs256_token(&within, SECRET)).is_ok());
    // Fractional NumericDates are valid JWT and read as such.
    let issued = now();
    let fractional = json!({ "sub": "alice", "exp": issued as f64 + 3600.5 });
    let exp = verifier
        .verify(&hs256_token(&fractional, SECRET))
        .unwrap()
        .exp;
    assert_eq!(exp, issued + 3601);
    let negative = json!({ "sub": "alice", "exp": -1 });
    assert_invalid(verifier.verify(&hs256_token(&negative, SECRET)));
}

#[test]
fn expired_wins_over_bad_docs() {
    let claims = json!({ "sub": "alice", "exp": now() - 3600, "docs": { "a": "w" } });
    assert!(matches!(
        hs256().verify(&hs256_token(&claims, SECRET)),
        Err(AuthError::Expired)
    ));
}

#[test]
fn future_nbf_is_not_yet_valid() {
    let verifier = hs256();
    let early = json!({ "sub": "alice", "exp": now() + 7200, "nbf": now() + 3600 });
    let refused = verifier.verify(&hs256_token(&early, SECRET)).unwrap_err();
    assert!(matches!(refused, AuthError::NotYetValid), "{refused:?}");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let slightly_early = json!({ "sub": "alice", "exp": now() + 7200, "nbf": now() + 10 });
    assert!(
        verifier
            .verify(&hs256_token(&slightly_early, SECRET))
            .is_ok()
    );
    let past_nbf = json!({ "sub": "alice", "exp": now() + 7200, "nbf": now() - 10 });
    assert!(verifier.verify(&hs256_token(&past_nbf, SECRET)).is_ok());
}

#[test]
fn missing_exp_is_invalid() {
    let claims = json!({ "sub": "alice", "docs": { "**": "rw" } });
    assert_invalid(hs256().verify(&hs256_token(&claims, SECRET)));
    let not_a_number = json!({ "sub": "alice", "exp": "tomorrow" });
    assert_invalid(hs256().verify(&hs256_token(&not_a_number, SECRET)));
}

#[test]
fn missing_or_empty_sub_is_invalid() {
    for claims in [
        json!({ "exp": now() + 60, "docs": { "**": "rw" } }),
        json!({ "sub": "", "exp": now() + 60, "docs": { "**": "rw" } }),
        json!({ "sub": 42, "exp": now() + 60 }),
    ] {
        assert_invalid(hs256().verify(&hs256_token(&claims, SECRET)));
    }
}

#[test]
fn wrong_secret_is_invalid() {
    let token = hs256_token(
        &claims_with(json!({ "**": "rw" })),
        b"another-secret-entirely-32-bytes",
    );
    let source = assert_invalid(hs256().verify(&token));
    assert_eq!(source.kind(), &JwtErrorKind::InvalidSignature);
}

#[test]
fn garbage_tokens_are_invalid() {
    let verifier = hs256();
    for garbage in [
        "",
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        "eyJ.eyJ.sig",
        "💥.💥.💥",
    ] {
        assert_invalid(verifier.verify(garbage));
    }
    // A valid token with a flipped signature character.
    let mut token = hs256_token(&claims_with(json!({ "**": "rw" })), SECRET);
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    assert_invalid(verifier.verify(&token));
}

#[test]
fn alg_none_is_refused() {
    // {"alg":"none","typ":"JWT"} . {"sub":"mallory","exp":4102444800,"docs":{"**":"rw"}} . (empty)
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                 eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MTAyNDQ0ODAwLCJkb2NzIjp7IioqIjoicncifX0.";
    assert_invalid(hs256().verify(token));
    let rsa = JwtVerifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap();
    assert_invalid(rsa.verify(token));
}

#[test]
fn bad_docs_claim_is_invalid() {
    for docs in [
        json!({ "team-a/*": "w" }),
        json!({ "team-a/*": "rw", "b": "RW" }),
        json!({ "team-a/*": true }),
        json!({ "": "rw" }),
        json!(["team-a/*"]),
        json!("team-a/*"),
    ] {
        assert_invalid(hs256().verify(&hs256_token(&claims_with(docs), SECRET)));
    }
}

#[test]
fn hs256_signed_with_rsa_public_key_is_refused() {
    // Algorithm confusion: a verifier that trusted the header's `alg`
    // would check this HMAC with the (public) key bytes as the secret.
    let verifier = JwtVerifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap();
    assert_eq!(verifier.algorithm(), Algorithm::RS256);
    let claims = claims_with(json!({ "**": "rw" }));
    let der = match verifier.key.kind() {
        jsonwebtoken::DecodingKeyKind::SecretOrDer(der) => der.clone(),
        other => panic!("unexpected key kind {other:?}"),
    };
    for secret in [RSA_PUBLIC.as_bytes(), &der] {
        let source = assert_invalid(verifier.verify(&hs256_token(&claims, secret)));
        assert_eq!(source.kind(), &JwtErrorKind::InvalidAlgorithm);
    }
}

#[test]
fn other_asymmetric_algorithm_is_refused() {
    let rsa = JwtVerifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let es256 = sign(
        &claims_with(json!({ "**": "rw" })),
        Algorithm::ES256,
        EC_PRIVATE,
    );
    assert_invalid(rsa.verify(&es256));
    let ec = JwtVerifier::from_public_key_pem(EC_PUBLIC.as_bytes()).unwrap();
    let rs256 = sign(
        &claims_with(json!({ "**": "rw" })),
        Algorithm::RS256,
        RSA_PRIVATE,
    );
    assert_invalid(ec.verify(&rs256));
    // And the HS256 verifier takes no asymmetric token either.
    assert_invalid(hs256().verify(&rs256));
}

#[test]
fn asymmetric_round_trips() {
    for (algorithm, private, public) in [
        (Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC),
        (Algorithm::RS256, RSA_PRIVATE, RSA_PUBLIC_PKCS1),
        (Algorithm::ES256, EC_PRIVATE, EC_PUBLIC),
        (Algorithm::EdDSA, ED_PRIVATE, ED_PUBLIC),
    ] {
        let verifier = JwtVerifier::from_public_key_pem(public.as_bytes()).unwrap();
        assert_eq!(verifier.algorithm(), algorithm);
        let token = sign(
            &claims_with(json!({ "team-a/**": "rw", "pub/*": "r" })),
            algorithm,
            private,
        );
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access_to("team-a/x/y"), Some(Access::ReadWrite));
        assert_eq!(claims.access_to("pub/z"), Some(Access::Read));
        assert_eq!(claims.access_to("other"), None);
        // The same claims signed with the secret are refused.
        assert_invalid(verifier.verify(&hs256_token(&claims_with(json!({})), SECRET)));
        let expired = json!({ "sub": "alice", "exp": now() - 3600 });
        assert!(matches!(
            verifier.verify(&sign(&expired, algorithm, private)),
            Err(AuthError::Expired)
        ));
    }
}

#[test]
fn setup_refuses_bad_key_material() {
    assert!(matches!(
        JwtVerifier::hs256(b""),
        Err(AuthSetupError::EmptySecret)
    ));
    // Short secrets are accepted (with a warning).
    assert!(JwtVerifier::hs256(b"short").is_ok());
    for private in [RSA_PRIVATE, EC_PRIVATE, ED_PRIVATE] {
        assert!(matches!(
            JwtVerifier::from_public_key_pem(private.as_bytes()),
            Err(AuthSetupError::PrivateKey)
        ));
    }
    assert!(matches!(
        JwtVerifier::from_public_key_pem(EC_P384_PUBLIC.as_bytes()),
        Err(AuthSetupError::UnsupportedCurve)
    ));
    let truncated = RSA_PUBLIC.replace("dQIDAQAB\n", "");
    let corrupted = EC_PUBLIC.replace("44ph", "44pi");
    for bad in [
        "",
        "not a key",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
        truncated.as_str(),
        corrupted.as_str(),
    ] {
        assert!(
            matches!(
                JwtVerifier::from_public_key_pem(bad.as_bytes()),
                Err(AuthSetupError::UnsupportedKey)
            ),
            "{bad:?}"
        );
    }
    assert!(JwtVerifier::from_public_key_pem(&[0xff, 0xfe, 0x00]).is_err());
}

#[test]
fn debug_does_not_print_key_material() {
    let secret_verifier = JwtVerifier::hs256(b"super-secret-value-do-not-print!").unwrap();
    let debug = format!("{secret_verifier:?}");
    assert!(debug.contains("HS256"), "{debug}");
    assert!(!debug.contains("super-secret"), "{debug}");
    let rsa = JwtVerifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let debug = format!("{:?}", Authenticator::Jwt(Arc::new(rsa)));
    assert!(debug.contains("RS256"), "{debug}");
    assert!(
        !debug.contains("MIIB") && !debug.contains("48, 130"),
        "{debug}"
    );
}

#[test]
fn details_and_statuses() {
    let errors = [
        AuthError::MissingToken,
        AuthError::InvalidToken(JwtErrorKind::InvalidSignature.into()),
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::Forbidden,
    ];
    for error in &errors {
        let details = error.details();
        assert!(!details.is_empty() && !details.ends_with('.'), "{details}");
        let status = error.status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{status}"
        );
    }
    assert_eq!(
        AuthError::Expired.details(),
        "the token has expired; get a new one"
    );
    assert!(!errors[1].details().contains("Signature"));
}

#[test]
fn token_from_query_is_percent_decoded() {
    assert_eq!(
        token_from_request(&parts("/team-a%2Fnotes?token=abc.def.ghi", None)).as_deref(),
        Some("abc.def.ghi")
    );
    assert_eq!(
        token_from_request(&parts("/doc?x=1&token=a%2Eb%2Ec%3D&y=2", None)).as_deref(),
        Some("a.b.c=")
    );
    // Not fooled by a similar key; the first non-empty `token` counts.
    assert_eq!(
        token_from_request(&parts("/doc?my_token=x&token=&token=real", None)).as_deref(),
        Some("real")
    );
    assert_eq!(token_from_request(&parts("/doc", None)), None);
    assert_eq!(token_from_request(&parts("/doc?token=", None)), None);
    assert_eq!(token_from_request(&parts("/doc?tokens=x", None)), None);
}

#[test]
fn token_from_bearer_header_wins_over_query() {
    assert_eq!(
        token_from_request(&parts("/doc", Some("Bearer h.e.ader"))).as_deref(),
        Some("h.e.ader")
    );
    assert_eq!(
        token_from_request(&parts("/doc?token=q.u.ery", Some("bearer  h.e.ader "))).as_deref(),
        Some("h.e.ader")
    );
    // Another scheme, or an empty bearer, does not hide the query.
    assert_eq!(
        token_from_request(&parts("/doc?token=q.u.ery", Some("Basic dXNlcjpwYXNz"))).as_deref(),
        Some("q.u.ery")
    );
    assert_eq!(
        token_from_request(&parts("/doc?token=q.u.ery", Some("Bearer "))).as_deref(),
        Some("q.u.ery")
    );
    assert_eq!(
        token_from_request(&parts("/doc", Some("Basic dXNlcjpwYXNz"))),
        None
    );
}

#[test]
fn token_from_request_feeds_verification() {
    let token = hs256_token(&claims_with(json!({ "team-a/*": "rw" })), SECRET);
    let auth = Authenticator::Jwt(Arc::new(hs256()));
    let found = token_from_request(&parts(&format!("/team-a%2Fnotes?token={token}"), None));
    assert_eq!(
        auth.authorize(found.as_deref(), "team-a/notes").unwrap(),
        Access::ReadWrite
    );
}
