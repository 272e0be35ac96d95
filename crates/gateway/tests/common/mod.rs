//! Harness shared by the gateway's integration tests: the real router served
//! by `axum::serve` on 127.0.0.1, a y-websocket client over a real socket,
//! and a raw HTTP/1.1 client for the service routes and refused upgrades.
//!
//! Every wait is bounded by [`WAIT`] (or a caller's own bound): a test that
//! waits for a frame that never comes fails instead of hanging.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

mod http;
mod wait;

pub(crate) use self::http::{HttpResponse, http_request};
pub(crate) use self::wait::{WAIT, bounded};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use weft_gateway::{AppState, GatewayConfig, Lifecycle};
use weft_protocol::{
    AwarenessUpdate, AwarenessUpdateEntry, Message, StateVector, SyncMessage, decode_frame,
};
use weft_sync::{MemoryStore, Registry, RegistryConfig};
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

/// Name of the shared text every test peer edits.
pub(crate) const TEXT: &str = "content";

/// The router served on an ephemeral loopback port.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) state: AppState,
    serve: JoinHandle<()>,
}

impl TestServer {
    /// A server on a fresh in-memory store with default registry timers.
    pub(crate) async fn start(config: GatewayConfig) -> Self {
        let registry = Registry::embedded(Arc::new(MemoryStore::new()), RegistryConfig::default());
        Self::with_registry(registry, config).await
    }

    /// A server in front of `registry`.
    pub(crate) async fn with_registry(registry: Registry, config: GatewayConfig) -> Self {
        Self::with_auth(registry, config, weft_gateway::auth::Authenticator::Open).await
    }

