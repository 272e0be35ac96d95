//! How sessions end: a client that does not read, a draining node, a client
//! that stops answering heartbeats.

mod common;

use std::time::Duration;

use common::{Client, TestServer, WAIT, bounded};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use weft_gateway::GatewayConfig;
use weft_gateway::error::close_code;

#[tokio::test]
async fn client_that_does_not_read_is_disconnected_and_the_writer_is_not() {
    // The updates that reach the non-reader must overflow its queue of 16
    // frames after filling both TCP buffers (the server's send buffer grows
    // to a few MiB on loopback, ~3 MiB were absorbed here): 192 updates of
    // 64 KiB are 12 MiB.
    const UPDATES: usize = 192;
    const UPDATE_BYTES: usize = 64 * 1024;
    let config = GatewayConfig {
        send_queue_frames: 16,
        ..GatewayConfig::default()
    };
    let server = TestServer::start(config).await;

    // The slow client joins with a small receive buffer and never reads.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = bounded(WAIT, "TCP connect", socket.connect(server.addr))
        .await
        .expect("connect");
    let mut slow = Client::try_connect_over(stream, server.addr, "/busy")
        .await
        .expect("upgrade");

    let mut writer = server.join("/busy", 1).await;
    let mut observer = server.join("/busy", 2).await;
    // One update at a time, each seen by the observer before the next, so
    // the observer (which reads) never has more than one frame queued.
    let chunk = "y".repeat(UPDATE_BYTES);
    for sent in 0..UPDATES {
        let update = writer.prepend(&chunk).await;
        assert_eq!(observer.apply_next_update().await, update, "update {sent}");
    }

    // The slow client was cut off: its stream ends with 1013, or without a
    // close frame if the server could not write one to the full socket.
    let ending = slow.close_or_end(Duration::from_secs(60)).await;
    assert!(
        ending.is_none_or(|code| code == close_code::TRY_AGAIN_LATER),
        "the slow client must be closed with 1013 or dropped, got close code {ending:?}"
    );

    // The writer is still served both ways.
    let last = writer.append(" done").await;
    assert_eq!(observer.apply_next_update().await, last);
    let reply = observer.append("!").await;
    assert_eq!(writer.apply_next_update().await, reply);
    let fresh = server.join("/busy", 3).await;
    assert_eq!(fresh.text().len(), UPDATES * UPDATE_BYTES + " done!".len());
    assert_eq!(fresh.text(), writer.text());
}

#[tokio::test]
async fn draining_closes_sessions_with_1012_and_refuses_new_ones() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut first = server.join("/drain/a", 1).await;
    let mut second = server.join("/drain/b", 2).await;
    assert_eq!(server.get("/readyz").await.status, 200);

    server.state.lifecycle.start_draining();
    assert_eq!(
        first.client.expect_close().await,
        close_code::SERVICE_RESTART
    );
    assert_eq!(
        second.client.expect_close().await,
        close_code::SERVICE_RESTART
    );
    bounded(
        WAIT,
        "session tasks to end",
        server.state.lifecycle.sessions_closed(),
    )
    .await;
    assert_eq!(server.state.lifecycle.open_sessions(), 0);

    let refused = server.upgrade_request("/drain/a").await;
    refused.assert_json_error(503);
    let retry_after = refused.header("retry-after").expect("Retry-After on a 503");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|seconds| seconds > 0),
        "Retry-After {retry_after:?}"
    );

    // A real WebSocket client sees the same refusal.
    match Client::try_connect(server.addr, "/drain/a").await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("a draining node accepted an upgrade"),
    }

    let readiness = server.get("/readyz").await;
    readiness.assert_json_error(503);
    assert!(readiness.header("retry-after").is_some());
    assert_eq!(
        server.get("/healthz").await.status,
        200,
        "a draining node is still alive"
    );
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let config = GatewayConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(500),
        ..GatewayConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut live = server.join("/heartbeat", 1).await;

    // The client reads, and so answers every ping, for twice the timeout.
    let mut pings = 0;
    while pings < 10 {
        match live.client.next_raw(WAIT).await {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    let mut writer = server.join("/heartbeat", 2).await;
    let update = writer.append("still here").await;
    assert_eq!(
        live.apply_next_update().await,
        update,
        "the client is still served"
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_with_1001_after_the_heartbeat_timeout() {
    // No ping falls due before the timeout, so the client has nothing to
    // answer: the server hears nothing from it.
    let timeout = Duration::from_millis(400);
    let config = GatewayConfig {
        heartbeat_interval: Duration::from_secs(60),
        heartbeat_timeout: timeout,
        ..GatewayConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut silent = server.connect("/heartbeat").await;
    let connected = Instant::now();
    assert_eq!(silent.expect_close().await, close_code::GOING_AWAY);
    assert!(
        connected.elapsed() >= timeout / 2,
        "closed after {:?}, before the timeout",
        connected.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_only_answers_pings_is_closed_after_the_idle_timeout() {
    // Pongs keep the heartbeat alive but are not activity: a session that
    // sends no message for the idle timeout is closed with 1001.
    let idle = Duration::from_millis(600);
    let config = GatewayConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(5),
        idle_timeout: idle,
        ..GatewayConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut quiet = server.join("/idle", 1).await;
    let joined = Instant::now();
    let mut pings = 0;
    let code = loop {
        match quiet.client.next_raw(WAIT).await {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(WsMessage::Close(Some(frame)))) => break u16::from(frame.code),
            other => panic!("expected pings then a close, got {other:?}"),
        }
        assert!(pings < 100, "never closed");
    };
    assert_eq!(code, close_code::GOING_AWAY);
    assert!(pings >= 2, "it answered pings meanwhile ({pings})");
    assert!(
        joined.elapsed() >= idle / 2,
        "closed after {:?}",
        joined.elapsed()
    );
}
