//! Globs and the access they grant.
#![allow(clippy::unwrap_used)]

use super::*;

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

#[tokio::test]
async fn authorize_maps_grants_to_access_or_forbidden() {
    let auth = Authenticator::Jwt(Arc::new(hs256()));
    assert!(!auth.is_open());
    let token = hs256_token(&claims_with(json!({ "a/*": "rw", "b/*": "r" })), SECRET);
    assert_eq!(
        auth.authorize(Some(&token), "a/1", &RequestContext::default())
            .await
            .unwrap(),
        Access::ReadWrite
    );
    assert_eq!(
        auth.authorize(Some(&token), "b/1", &RequestContext::default())
            .await
            .unwrap(),
        Access::Read
    );
    let refused = auth
        .authorize(Some(&token), "c/1", &RequestContext::default())
        .await
        .unwrap_err();
    assert!(matches!(refused, AuthError::Forbidden));
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let missing = auth
        .authorize(None, "a/1", &RequestContext::default())
        .await
        .unwrap_err();
    assert!(matches!(missing, AuthError::MissingToken));
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    // No `docs` at all: a valid token that grants nothing.
    let bare = hs256_token(&json!({ "sub": "alice", "exp": now() + 60 }), SECRET);
    assert!(matches!(
        auth.authorize(Some(&bare), "a/1", &RequestContext::default())
            .await,
        Err(AuthError::Forbidden)
    ));
}

#[tokio::test]
async fn open_grants_read_write_to_all() {
    let open = Authenticator::Open;
    assert!(open.is_open());
    assert_eq!(
        open.authorize(None, "any/doc", &RequestContext::default())
            .await
            .unwrap(),
        Access::ReadWrite
    );
    assert_eq!(
        open.authorize(Some("garbage"), "x", &RequestContext::default())
            .await
            .unwrap(),
        Access::ReadWrite
    );
}

#[test]
fn a_glob_is_compiled_once_per_verifier() {
    let verifier = hs256();
    let token = hs256_token(&claims_with(json!({ "a/*": "rw", "b/**": "r" })), SECRET);
    for _ in 0..3 {
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.access_to("a/1"), Some(Access::ReadWrite));
        assert_eq!(claims.access_to("b/x/y"), Some(Access::Read));
    }
    assert_eq!(verifier.globs.len(), 2);
    let other = hs256_token(&claims_with(json!({ "a/*": "r" })), SECRET);
    assert_eq!(
        verifier.verify(&other).unwrap().access_to("a/1"),
        Some(Access::Read)
    );
    assert_eq!(verifier.globs.len(), 2, "the same glob, another grant");
}
