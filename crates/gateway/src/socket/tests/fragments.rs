//! A message larger than a fragment, through a real tokio-tungstenite
//! client over loopback TCP: it arrives whole, and the server's write
//! buffer never held more than a fragment of it.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use yrs::updates::decoder::Decode;
use yrs::{GetString, Update};

use super::*;
use crate::config::FRAGMENT_BYTES;
use crate::upgrade::socket_config;

/// The largest WebSocket frame header (a 64-bit length; a server's frames
/// are not masked).
const HEADER_BYTES: usize = 10;

/// The server's TCP stream, recording the largest write. tungstenite hands
/// its whole write buffer to each write, so the largest write is the most
/// the buffer held.
struct Recorded {
    inner: TcpStream,
    largest: Arc<AtomicUsize>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.largest.fetch_max(buf.len(), Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The next binary message the client reads (pings and pongs skipped).
async fn next_binary<T>(client: &mut WebSocketStream<T>) -> Vec<u8>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a valid message");
        match message {
            WsMessage::Binary(frame) => return frame.to_vec(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_larger_than_a_fragment_arrives_whole_and_the_write_buffer_holds_a_fragment() {
    let registry = registry();
    let config = GatewayConfig::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client_tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server_tcp, _) = listener.accept().await.unwrap();
    let largest = Arc::new(AtomicUsize::new(0));
    let recorded = Recorded {
        inner: server_tcp,
        largest: largest.clone(),
    };
    let server = WebSocketStream::from_raw_socket(
        recorded,
        Role::Server,
        Some(socket_config(config.max_message_bytes)),
    )
    .await;

    let outbox = SocketOutbox::new(config.send_queue_frames, config.send_queue_bytes);
    let queued = outbox.queued.clone();
    let deleted = CancellationToken::new();
    let session = registry
        .join(DOC, outbox.direct(deleted.clone()))
        .await
        .unwrap();
    let parts = SocketParts {
        wire: YWebsocket,
        joined: Some(Joined {
            doc: DOC.into(),
            session,
            access: Access::ReadWrite,
            token: None,
            deleted,
        }),
        outbox,
        permit: permit(),
        stop: CancellationToken::new(),
        config: Arc::new(config.clone()),
        metrics: Arc::new(Metrics::new(registry.clone())),
        revocations: crate::live::Revocations::disabled().subscribe(),
    };
    let (sink, stream) = server.split();
    let task = tokio::spawn(drive(sink, stream, parts));
    let mut client = WebSocketStream::from_raw_socket(
        client_tcp,
        Role::Client,
        Some(WebSocketConfig::default()),
    )
    .await;
    // The greeting: the document's SyncStep1.
    next_binary(&mut client).await;

    // Another client's update of about 10 fragments is broadcast to this
    // one, byte for byte.
    let text = "0123456789".repeat(FRAGMENT_BYTES);
    let update = update_message(1, &text);
    assert!(update.len() > 8 * FRAGMENT_BYTES);
    let mut writer = y_websocket(&registry, Access::ReadWrite, config).await;
    writer.next_binary().await;
    writer.send(update.clone()).await;
    assert_eq!(next_binary(&mut client).await, update);

    // The document's state, asked for: as large, and whole.
    client
        .send(WsMessage::Binary(
            Message::Sync(SyncMessage::SyncStep1(Default::default()))
                .encode()
                .into(),
        ))
        .await
        .unwrap();
    let Ok(Message::Sync(SyncMessage::SyncStep2(state))) =
        weft_protocol::decode_frame(&next_binary(&mut client).await)
    else {
        panic!("a SyncStep2");
    };
    let doc = Doc::new();
    let root = doc.get_or_insert_text("content");
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    assert_eq!(root.get_string(&doc.transact()), text);

    // Each message was written a fragment at a time, and its bytes were
    // released once written.
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest <= FRAGMENT_BYTES + HEADER_BYTES,
        "the write buffer held {largest} bytes"
    );
    assert_eq!(queued.get(), 0);
    drop(client);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
