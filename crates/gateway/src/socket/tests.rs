//! The socket loop driven through channels: no socket, no HTTP, the same
//! loop on both wire protocols.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fragments;
mod live;
mod stalled;
mod upstream;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use weft_protocol::hocuspocus::{encode_addressed, encode_authenticated, encode_sync_status};
use weft_protocol::{Message, SyncMessage};
use weft_sync::{MemoryStore, Registry, RegistryConfig};
use yrs::{Doc, Text, Transact};

use super::*;
use crate::auth::{Access, Authenticator};
use crate::close::close_code;
use crate::limits::{Admission, LimitsConfig};

/// Upper bound of every wait for the loop.
const WAIT: Duration = Duration::from_secs(10);

/// The document every test opens.
const DOC: &str = "doc";

type Inbound = Result<WsMessage, WsError>;

/// A socket loop running on channels: what the test sends is what the loop
/// reads, what the loop writes the test receives.
struct Driven {
    to_loop: mpsc::UnboundedSender<Inbound>,
    from_loop: mpsc::UnboundedReceiver<WsMessage>,
    task: JoinHandle<Option<CloseReason>>,
    stop: CancellationToken,
    /// Tripped when the socket's queue overflows.
    overflowed: CancellationToken,
    /// A stalled socket's client: each message lets one frame through;
    /// dropped, everything flows.
    pull: Option<mpsc::UnboundedSender<()>>,
}

fn registry() -> Registry {
    Registry::embedded(Arc::new(MemoryStore::new()), RegistryConfig::default())
}

fn permit() -> crate::limits::ConnectionPermit {
    Admission::new(LimitsConfig {
        max_connections: 0,
        max_connections_per_ip: 0,
        upgrades_per_ip_per_second: 0,
    })
    .admit(IpAddr::V4(Ipv4Addr::LOCALHOST))
    .unwrap()
}

fn start<W: Wire>(
    wire: W,
    joined: Option<Joined>,
    outbox: SocketOutbox,
    registry: &Registry,
    config: GatewayConfig,
) -> Driven {
    let (outbound, from_loop) = mpsc::unbounded::<WsMessage>();
    start_on(wire, joined, outbox, registry, config, outbound, from_loop)
}

/// [`start`] writing into `outbound`, which the test reads as `from_loop`.
fn start_on<W: Wire, S>(
    wire: W,
    joined: Option<Joined>,
    outbox: SocketOutbox,
    registry: &Registry,
    config: GatewayConfig,
    outbound: S,
    from_loop: mpsc::UnboundedReceiver<WsMessage>,
) -> Driven
where
    S: futures::Sink<WsMessage> + Unpin + Send + 'static,
{
    let (to_loop, inbound) = mpsc::unbounded::<Inbound>();
    let stop = CancellationToken::new();
    let overflowed = outbox.overflowed.clone();
    let parts = SocketParts {
        wire,
        joined,
        outbox,
        permit: permit(),
        stop: stop.clone(),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::new(registry.clone())),
        revocations: crate::live::Revocations::disabled().subscribe(),
    };
    let task = tokio::spawn(drive(outbound, inbound, parts));
    Driven {
        to_loop,
        from_loop,
        task,
        stop,
        overflowed,
        pull: None,
    }
}

/// A y-websocket socket on `DOC` of `registry`.
async fn y_websocket(registry: &Registry, access: Access, config: GatewayConfig) -> Driven {
    let outbox = SocketOutbox::new(config.send_queue_frames, config.send_queue_bytes);
    let deleted = CancellationToken::new();
    let session = registry
        .join(DOC, outbox.direct(deleted.clone()))
        .await
        .unwrap();
    let joined = Joined {
        doc: DOC.into(),
        session,
        access,
        token: None,
        deleted,
    };
    start(YWebsocket, Some(joined), outbox, registry, config)
}

/// A Hocuspocus socket on `registry`, with no document yet.
fn hocuspocus(registry: &Registry, config: GatewayConfig) -> Driven {
    let wire = Hocuspocus {
        joiner: Joiner {
            registry: registry.clone(),
            auth: Authenticator::Open,
            context: Default::default(),
            revocations: crate::live::Revocations::disabled(),
            forwarder: None,
            moves: None,
        },
    };
    let outbox = SocketOutbox::new(config.send_queue_frames, config.send_queue_bytes);
    start(wire, None, outbox, registry, config)
}

