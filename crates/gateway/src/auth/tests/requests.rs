//! Where a request carries its token.
#![allow(clippy::unwrap_used)]

use super::*;

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

#[tokio::test]
async fn token_from_request_feeds_verification() {
    let token = hs256_token(&claims_with(json!({ "team-a/*": "rw" })), SECRET);
    let auth = Authenticator::Jwt(Arc::new(hs256()));
    let found = token_from_request(&parts(&format!("/team-a%2Fnotes?token={token}"), None));
    assert_eq!(
        auth.authorize(found.as_deref(), "team-a/notes", &RequestContext::default())
            .await
            .unwrap(),
        Access::ReadWrite
    );
}
