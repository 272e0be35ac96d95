//! The REST API through the real router: reads as clients see them, a
//! service's update reaching a session, deletion closing sessions with
//! 4410 and refusing old history, and the refusals (auth, negotiation,
//! methods, bodies).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{TEXT, TestServer, WAIT, bounded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_gateway::GatewayConfig;
use weft_gateway::auth::{Authenticator, JwtVerifier};
use weft_protocol::{Message, SyncMessage};
use weft_sync::{MemoryStore, Registry, RegistryConfig};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

const SECRET: &[u8] = b"gateway-api-test-secret-0123456789abcdef";

/// A response: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The error body's code, which must equal the status.
    fn error_code(&self) -> u16 {
        let code = self.json()["error"]["code"].as_u64().expect("error.code");
        assert_eq!(code, u64::from(self.status));
        self.status
    }
}

/// One HTTP/1.1 request with a body, `Connection: close`, read to the end.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    bounded(WAIT, "an API response", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.expect("read");
        parse(&received)
    })
    .await
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&raw[..line_end])
                .expect("chunk size line")
                .trim(),
            16,
        )
        .expect("hex chunk size");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}

fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({ "sub": "tester", "exp": 4_000_000_000_u64 });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    claims
}

fn text_update(client_id: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client_id);
    let root = doc.get_or_insert_text(TEXT);
    root.insert(&mut doc.transact_mut(), 0, text);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn text_of(state: &[u8]) -> String {
    let doc = Doc::new();
    let root = doc.get_or_insert_text(TEXT);
    doc.transact_mut()
        .apply_update(Update::decode_v1(state).expect("decode state"))
        .expect("apply state");
    root.get_string(&doc.transact())
}

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

#[tokio::test]
async fn the_api_reads_applies_and_deletes_what_sessions_see() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let addr = server.addr;
    let mut alice = server.join("/team/plan", 1).await;
    let mut bob = server.join("/team/plan", 2).await;
    alice.append("hello").await;
    bob.apply_next_update().await;

    let octets = request(
        addr,
        "GET",
        "/api/documents/team%2Fplan",
        &[("Accept", "application/octet-stream")],
        b"",
    )
    .await;
    assert_eq!(octets.status, 200);
    assert_eq!(
        octets.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(text_of(&octets.body), "hello");
    let json = request(
        addr,
        "GET",
        "/api/documents/team%2Fplan?text=content&map=none",
        &[],
        b"",
    )
    .await;
    assert_eq!(json.status, 200);
    assert_eq!(
        json.json(),
        serde_json::json!({
            "name": "team/plan",
            "text": { "content": "hello" },
            "map": { "none": {} },
            "array": {},
            "xml": {},
        })
    );

    // A service's update reaches both sessions.
    let posted = request(
        addr,
        "POST",
        "/api/documents/team%2Fplan/updates",
        &[OCTETS],
        &text_update(9, ">> "),
    )
    .await;
    assert_eq!(posted.status, 204);
    alice.apply_next_update().await;
    bob.apply_next_update().await;
    assert_eq!(alice.text(), "hello>> ");
    assert_eq!(bob.text(), "hello>> ");
    let listed = request(addr, "GET", "/api/documents", &[], b"").await;
    assert_eq!(
        listed.json()["documents"][0]["name"],
        serde_json::json!("team/plan")
    );

    // Deleting closes both sessions with 4410 and leaves nothing.
    let deleted = request(addr, "DELETE", "/api/documents/team%2Fplan", &[], b"").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(alice.client.expect_close().await, 4410);
    assert_eq!(bob.client.expect_close().await, 4410);
    let gone = request(addr, "GET", "/api/documents/team%2Fplan", &[], b"").await;
    assert_eq!(gone.error_code(), 404);

    // A client with the old history is refused; a fresh one starts again.
    let mut stale = server.connect("/team/plan").await;
    let _greeting = stale.recv().await;
    stale
        .send(&Message::Sync(SyncMessage::SyncStep1(alice.state_vector())))
        .await;
    assert_eq!(stale.expect_close().await, 4410);
    let refused = request(
        addr,
        "POST",
        "/api/documents/team%2Fplan/updates",
        &[OCTETS],
        &text_update(1, "old client"),
    )
    .await;
    assert_eq!(refused.error_code(), 409);
    let mut carol = server.join("/team/plan", 3).await;
    assert_eq!(carol.text(), "");
    let mut dave = server.join("/team/plan", 4).await;
    carol.append("new").await;
    dave.apply_next_update().await;
    assert_eq!(dave.text(), "new");
    dave.client.close().await;
}