impl Driven {
    /// Lets one frame of a stalled socket through.
    fn pull_one(&self) {
        if let Some(pull) = &self.pull {
            pull.unbounded_send(()).unwrap();
        }
    }

    /// The stalled socket's client reads everything from now on.
    fn read_freely(&mut self) {
        self.pull = None;
    }

    async fn send(&mut self, frame: Vec<u8>) {
        self.to_loop
            .send(Ok(WsMessage::Binary(frame.into())))
            .await
            .unwrap();
    }

    /// The next binary frame the loop wrote (pings skipped).
    async fn next_binary(&mut self) -> Vec<u8> {
        loop {
            let message = tokio::time::timeout(WAIT, self.from_loop.next())
                .await
                .expect("a frame in time")
                .expect("the loop is still writing");
            match message {
                WsMessage::Binary(frame) => return frame.to_vec(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// The close code the loop sent (frames before it skipped), once the
    /// loop has ended; checks the loop returned the same reason.
    async fn expect_close(mut self) -> u16 {
        let code = loop {
            let message = tokio::time::timeout(WAIT, self.from_loop.next())
                .await
                .expect("a close in time")
                .expect("a close frame before the end");
            if let WsMessage::Close(frame) = message {
                break u16::from(frame.expect("a close code").code);
            }
        };
        // The peer answers the close; the loop ends.
        drop(self.to_loop);
        let reason = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the loop ends")
            .unwrap()
            .expect("the server closed");
        assert_eq!(reason.code(), code);
        code
    }
}

/// A Hocuspocus client's token message for `address` (auth, token).
fn token_frame(address: &str, token: &str) -> Vec<u8> {
    let mut frame = vec![u8::try_from(address.len()).unwrap()];
    frame.extend_from_slice(address.as_bytes());
    frame.extend_from_slice(&[2, 0, u8::try_from(token.len()).unwrap()]);
    frame.extend_from_slice(token.as_bytes());
    frame
}

/// A y-websocket Update message inserting `text`.
fn update_message(client_id: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client_id);
    let root = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    root.insert(&mut txn, 0, text);
    Message::Sync(SyncMessage::Update(txn.encode_update_v1())).encode()
}

/// Joins `DOC` on a Hocuspocus socket and reads the answer and greeting.
async fn authenticate(socket: &mut Driven) {
    socket.send(token_frame(DOC, "")).await;
    assert_eq!(socket.next_binary().await, encode_authenticated(DOC, false));
    // The document's SyncStep1, addressed.
    let step1 = socket.next_binary().await;
    assert!(step1.starts_with(&encode_addressed(DOC, &[])));
}

fn too_big() -> Inbound {
    Err(WsError::Capacity(CapacityError::MessageTooLong {
        size: 2048,
        max_size: 1024,
    }))
}

#[tokio::test]
async fn a_hocuspocus_update_is_acknowledged_once_durable() {
    let registry = registry();
    let mut socket = hocuspocus(&registry, GatewayConfig::default());
    authenticate(&mut socket).await;
    socket
        .send(encode_addressed(DOC, &update_message(1, "hello")))
        .await;
    assert_eq!(socket.next_binary().await, encode_sync_status(DOC, true));
    socket.stop.cancel();
    assert_eq!(socket.expect_close().await, close_code::SERVICE_RESTART);
}

#[tokio::test]
async fn a_broadcast_reaches_both_protocols_each_in_its_framing() {
    let registry = registry();
    let mut writer = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    writer.next_binary().await;
    let mut first = hocuspocus(&registry, GatewayConfig::default());
    authenticate(&mut first).await;
    let mut second = hocuspocus(&registry, GatewayConfig::default());
    authenticate(&mut second).await;
    let mut plain = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    plain.next_binary().await;
    let update = update_message(1, "to all");
    writer.send(update.clone()).await;
    // The Hocuspocus sessions share one addressed frame; the y-websocket
    // session gets the frame as it is.
    assert_eq!(first.next_binary().await, encode_addressed(DOC, &update));
    assert_eq!(second.next_binary().await, encode_addressed(DOC, &update));
    assert_eq!(plain.next_binary().await, update);
}

#[tokio::test]
async fn a_y_websocket_update_is_applied_and_broadcast_to_the_others() {
    let registry = registry();
    let mut writer = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    let mut reader = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    // Both greetings: the document's SyncStep1.
    writer.next_binary().await;
    reader.next_binary().await;
    let update = update_message(1, "hello");
    writer.send(update.clone()).await;
    assert_eq!(reader.next_binary().await, update);
}

#[tokio::test]
async fn a_read_only_update_is_not_applied() {
    let registry = registry();
    let mut reader = y_websocket(&registry, Access::Read, GatewayConfig::default()).await;
    reader.next_binary().await;
    // The read-only notice follows the greeting.
    let notice = reader.next_binary().await;
    assert!(matches!(
        weft_protocol::decode_frame(&notice),
        Ok(Message::Auth(_))
    ));
    reader.send(update_message(1, "nope")).await;
    let mut observer = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    observer.next_binary().await;
    observer
        .send(Message::Sync(SyncMessage::SyncStep1(Default::default())).encode())
        .await;
    // The answer holds nothing: the read-only update was dropped.
    let Ok(Message::Sync(SyncMessage::SyncStep2(state))) =
        weft_protocol::decode_frame(&observer.next_binary().await)
    else {
        panic!("a SyncStep2");
    };
    assert_eq!(state, vec![0, 0]);
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_on_both_protocols() {
    let registry = registry();
    let mut y_socket = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    y_socket.to_loop.send(too_big()).await.unwrap();
    assert_eq!(y_socket.expect_close().await, close_code::MESSAGE_TOO_BIG);

    let mut hocus = hocuspocus(&registry, GatewayConfig::default());
    authenticate(&mut hocus).await;
    hocus.to_loop.send(too_big()).await.unwrap();
    assert_eq!(hocus.expect_close().await, close_code::MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn a_malformed_frame_closes_with_protocol_error_on_both_protocols() {
    let registry = registry();
    let mut y_socket = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    y_socket.send(vec![0xde, 0xad, 0xbe, 0xef]).await;
    assert_eq!(y_socket.expect_close().await, close_code::PROTOCOL_ERROR);

    let mut hocus = hocuspocus(&registry, GatewayConfig::default());
    // An address that declares five bytes and carries none.
    hocus.send(vec![0x05]).await;
    assert_eq!(hocus.expect_close().await, close_code::PROTOCOL_ERROR);
}

#[tokio::test]
async fn text_and_unknown_messages_close_with_unsupported_data() {
    let registry = registry();
    let mut text = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    text.to_loop
        .send(Ok(WsMessage::Text("hello?".into())))
        .await
        .unwrap();
    assert_eq!(text.expect_close().await, close_code::UNSUPPORTED_DATA);

    let mut unknown = hocuspocus(&registry, GatewayConfig::default());
    authenticate(&mut unknown).await;
    let frame = Message::Unknown {
        tag: 100,
        payload: vec![1, 2, 3],
    }
    .encode();
    unknown.send(encode_addressed(DOC, &frame)).await;
    assert_eq!(unknown.expect_close().await, close_code::UNSUPPORTED_DATA);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let config = GatewayConfig {
        idle_timeout: Duration::from_secs(5),
        ..GatewayConfig::default()
    };
    let registry = registry();
    let y_socket = y_websocket(&registry, Access::ReadWrite, config.clone()).await;
    let started = tokio::time::Instant::now();
    assert_eq!(y_socket.expect_close().await, close_code::GOING_AWAY);
    assert!(started.elapsed() >= Duration::from_secs(5));

    let hocus = hocuspocus(&registry, config);
    assert_eq!(hocus.expect_close().await, close_code::GOING_AWAY);
}

#[tokio::test]
async fn a_deleted_document_closes_a_y_websocket_and_detaches_a_hocuspocus_one() {
    let registry = registry();
    let mut y_socket = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    let mut hocus = hocuspocus(&registry, GatewayConfig::default());
    authenticate(&mut hocus).await;
    y_socket.send(update_message(1, "soon gone")).await;
    hocus.next_binary().await; // the broadcast of that update
    registry.delete(DOC).await.unwrap();
    assert_eq!(y_socket.expect_close().await, close_code::DOCUMENT_DELETED);
    // The Hocuspocus socket is told for that document and stays open.
    let detached =
        weft_protocol::hocuspocus::encode_close(DOC, close_code::DOCUMENT_DELETED_REASON);
    assert_eq!(hocus.next_binary().await, detached);
    hocus
        .send(vec![weft_protocol::hocuspocus::HOCUS_PING])
        .await;
    assert_eq!(
        hocus.next_binary().await,
        vec![weft_protocol::hocuspocus::HOCUS_PONG]
    );
}

#[tokio::test]
async fn a_hocuspocus_document_left_can_be_joined_again() {
    let registry = registry();
    let mut socket = hocuspocus(&registry, GatewayConfig::default());
    for _ in 0..3 {
        authenticate(&mut socket).await;
        let mut leave = token_frame(DOC, "");
        leave.truncate(1 + DOC.len());
        leave.push(7); // CLOSE
        socket.send(leave).await;
    }
    authenticate(&mut socket).await;
    socket
        .send(encode_addressed(DOC, &update_message(1, "back")))
        .await;
    assert_eq!(socket.next_binary().await, encode_sync_status(DOC, true));
}

/// A y-websocket session's parts, joined to [`DOC`].
async fn idle_parts(registry: &Registry) -> SocketParts<YWebsocket> {
    let config = GatewayConfig::default();
    let outbox = SocketOutbox::new(config.send_queue_frames, config.send_queue_bytes);
    let deleted = CancellationToken::new();
    let session = registry
        .join(DOC, outbox.direct(deleted.clone()))
        .await
        .unwrap();
    let joined = Joined {
        doc: DOC.into(),
        session,
        access: Access::ReadWrite,
        token: None,
        deleted,
    };
    SocketParts {
        wire: YWebsocket,
        joined: Some(joined),
        outbox,
        permit: permit(),
        stop: CancellationToken::new(),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::new(registry.clone())),
        revocations: crate::live::Revocations::disabled().subscribe(),
    }
}

/// The socket loop's future is allocated once per session and held for its
/// life: its size is part of every idle session's memory.
#[tokio::test]
async fn the_session_task_stays_small() {
    let registry = registry();
    let parts = idle_parts(&registry).await;
    let parts_bytes = std::mem::size_of_val(&parts);
    let (_to_loop, inbound) = mpsc::unbounded::<Inbound>();
    let (outbound, _from_loop) = mpsc::unbounded::<WsMessage>();
    let task = drive(outbound, inbound, parts);
    let task_bytes = std::mem::size_of_val(&task);
    // What a node spawns: `run` over a WebSocket stream, the loop with
    // the stream's halves.
    let (server_end, _client_end) = tokio::io::duplex(64);
    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        server_end,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    let socket_bytes = std::mem::size_of_val(&socket);
    let session = run(socket, idle_parts(&registry).await);
    let session_bytes = std::mem::size_of_val(&session);
    eprintln!(
        "session task {task_bytes} bytes (its parts {parts_bytes}); \
         over a WebSocket stream ({socket_bytes} bytes) {session_bytes}"
    );
    // Every idle session holds this future: 3,528 bytes before the join and
    // the update submission were boxed; 1,968 before live auth (the token's
    // facts, the expiry timer and the revocation watch) added about 150.
    assert!(
        task_bytes <= MAX_SESSION_TASK_BYTES,
        "the session task is {task_bytes} bytes"
    );
    assert!(
        session_bytes <= MAX_SOCKET_TASK_BYTES,
        "the session task over a WebSocket stream is {session_bytes} bytes"
    );
}

/// The bound `the_session_task_stays_small` holds the socket loop to:
/// 2,048 bytes before live auth (the token's expiry timer and the
/// revocations watch) and the acknowledgement window joined the loop;
/// 2,240 before per-document forwarding of Hocuspocus sockets (the
/// upstream path and the moves of a socket's documents) joined it; 2,400
/// before `drive` took its parts apart before making its future (it held
/// them as its argument and again as the pieces); 2,096 before the wait
/// for acknowledgements stopped making their set in every session.
const MAX_SESSION_TASK_BYTES: usize = 2112;

/// The bound on `run`'s future over a WebSocket stream (in memory here; a
/// node's upgraded connection is the same size): 2,576 bytes while `drive`
/// was an `async fn` (`run` is not one either: as one it held the socket
/// and its parts a second time, beside the loop's future).
const MAX_SOCKET_TASK_BYTES: usize = 2288;
