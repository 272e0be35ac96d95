//! Malformed input ends only the offending session, with the close code
//! that says why, and leaves the document untouched.

mod common;

use common::{Peer, TestServer};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_gateway::GatewayConfig;
use weft_gateway::error::close_code;
use weft_protocol::{Message, SyncMessage, decode_frame};
use yrs::Update;
use yrs::updates::decoder::Decode;

const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A document with content, a writer and an observer on it; `bad` is sent by
/// a third client, which must be closed with `expected`. Then the document
/// must be as it was, and the writer and observer must still be served.
async fn closes_only_the_offender(doc: &str, bad: WsMessage, expected: u16) {
    let config = GatewayConfig {
        max_message_bytes: MAX_MESSAGE_BYTES,
        ..GatewayConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut writer = server.join(doc, 1).await;
    let mut observer = server.join(doc, 2).await;
    writer.append("before").await;
    observer.apply_next_update().await;
    let state_before = writer.state_vector();

    let mut offender = server.connect(doc).await;
    assert!(matches!(
        offender.recv().await,
        Message::Sync(SyncMessage::SyncStep1(_))
    ));
    offender.send_ws(bad).await;
    assert_eq!(offender.expect_close().await, expected);

    // The document is untouched: a fresh client is greeted with the same
    // state and syncs to the same text.
    let fresh = server.join(doc, 3).await;
    assert_eq!(
        fresh.server_state, state_before,
        "the server's state vector changed"
    );
    assert_eq!(fresh.state_vector(), state_before);
    assert_eq!(fresh.text(), "before");

    // The others are still connected and served; the observer's next frame
    // is the writer's update (nothing of the offender's was relayed).
    let after = writer.append(" after").await;
    assert_eq!(observer.apply_next_update().await, after);
    assert_eq!(observer.text(), "before after");
    let mut fresh = fresh;
    assert_eq!(fresh.apply_next_update().await, after);
    let from_fresh = fresh.append("!").await;
    assert_eq!(writer.apply_next_update().await, from_fresh);
    assert_eq!(observer.apply_next_update().await, from_fresh);
    assert_eq!(writer.text(), "before after!");
    check_peers_agree(&[&writer, &observer, &fresh]);
}

fn check_peers_agree(peers: &[&Peer]) {
    for peer in peers {
        assert_eq!(peer.text(), peers[0].text());
        assert_eq!(peer.state_vector(), peers[0].state_vector());
    }
}

#[tokio::test]
async fn garbage_bytes_close_with_protocol_error() {
    let garbage = vec![0xde, 0xad, 0xbe, 0xef];
    assert!(
        decode_frame(&garbage).is_err(),
        "the test needs bytes that are not a message"
    );
    closes_only_the_offender(
        "/malformed/garbage",
        WsMessage::Binary(garbage.into()),
        close_code::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn text_frame_closes_with_unsupported_data() {
    closes_only_the_offender(
        "/malformed/text",
        WsMessage::text("hello?"),
        close_code::UNSUPPORTED_DATA,
    )
    .await;
}

#[tokio::test]
async fn unknown_message_tag_closes_with_unsupported_data() {
    let frame = Message::Unknown {
        tag: 100,
        payload: vec![1, 2, 3],
    }
    .encode();
    assert_eq!(
        decode_frame(&frame).expect("well-framed"),
        Message::Unknown {
            tag: 100,
            payload: vec![1, 2, 3]
        }
    );
    closes_only_the_offender(
        "/malformed/unknown-tag",
        WsMessage::Binary(frame.into()),
        close_code::UNSUPPORTED_DATA,
    )
    .await;
}

#[tokio::test]
async fn update_that_is_not_a_yjs_update_closes_with_invalid_payload() {
    let payload = vec![0x05, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    assert!(
        Update::decode_v1(&payload).is_err(),
        "the test needs bytes that are not a Yjs update"
    );
    let frame = Message::Sync(SyncMessage::Update(payload)).encode();
    closes_only_the_offender(
        "/malformed/update",
        WsMessage::Binary(frame.into()),
        close_code::INVALID_PAYLOAD,
    )
    .await;
}

#[tokio::test]
async fn sync_step2_that_is_not_a_yjs_update_closes_with_invalid_payload() {
    let payload = vec![0x05, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let frame = Message::Sync(SyncMessage::SyncStep2(payload)).encode();
    closes_only_the_offender(
        "/malformed/step2",
        WsMessage::Binary(frame.into()),
        close_code::INVALID_PAYLOAD,
    )
    .await;
}

#[tokio::test]
async fn message_over_the_limit_closes_with_message_too_big() {
    // A well-formed Update, only too large.
    let doc = yrs::Doc::with_client_id(9);
    let update = common::append_local(&doc, &"x".repeat(MAX_MESSAGE_BYTES + 1024));
    let frame = Message::Sync(SyncMessage::Update(update)).encode();
    assert!(frame.len() > MAX_MESSAGE_BYTES);
    closes_only_the_offender(
        "/malformed/too-big",
        WsMessage::Binary(frame.into()),
        close_code::MESSAGE_TOO_BIG,
    )
    .await;
}

#[tokio::test]
async fn hocuspocus_message_over_the_limit_closes_with_message_too_big() {
    let config = GatewayConfig {
        max_message_bytes: MAX_MESSAGE_BYTES,
        ..GatewayConfig::default()
    };
    let server = TestServer::start(config).await;
    // A Hocuspocus socket (an upgrade at `/`) gets the same close as a
    // y-websocket one: the message is refused before it is decoded.
    let mut socket = server.connect("/").await;
    socket
        .send_ws(WsMessage::Binary(vec![0; MAX_MESSAGE_BYTES + 1024].into()))
        .await;
    assert_eq!(socket.expect_close().await, close_code::MESSAGE_TOO_BIG);
}
