//! Tests of the API's routing and representations.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use tower::ServiceExt;
use weft_sync::{MemoryStore, Registry, RegistryConfig, RootKind};

use super::representation::{Representation, negotiate, roots_asked};
use crate::auth::Authenticator;
use crate::limits::{Admission, LimitsConfig};
use crate::{AppState, GatewayConfig, Lifecycle, Metrics};

fn pairs(query: &str) -> Vec<(String, String)> {
    let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .unwrap()
        .0
}

async fn answer(method: Method, path: &str) -> (StatusCode, HeaderMap, serde_json::Value) {
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), RegistryConfig::default());
    let state = AppState {
        metrics: Arc::new(Metrics::new(registry.clone())),
        registry,
        lifecycle: Lifecycle::new(),
        config: Arc::new(GatewayConfig::default()),
        auth: Authenticator::Open,
        admission: Admission::new(LimitsConfig {
            max_connections: 0,
            max_connections_per_ip: 0,
            upgrades_per_ip_per_second: 0,
        }),
        revocations: crate::live::Revocations::disabled(),
        ownership: None,
        idempotency: Default::default(),
    };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = crate::router(state).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

#[tokio::test]
async fn routes_decode_one_segment_names() {
    let (status, _, body) = answer(Method::GET, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["openapi"], "3.1.0");
    let (status, _, body) = answer(Method::GET, "/api/documents").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["documents"], serde_json::json!([]));
    // One segment, percent-decoded: routed to the document (which does not
    // exist), not to "no route".
    let (status, _, body) = answer(Method::GET, "/api/documents/team%2Fplan").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["details"], "no such document");
    for path in [
        "/api/documents/",
        "/api/documents/team/plan",
        "/api/nothing",
        "/api",
    ] {
        let (status, _, body) = answer(Method::GET, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], 404, "{path}");
    }
    let (status, _, body) = answer(Method::GET, "/api/documents/%ff").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 400);
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    for (method, path, allowed) in [
        (Method::DELETE, "/api/openapi.json", "GET, HEAD"),
        (Method::POST, "/api/documents", "GET, HEAD"),
        (Method::PUT, "/api/documents/a", "GET, HEAD, DELETE"),
        (Method::GET, "/api/documents/a%20b/updates", "POST"),
        (
            Method::DELETE,
            "/api/documents/a/content",
            "GET, HEAD, PUT, PATCH",
        ),
        (Method::GET, "/api/documents/a/stream", "POST"),
        (Method::POST, "/healthz", "GET, HEAD"),
    ] {
        let (status, headers, body) = answer(method, path).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(headers[header::ALLOW], allowed, "{path}");
        assert_eq!(body["error"]["code"], 405, "{path}");
    }
}

#[test]
fn accept_picks_the_preferred_representation() {
    let with = |accept: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        negotiate(&headers)
    };
    assert_eq!(negotiate(&HeaderMap::new()), Some(Representation::Json));
    assert_eq!(
        with("application/octet-stream"),
        Some(Representation::Update)
    );
    assert_eq!(with("application/json"), Some(Representation::Json));
    assert_eq!(with("*/*"), Some(Representation::Json));
    assert_eq!(
        with("application/json;q=0.5, application/octet-stream"),
        Some(Representation::Update)
    );
    assert_eq!(
        with("application/octet-stream;q=0, application/json"),
        Some(Representation::Json)
    );
    assert_eq!(with("text/html"), None);
    assert_eq!(with("application/octet-stream;q=0"), None);
}

#[test]
fn root_names_come_from_the_query() {
    let roots = roots_asked(&pairs("text=body&map=meta&array=items&xml=pm&other=x")).unwrap();
    assert_eq!(
        roots,
        vec![
            (RootKind::Text, "body".to_owned()),
            (RootKind::Map, "meta".to_owned()),
            (RootKind::Array, "items".to_owned()),
            (RootKind::XmlFragment, "pm".to_owned()),
        ]
    );
    assert_eq!(
        roots_asked(&pairs("text=a%20b&text=a+b")).unwrap(),
        vec![(RootKind::Text, "a b".to_owned())]
    );
    assert_eq!(roots_asked(&pairs("text=a&map=a")).unwrap().len(), 2);
    assert!(roots_asked(&pairs("text=")).is_err());
}