    /// A server in front of `registry` that authenticates with `auth`.
    pub(crate) async fn with_auth(
        registry: Registry,
        config: GatewayConfig,
        auth: weft_gateway::auth::Authenticator,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let state = AppState {
            metrics: Arc::new(weft_gateway::Metrics::new(registry.clone())),
            registry,
            lifecycle: Lifecycle::new(),
            config: Arc::new(config),
            auth,
            admission: weft_gateway::limits::Admission::new(weft_gateway::limits::LimitsConfig {
                max_connections: 10_000,
                max_connections_per_ip: 10_000,
                upgrades_per_ip_per_second: 10_000,
            }),
            revocations: weft_gateway::live::Revocations::disabled(),
            ownership: None,
            idempotency: Default::default(),
        };
        let app = weft_gateway::router(state.clone());
        // As `weft serve` does: Yjs frames are small and latency-bound.
        let listener = listener.tap_io(|tcp| {
            tcp.set_nodelay(true).expect("TCP_NODELAY");
        });
        let serve = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("axum::serve failed");
        });
        Self { addr, state, serve }
    }

    /// Opens a WebSocket to `path` (which starts with `/`, already encoded).
    pub(crate) async fn connect(&self, path: &str) -> Client {
        Client::connect(self.addr, path).await
    }

    /// Joins `path` as a synced peer whose yrs doc has `client_id`.
    pub(crate) async fn join(&self, path: &str, client_id: u64) -> Peer {
        Peer::join(self.connect(path).await, client_id).await
    }

    /// Sends one raw HTTP/1.1 request and reads its response.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers).await
    }

    /// A plain `GET`.
    pub(crate) async fn get(&self, path: &str) -> HttpResponse {
        self.http("GET", path, &[("Connection", "close")]).await
    }

    /// A well-formed WebSocket upgrade request, read as plain HTTP so that a
    /// refusal's status, headers and whole body can be checked.
    pub(crate) async fn upgrade_request(&self, path: &str) -> HttpResponse {
        self.http("GET", path, UPGRADE_HEADERS).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

/// The headers of a valid WebSocket upgrade (RFC 6455 section 4.1).
pub(crate) const UPGRADE_HEADERS: &[(&str, &str)] = &[
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// A y-websocket client: one WebSocket, frames in and out.
pub(crate) struct Client {
    ws: WebSocketStream<TcpStream>,
}

impl Client {
    /// Connects to `path` on `addr`.
    pub(crate) async fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::try_connect(addr, path)
            .await
            .unwrap_or_else(|error| panic!("upgrade to {path} failed: {error}"))
    }

    /// Connects to `path`, returning the handshake error (e.g. an HTTP refusal).
    pub(crate) async fn try_connect(addr: SocketAddr, path: &str) -> Result<Self, WsError> {
        let stream = bounded(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        Self::try_connect_over(stream, addr, path).await
    }

    /// Runs the WebSocket handshake over an already connected `stream`.
    pub(crate) async fn try_connect_over(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
    ) -> Result<Self, WsError> {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let url = format!("ws://{addr}{path}");
        let (ws, _response) = bounded(
            WAIT,
            "WebSocket handshake",
            tokio_tungstenite::client_async(url, stream),
        )
        .await?;
        Ok(Self { ws })
    }

    /// Sends one y-websocket message as a binary frame.
    pub(crate) async fn send(&mut self, message: &Message) {
        self.send_ws(WsMessage::Binary(message.encode().into()))
            .await;
    }

    /// Sends any WebSocket message.
    pub(crate) async fn send_ws(&mut self, message: WsMessage) {
        bounded(WAIT, "a send", self.ws.send(message))
            .await
            .expect("send to server");
    }

    /// The next WebSocket message, pings and pongs included (the client
    /// answers pings by itself while it reads). `None` once the stream ended.
    pub(crate) async fn next_raw(&mut self, limit: Duration) -> Option<Result<WsMessage, WsError>> {
        bounded(limit, "a WebSocket message", self.ws.next()).await
    }

    /// The next data or close message, skipping pings and pongs.
    pub(crate) async fn next_ws(&mut self) -> Option<Result<WsMessage, WsError>> {
        loop {
            match self.next_raw(WAIT).await {
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                other => return other,
            }
        }
    }

    /// The next frame, which must be a binary y-websocket message.
    pub(crate) async fn recv(&mut self) -> Message {
        match self.next_ws().await {
            Some(Ok(WsMessage::Binary(frame))) => {
                decode_frame(&frame).expect("the server sent a frame that does not decode")
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a sync Update; returns its payload.
    pub(crate) async fn recv_update(&mut self) -> Vec<u8> {
        match self.recv().await {
            Message::Sync(SyncMessage::Update(update)) => update,
            other => panic!("expected a sync Update, got {other:?}"),
        }
    }

    /// The next frame, which must be an awareness update.
    pub(crate) async fn recv_awareness(&mut self) -> AwarenessUpdate {
        match self.recv().await {
            Message::Awareness(update) => update,
            other => panic!("expected an awareness update, got {other:?}"),
        }
    }

    /// Reads until the server's close frame (data frames queued before it
    /// are skipped) and returns its code. Fails if the stream ends without
    /// one.
    pub(crate) async fn expect_close(&mut self) -> u16 {
        match self.close_or_end(WAIT).await {
            Some(code) => code,
            None => panic!("the connection ended without a close frame"),
        }
    }

    /// Reads until the server's close frame (`Some(code)`) or until the
    /// connection ends without one (`None`), within `limit` in total.
    pub(crate) async fn close_or_end(&mut self, limit: Duration) -> Option<u16> {
        bounded(limit, "the server to close the connection", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                    Some(Ok(WsMessage::Close(None))) => panic!("close frame without a code"),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
    }

    /// Closes the connection normally and waits for the server's answer.
    pub(crate) async fn close(mut self) {
        bounded(WAIT, "the close handshake", async {
            let _already_closed = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A client with a yrs document that has done the sync handshake.
pub(crate) struct Peer {
    pub(crate) client: Client,
    pub(crate) doc: Doc,
    /// The state vector the server announced in its greeting.
    pub(crate) server_state: StateVector,
}

impl Peer {
    /// Does the y-sync handshake on a fresh connection with an empty doc:
    /// takes the server's SyncStep1, answers it, sends our SyncStep1 and
    /// applies the SyncStep2 that answers it.
    pub(crate) async fn join(mut client: Client, client_id: u64) -> Self {
        let doc = Doc::with_client_id(client_id);
        doc.get_or_insert_text(TEXT);
        let server_state = match client.recv().await {
            Message::Sync(SyncMessage::SyncStep1(state)) => state,
            other => panic!("the server's first frame must be SyncStep1, got {other:?}"),
        };
        let (answer, ours) = {
            let txn = doc.transact();
            (
                txn.encode_state_as_update_v1(&server_state),
                txn.state_vector(),
            )
        };
        client
            .send(&Message::Sync(SyncMessage::SyncStep2(answer)))
            .await;
        client
            .send(&Message::Sync(SyncMessage::SyncStep1(ours)))
            .await;
        let mut peer = Self {
            client,
            doc,
            server_state,
        };
        loop {
            match peer.client.recv().await {
                Message::Sync(SyncMessage::SyncStep2(update)) => {
                    peer.apply(&update);
                    return peer;
                }
                Message::Awareness(_) => {}
                other => panic!("expected SyncStep2 during the handshake, got {other:?}"),
            }
        }
    }

    /// The shared text as this peer sees it.
    pub(crate) fn text(&self) -> String {
        let text = self.doc.get_or_insert_text(TEXT);
        text.get_string(&self.doc.transact())
    }

    /// This peer's state vector.
    pub(crate) fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Appends `chunk` to the text and sends the change as a sync Update;
    /// returns the update's bytes.
    pub(crate) async fn append(&mut self, chunk: &str) -> Vec<u8> {
        let update = append_local(&self.doc, chunk);
        self.client
            .send(&Message::Sync(SyncMessage::Update(update.clone())))
            .await;
        update
    }

    /// Inserts `chunk` at the start of the text and sends the change. Unlike
    /// appends by one client, which yrs merges into one ever-growing string,
    /// each prepended chunk stays its own item: cheap for large volumes.
    pub(crate) async fn prepend(&mut self, chunk: &str) -> Vec<u8> {
        let update = insert_local(&self.doc, Some(0), chunk);
        self.client
            .send(&Message::Sync(SyncMessage::Update(update.clone())))
            .await;
        update
    }

    /// Applies a Yjs update to this peer's doc.
    pub(crate) fn apply(&self, update: &[u8]) {
        let decoded =
            Update::decode_v1(update).expect("the server sent an update that does not decode");
        self.doc
            .transact_mut()
            .apply_update(decoded)
            .expect("apply update");
    }

    /// Waits for the next frame, which must be a sync Update, and applies it.
    pub(crate) async fn apply_next_update(&mut self) -> Vec<u8> {
        let update = self.client.recv_update().await;
        self.apply(&update);
        update
    }
}

/// Appends `chunk` to `doc`'s text; returns the change as a v1 update.
pub(crate) fn append_local(doc: &Doc, chunk: &str) -> Vec<u8> {
    insert_local(doc, None, chunk)
}

/// Inserts `chunk` into `doc`'s text at `index` (the end if `None`);
/// returns the change as a v1 update.
fn insert_local(doc: &Doc, index: Option<u32>, chunk: &str) -> Vec<u8> {
    let text = doc.get_or_insert_text(TEXT);
    let before = doc.transact().state_vector();
    {
        let mut txn = doc.transact_mut();
        let index = index.unwrap_or_else(|| text.len(&txn));
        text.insert(&mut txn, index, chunk);
    }
    doc.transact().encode_state_as_update_v1(&before)
}

/// An awareness update carrying one client's state.
pub(crate) fn awareness(client_id: u64, clock: u32, json: &str) -> AwarenessUpdate {
    let entry = AwarenessUpdateEntry {
        clock,
        json: Arc::from(json),
    };
    AwarenessUpdate {
        clients: HashMap::from([(ClientID::new(client_id), entry)]),
    }
}

/// The entry of `client_id` in an awareness update, if any.
pub(crate) fn awareness_entry(update: &AwarenessUpdate, client_id: u64) -> Option<(u32, String)> {
    update
        .clients
        .get(&ClientID::new(client_id))
        .map(|entry| (entry.clock, entry.json.to_string()))
}

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    pub(crate) fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "weft-gateway-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _best_effort = std::fs::remove_dir_all(&self.path);
    }
}
