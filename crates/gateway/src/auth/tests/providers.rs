//! Issuer, audience and claim names; an identity provider's key set served
//! on loopback (kid selection, rotation, the on-demand limit); a permission
//! service (cache, refusals that fail closed).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::routing::{get, post};
use jsonwebtoken::jwk::Jwk;
use parking_lot::Mutex;

use super::*;
use crate::auth::https::{check_url, client};
use axum::response::IntoResponse;

use crate::auth::{Jwks, JwksConfig, TokenPolicy, Webhook, WebhookConfig};

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: Some("https://idp.test".to_owned()),
        audiences: vec!["weft".to_owned(), "other".to_owned()],
        docs_claim: "weft_docs".to_owned(),
        admin_claim: "weft_admin".to_owned(),
    }
}

fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "sub": "alice", "exp": now() + 60, "iss": "https://idp.test", "aud": "weft",
        "weft_docs": { "a/*": "rw" }
    });
    for (key, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

#[test]
fn the_policy_checks_issuer_and_audience_and_reads_custom_claims() {
    let verifier = hs256().with_policy(&policy());
    let verify = |extra: Value| verifier.verify(&hs256_token(&claims(extra), SECRET));
    let granted = verify(json!({})).unwrap();
    assert_eq!(granted.access_to("a/1"), Some(Access::ReadWrite));
    assert!(
        verify(json!({ "aud": ["x", "other"] })).is_ok(),
        "any configured audience"
    );
    assert_invalid(verify(json!({ "iss": "https://evil.test" })));
    assert_invalid(verify(json!({ "iss": null })));
    assert_invalid(verify(json!({ "aud": "someone" })));
    assert_invalid(verify(json!({ "aud": null })));
    let default_names =
        verify(json!({ "weft_docs": null, "docs": { "a/*": "rw" }, "admin": true })).unwrap();
    assert_eq!(
        default_names.access_to("a/1"),
        None,
        "docs and admin are not read"
    );
    assert!(!default_names.admin);
    let admin = verify(json!({ "weft_admin": true })).unwrap();
    assert!(admin.admin);
    let not_true = verify(json!({ "weft_admin": "true" })).unwrap();
    assert!(!not_true.admin, "only JSON true grants admin");
    assert_invalid(verify(json!({ "weft_docs": ["a/*"] })));
}

fn rsa_jwk(kid: &str) -> Value {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

fn ec_jwk(kid: &str) -> Value {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

fn signed(algorithm: Algorithm, private_pem: &str, kid: &str) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(private_pem.as_bytes()),
    }
    .unwrap();
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    encode(&header, &claims_with(json!({ "a/*": "rw" })), &key).unwrap()
}

/// A key set served on loopback: the keys served, and fetches counted.
struct Provider {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    url: String,
}

async fn provider(keys: Vec<Value>) -> Provider {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (served, counted) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let keys = served.lock().clone();
            async move { Json(json!({ "keys": keys })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider { keys, fetches, url }
}

fn jwks(url: &str) -> Jwks {
    Jwks::new(JwksConfig {
        url: check_url(url).unwrap(),
        refresh: Duration::from_secs(3600),
        client: client(None, Duration::from_secs(5)).unwrap(),
        policy: TokenPolicy::default(),
    })
}

#[tokio::test]
async fn keys_by_kid_rotation_and_the_on_demand_limit() {
    let served = provider(vec![
        rsa_jwk("rsa-1"),
        json!({ "kty": "oct", "k": "c2VjcmV0", "kid": "secret" }),
    ])
    .await;
    let keys = jwks(&served.url);
    assert!(keys.check_ready().unwrap_err().contains("--auth-jwks-url"));
    assert_eq!(
        keys.load().await.unwrap(),
        1,
        "the symmetric key is skipped"
    );
    assert!(keys.check_ready().is_ok());
    let rsa = signed(Algorithm::RS256, RSA_PRIVATE, "rsa-1");
    assert!(keys.verify(&rsa).await.is_ok());
    assert_eq!(served.fetches.load(Ordering::SeqCst), 1);

    // A new kid fetches the set once; the key it brings verifies.
    served.keys.lock().push(ec_jwk("ec-1"));
    let ec = signed(Algorithm::ES256, EC_PRIVATE, "ec-1");
    assert!(keys.verify(&ec).await.is_ok());
    assert_eq!(served.fetches.load(Ordering::SeqCst), 2);
    // Another unknown kid within 30 s does not fetch again.
    let unknown = signed(Algorithm::ES256, EC_PRIVATE, "made-up");
    assert_invalid(keys.verify(&unknown).await);
    assert_invalid(keys.verify(&unknown).await);
    assert_eq!(served.fetches.load(Ordering::SeqCst), 2);

    // A removed key stops verifying once the set is fetched again.
    served.keys.lock().remove(0);
    assert_eq!(keys.load().await.unwrap(), 1);
    assert_invalid(keys.verify(&rsa).await);
    // A token signed by one key but naming another's kid is refused.
    assert_invalid(
        keys.verify(&signed(Algorithm::RS256, RSA_PRIVATE, "ec-1"))
            .await,
    );
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_keys_and_an_empty_set_is_refused() {
    let served = provider(vec![rsa_jwk("rsa-1")]).await;
    let keys = jwks(&served.url);
    keys.load().await.unwrap();
    served.keys.lock().clear();
    assert!(
        keys.load().await.is_err(),
        "a set without a usable key is an error"
    );
    assert!(
        keys.verify(&signed(Algorithm::RS256, RSA_PRIVATE, "rsa-1"))
            .await
            .is_ok()
    );
    assert!(keys.check_ready().is_ok(), "still ready on the old keys");
}

/// A permission service whose answer is set by the test; counts questions.
async fn service(answer: Arc<Mutex<(u16, Value)>>, asked: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/decide",
        post(move |Json(ask): Json<Value>| {
            asked.fetch_add(1, Ordering::SeqCst);
            let (status, body) = answer.lock().clone();
            async move {
                assert_eq!(ask["doc"], "d/1");
                assert_eq!(ask["token"], "t");
                assert_eq!(ask["remote"], "127.0.0.9");
                assert_eq!(ask["headers"]["x-test"], "yes");
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                (StatusCode::from_u16(status.max(200)).unwrap(), Json(body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/decide", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn the_permission_service_decides_is_cached_and_fails_closed() {
    let answer = Arc::new(Mutex::new((
        200,
        json!({ "access": "rw", "sub": "alice", "ttl_s": 60 }),
    )));
    let asked = Arc::new(AtomicUsize::new(0));
    let url = service(answer.clone(), asked.clone()).await;
    let auth = Authenticator::Webhook(Arc::new(Webhook::new(WebhookConfig {
        url: check_url(&url).unwrap(),
        client: client(None, Duration::from_millis(300)).unwrap(),
    })));
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-test", "yes".parse().unwrap());
    let context = auth.context(&headers, "127.0.0.9".parse().unwrap());
    let decide = || auth.authorize(Some("t"), "d/1", &context);
    assert_eq!(decide().await.unwrap(), Access::ReadWrite);
    assert_eq!(decide().await.unwrap(), Access::ReadWrite);
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the second answer came from the cache"
    );

    // Uncached answers: each question is asked.
    let uncached = Authenticator::Webhook(Arc::new(Webhook::new(WebhookConfig {
        url: check_url(&url).unwrap(),
        client: client(None, Duration::from_millis(300)).unwrap(),
    })));
    let ask = || uncached.authorize(Some("t"), "d/1", &context);
    *answer.lock() = (200, json!({ "access": "r" }));
    assert_eq!(ask().await.unwrap(), Access::Read);
    *answer.lock() = (200, json!({ "access": "none" }));
    assert!(matches!(ask().await, Err(AuthError::Forbidden)));
    for failing in [
        (200, json!({ "access": "all" })),
        (200, json!({ "allowed": true })),
        (500, json!({ "access": "rw" })),
        (0, json!({ "access": "rw" })),
    ] {
        *answer.lock() = failing.clone();
        let refused = ask().await.unwrap_err();
        assert!(
            matches!(refused, AuthError::Unavailable),
            "{failing:?}: {refused:?}"
        );
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let api = crate::error::ApiError::from(&AuthError::Unavailable).into_response();
    assert!(api.headers().contains_key(axum::http::header::RETRY_AFTER));
}

/// `/readyz` of a node whose authenticator is `auth`.
async fn readyz(auth: Authenticator) -> (StatusCode, Value) {
    use tower::ServiceExt;
    use weft_sync::{MemoryStore, Registry, RegistryConfig};

    let registry = Registry::embedded(Arc::new(MemoryStore::new()), RegistryConfig::default());
    let state = crate::AppState {
        metrics: Arc::new(crate::Metrics::new(registry.clone())),
        registry,
        lifecycle: crate::Lifecycle::new(),
        config: Arc::new(crate::GatewayConfig::default()),
        auth,
        revocations: crate::live::Revocations::disabled(),
        ownership: None,
        idempotency: Default::default(),
        admission: crate::limits::Admission::new(crate::limits::LimitsConfig {
            max_connections: 0,
            max_connections_per_ip: 0,
            upgrades_per_ip_per_second: 0,
        }),
    };
    let request = axum::http::Request::builder()
        .uri("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = crate::router(state).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn readiness_waits_for_the_first_key_set_and_says_why() {
    let served = provider(vec![rsa_jwk("rsa-1")]).await;
    let keys = Arc::new(jwks(&served.url));
    let (status, body) = readyz(Authenticator::Jwks(keys.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let details = body["error"]["details"].as_str().unwrap_or_default();
    assert!(details.contains("--auth-jwks-url"), "{body}");
    keys.load().await.unwrap();
    // This node's bus is not started, so it stays unready, for that reason
    // alone.
    let (_, body) = readyz(Authenticator::Jwks(keys)).await;
    let details = body["error"]["details"].as_str().unwrap_or_default();
    assert!(!details.contains("--auth-jwks-url"), "{body}");
}
