//! Plain HTTP on the same listener as the WebSocket upgrades: service
//! routes, JSON refusals, and upgrade paths that name no valid document.

mod common;

use common::{Client, TestServer};
use tokio_tungstenite::tungstenite::Error as WsError;
use weft_gateway::GatewayConfig;

#[tokio::test]
async fn service_routes_answer_plain_http() {
    let server = TestServer::start(GatewayConfig::default()).await;

    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({ "status": "ok" }));
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), serde_json::json!({ "status": "ready" }));
    let head = server
        .http("HEAD", "/healthz", &[("Connection", "close")])
        .await;
    assert_eq!(head.status, 200);

    server.get("/nope").await.assert_json_error(404);
    server.get("/healthz/extra").await.assert_json_error(404);
    server
        .http(
            "POST",
            "/healthz",
            &[("Connection", "close"), ("Content-Length", "0")],
        )
        .await
        .assert_json_error(405);
    server
        .http("DELETE", "/readyz", &[("Connection", "close")])
        .await
        .assert_json_error(405);
}

#[tokio::test]
async fn an_upgrade_to_a_service_path_joins_the_document_of_that_name() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut writer = server.join("/healthz", 1).await;
    let mut observer = server.join("/healthz", 2).await;
    writer.append("a document named healthz").await;
    observer.apply_next_update().await;
    assert_eq!(
        server.join("/healthz", 3).await.text(),
        "a document named healthz"
    );
    // Plain HTTP on the same path is still the health check.
    assert_eq!(server.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn an_upgrade_under_api_joins_the_document_of_that_name() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut writer = server.join("/api/documents/x", 1).await;
    let mut observer = server.join("/api/documents/x", 2).await;
    writer.append("a document under /api").await;
    observer.apply_next_update().await;
    assert_eq!(
        server.join("/api/documents/x", 3).await.text(),
        "a document under /api"
    );
    // Plain HTTP on the same path is the REST API: the document named `x`
    // does not exist; the one named `api/documents/x` does.
    server.get("/api/documents/x").await.assert_json_error(404);
    assert_eq!(
        server
            .get("/api/documents/api%2Fdocuments%2Fx")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn upgrades_that_name_no_valid_document_are_refused_with_400() {
    let server = TestServer::start(GatewayConfig::default()).await;
    // Not UTF-8 once decoded.
    server
        .upgrade_request("/%FF%FE")
        .await
        .assert_json_error(400);
    // Longer than the 1024 bytes a name may have.
    server
        .upgrade_request(&format!("/{}", "n".repeat(1025)))
        .await
        .assert_json_error(400);

    match Client::try_connect(server.addr, "/%FF").await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 400),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("an upgrade at /%FF was accepted"),
    }
    // `/` itself is the Hocuspocus endpoint: the upgrade succeeds.
    assert!(
        Client::try_connect(server.addr, "/").await.is_ok(),
        "an upgrade at / speaks the Hocuspocus protocol"
    );
    // The longest valid name is accepted.
    let mut longest = server.connect(&format!("/{}", "n".repeat(1024))).await;
    assert!(matches!(
        longest.recv().await,
        weft_protocol::Message::Sync(weft_protocol::SyncMessage::SyncStep1(_))
    ));
}

/// A request's method and headers, the status and `details` it is refused with.
type Refused<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);

#[tokio::test]
async fn invalid_handshakes_are_refused_with_what_is_wrong() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    let cases: [Refused<'_>; 4] = [
        (
            "GET",
            &[("Connection", "Upgrade"), ("Upgrade", "websocket"), key],
            400,
            "`Sec-WebSocket-Version` header did not include '13'",
        ),
        (
            "GET",
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
            ],
            400,
            "`Sec-WebSocket-Key` header missing",
        ),
        (
            "GET",
            &[
                ("Connection", "keep-alive"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                key,
            ],
            400,
            "Connection header did not include 'upgrade'",
        ),
        (
            "POST",
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                key,
            ],
            405,
            "Request method must be `GET`",
        ),
    ];
    for (method, headers, status, details) in cases {
        let response = server.http(method, "/doc", headers).await;
        response.assert_json_error(status);
        let body = response.json();
        assert_eq!(
            body["error"]["message"], "invalid websocket upgrade",
            "{body}"
        );
        assert_eq!(body["error"]["details"], details, "{body}");
    }
    // And a valid one is answered (the client checks `Sec-WebSocket-Accept`).
    assert!(
        Client::try_connect(server.addr, "/doc").await.is_ok(),
        "a valid handshake is answered with 101"
    );
}