#[tokio::test]
async fn the_api_refuses_what_it_must() {
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), RegistryConfig::default());
    let auth = Authenticator::Jwt(Arc::new(JwtVerifier::hs256(SECRET).expect("secret")));
    let config = GatewayConfig {
        max_message_bytes: 1024,
        ..GatewayConfig::default()
    };
    let server = TestServer::with_auth(registry, config, auth).await;
    let addr = server.addr;
    let admin = format!(
        "Bearer {}",
        token(claims(serde_json::json!({ "admin": true })))
    );
    let editor = format!(
        "Bearer {}",
        token(claims(serde_json::json!({ "docs": { "team/*": "rw" } })))
    );
    let reader = format!(
        "Bearer {}",
        token(claims(serde_json::json!({ "docs": { "team/*": "r" } })))
    );
    let update = text_update(5, "x");

    // The OpenAPI document needs no token.
    let openapi = request(addr, "GET", "/api/openapi.json", &[], b"").await;
    assert_eq!(openapi.status, 200);
    let spec = openapi.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut paths: Vec<&String> = spec["paths"].as_object().expect("paths").keys().collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/cluster",
            "/api/documents",
            "/api/documents/{name}",
            "/api/documents/{name}/activity",
            "/api/documents/{name}/content",
            "/api/documents/{name}/diff",
            "/api/documents/{name}/events",
            "/api/documents/{name}/restore",
            "/api/documents/{name}/stream",
            "/api/documents/{name}/undelete",
            "/api/documents/{name}/updates",
            "/api/documents/{name}/versions",
            "/api/events",
            "/api/openapi.json",
            "/api/revocations",
            "/api/webhooks/replay"
        ]
    );

    // A node not in a cluster of owners has no cluster to show; only an
    // admin may ask.
    let cluster = request(
        addr,
        "GET",
        "/api/cluster",
        &[("authorization", &editor)],
        b"",
    )
    .await;
    assert_eq!(cluster.status, 403);
    let cluster = request(
        addr,
        "GET",
        "/api/cluster",
        &[("authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(cluster.status, 404);

    let path = "/api/documents/team%2Fa";
    let updates = "/api/documents/team%2Fa/updates";
    // A node without history (here: no history store) says so, after the
    // grant check.
    let versions = "/api/documents/team%2Fa/versions";
    assert_eq!(
        request(addr, "GET", versions, &[], b"").await.error_code(),
        401
    );
    assert_eq!(
        request(addr, "GET", versions, &[("Authorization", &reader)], b"")
            .await
            .error_code(),
        501
    );
    assert_eq!(
        request(
            addr,
            "GET",
            &format!("{path}?version=1"),
            &[("Authorization", &reader)],
            b""
        )
        .await
        .error_code(),
        501
    );
    assert_eq!(request(addr, "GET", path, &[], b"").await.error_code(), 401);
    assert_eq!(
        request(
            addr,
            "GET",
            path,
            &[("Authorization", "Bearer not-a-jwt")],
            b""
        )
        .await
        .error_code(),
        401
    );
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/documents/other",
            &[("Authorization", &editor)],
            b""
        )
        .await
        .error_code(),
        403
    );
    assert_eq!(
        request(
            addr,
            "POST",
            updates,
            &[("Authorization", &reader), OCTETS],
            &update
        )
        .await
        .error_code(),
        403
    );
    assert_eq!(
        request(addr, "DELETE", path, &[("Authorization", &editor)], b"")
            .await
            .error_code(),
        403,
        "deleting takes admin"
    );
    assert_eq!(
        request(addr, "GET", path, &[("Authorization", &reader)], b"")
            .await
            .error_code(),
        404,
        "never written"
    );
    assert_eq!(
        request(
            addr,
            "POST",
            updates,
            &[("Authorization", &editor), OCTETS],
            &update
        )
        .await
        .status,
        204
    );
    assert_eq!(
        request(
            addr,
            "GET",
            path,
            &[("Authorization", &reader), ("Accept", "text/html")],
            b""
        )
        .await
        .error_code(),
        406
    );
    let wrong_method = request(addr, "PUT", path, &[("Authorization", &admin)], b"").await;
    assert_eq!(wrong_method.error_code(), 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD, DELETE"));
    assert_eq!(
        request(
            addr,
            "POST",
            updates,
            &[("Authorization", &editor), ("Content-Type", "text/plain")],
            &update
        )
        .await
        .error_code(),
        415
    );
    assert_eq!(
        request(
            addr,
            "POST",
            updates,
            &[("Authorization", &editor), OCTETS],
            &[0xff; 8]
        )
        .await
        .error_code(),
        400
    );
    assert_eq!(
        request(
            addr,
            "POST",
            updates,
            &[("Authorization", &editor), OCTETS],
            &[7; 2048]
        )
        .await
        .error_code(),
        413,
        "over --max-message-bytes"
    );
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/nothing",
            &[("Authorization", &admin)],
            b""
        )
        .await
        .error_code(),
        404
    );
    let listed = request(
        addr,
        "GET",
        "/api/documents?limit=0",
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(listed.error_code(), 400);
    let listed = request(
        addr,
        "GET",
        "/api/documents",
        &[("Authorization", &reader)],
        b"",
    )
    .await;
    assert_eq!(
        listed.json(),
        serde_json::json!({ "documents": [{ "name": "team/a", "loaded": true, "snapshotBytes": 0 }], "next": null })
    );
    assert_eq!(
        request(addr, "DELETE", path, &[("Authorization", &admin)], b"")
            .await
            .status,
        204
    );
}
