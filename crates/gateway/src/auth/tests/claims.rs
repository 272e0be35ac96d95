//! Times, required claims, signatures and the `docs` claim.
#![allow(clippy::unwrap_used)]

use super::*;

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
