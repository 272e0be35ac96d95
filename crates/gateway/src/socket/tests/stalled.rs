//! A client that stops reading: bounded by the bytes queued for it.

use super::*;

/// A y-websocket socket whose client does not read: the loop writes into a
/// channel that holds one message until the test takes it, so the writer
/// blocks as on a full TCP window. Returns the socket and its byte counter.
async fn stalled_y_websocket(
    registry: &Registry,
    config: GatewayConfig,
) -> (Driven, Arc<weft_sync::QueuedBytes>) {
    let outbox = SocketOutbox::new(config.send_queue_frames, config.send_queue_bytes);
    let queued = outbox.queued.clone();
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
    // `mpsc::channel(0)` holds one message per sender; relay it into the
    // unbounded channel the test reads only when the test asks for more.
    let (blocking, mut held) = mpsc::channel::<WsMessage>(0);
    let (mut relay, from_loop) = mpsc::unbounded::<WsMessage>();
    let (pull, mut pulls) = mpsc::unbounded::<()>();
    tokio::spawn(async move {
        while pulls.next().await.is_some() {
            let Some(message) = held.next().await else {
                return;
            };
            if relay.send(message).await.is_err() {
                return;
            }
        }
        // The test reads freely from now on.
        while let Some(message) = held.next().await {
            if relay.send(message).await.is_err() {
                return;
            }
        }
    });
    let mut socket = start_on(
        YWebsocket,
        Some(joined),
        outbox,
        registry,
        config,
        blocking,
        from_loop,
    );
    socket.pull = Some(pull);
    (socket, queued)
}

#[tokio::test]
async fn a_reader_past_its_byte_bound_is_closed_with_1013_and_the_others_keep_receiving() {
    const BOUND: usize = 64 * 1024;
    const TEXT_BYTES: usize = 8 * 1024;
    let config = GatewayConfig {
        send_queue_bytes: BOUND,
        ..GatewayConfig::default()
    };
    let registry = registry();
    let (mut stalled, queued) = stalled_y_websocket(&registry, config.clone()).await;
    let mut reader = y_websocket(&registry, Access::ReadWrite, config.clone()).await;
    stalled.pull_one();
    stalled.next_binary().await; // the greeting; the client reads no more
    reader.next_binary().await;
    // The writer is a session of its own, so each update is awaited until
    // durable and broadcast.
    let (frames, _writer_frames) = weft_sync::outbox_channel(16);
    let writer = registry
        .join(
            DOC,
            weft_sync::SessionOutbox {
                frames,
                queued: weft_sync::QueuedBytes::new(usize::MAX),
                overflowed: CancellationToken::new(),
                deleted: CancellationToken::new(),
                prefix: bytes::Bytes::new(),
            },
        )
        .await
        .unwrap();
    let mut sent = Vec::new();
    let mut offered = 0;
    for id in 1..=32u64 {
        let text = char::from(b'a' + u8::try_from(id % 26).unwrap())
            .to_string()
            .repeat(TEXT_BYTES);
        let update = update_message(100 + id, &text);
        let Ok(Message::Sync(SyncMessage::Update(payload))) = weft_protocol::decode_frame(&update)
        else {
            panic!("an update message");
        };
        writer
            .submit_update(payload)
            .await
            .unwrap()
            .unwrap()
            .wait()
            .await
            .unwrap();
        offered += update.len();
        sent.push(update);
        if stalled.overflowed.is_cancelled() {
            break;
        }
        assert!(
            offered <= BOUND,
            "{offered} bytes offered and the session not cut off"
        );
        assert!(queued.get() <= BOUND);
    }
    assert!(
        stalled.overflowed.is_cancelled(),
        "the stalled reader is cut off"
    );
    assert!(
        offered > BOUND,
        "cut off only past the bound ({offered} bytes offered)"
    );
    // The other reader received every update, in order.
    for update in &sent {
        assert_eq!(&reader.next_binary().await, update);
    }
    stalled.read_freely();
    assert_eq!(stalled.expect_close().await, close_code::TRY_AGAIN_LATER);
}
