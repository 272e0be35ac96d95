//! Key material and algorithms.
#![allow(clippy::unwrap_used)]

use super::*;

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
