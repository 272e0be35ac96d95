//! Auth while connected, in the socket loop: a token's expiry closes the
//! socket (4401) on one timer; a revocation closes (4403) or downgrades.

use tokio::sync::watch;

use super::*;
use crate::auth::LEEWAY_SECS;
use crate::live::{Revocation, RevocationList, Revocations, RevokedAccess, TokenFacts, unix_now};

fn facts(sub: &str, closes_in: u64) -> Arc<TokenFacts> {
    let now = unix_now();
    Arc::new(TokenFacts {
        sub: sub.to_owned(),
        jti: None,
        iat: Some(now - 10),
        exp: now - LEEWAY_SECS + closes_in,
    })
}

/// A y-websocket socket on `DOC` whose session holds `token`, watching
/// `revocations`.
async fn y_websocket_with(
    registry: &Registry,
    access: Access,
    token: Arc<TokenFacts>,
    revocations: watch::Receiver<Arc<RevocationList>>,
) -> Driven {
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
        access,
        token: Some(token),
        deleted,
    };
    let (outbound, from_loop) = mpsc::unbounded::<WsMessage>();
    let (to_loop, inbound) = mpsc::unbounded::<Inbound>();
    let stop = CancellationToken::new();
    let overflowed = outbox.overflowed.clone();
    let parts = SocketParts {
        wire: YWebsocket,
        joined: Some(joined),
        outbox,
        permit: permit(),
        stop: stop.clone(),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::new(registry.clone())),
        revocations,
    };
    Driven {
        to_loop,
        from_loop,
        task: tokio::spawn(drive(outbound, inbound, parts)),
        stop,
        overflowed,
        pull: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_is_closed_with_4401_when_its_token_expires() {
    let registry = registry();
    let revocations = Revocations::disabled();
    let socket = y_websocket_with(
        &registry,
        Access::ReadWrite,
        facts("alice", 5),
        revocations.subscribe(),
    )
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(socket.expect_close().await, close_code::TOKEN_EXPIRED);
    let waited = started.elapsed();
    // The wall clock's second boundary may fall either side.
    assert!(
        waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6),
        "{waited:?}"
    );
}

fn revocation(sub: &str, access: RevokedAccess) -> Revocation {
    let now = unix_now();
    Revocation {
        id: format!("{sub}-{access:?}"),
        sub: Some(sub.to_owned()),
        jti: None,
        docs: None,
        access,
        revoked_at: now,
        expires_at: now + 60,
    }
}

#[tokio::test]
async fn a_revocation_closes_one_session_with_4403_and_downgrades_another() {
    let registry = registry();
    let revocations = Revocations::disabled();
    let alice = y_websocket_with(
        &registry,
        Access::ReadWrite,
        facts("alice", 600),
        revocations.subscribe(),
    )
    .await;
    let mut bob = y_websocket_with(
        &registry,
        Access::ReadWrite,
        facts("bob", 600),
        revocations.subscribe(),
    )
    .await;
    // Both greeted (SyncStep1) before anything is revoked.
    bob.next_binary().await;
    revocations.apply(revocation("bob", RevokedAccess::Read));
    // Bob is told he is read-only, and his update is no longer applied.
    loop {
        let frame = bob.next_binary().await;
        if let Ok(Message::Auth(weft_protocol::AuthMessage::PermissionDenied(reason))) =
            weft_protocol::decode_frame(&frame)
        {
            assert!(reason.starts_with("read-only"), "{reason}");
            break;
        }
    }
    bob.send(update_message(7, "refused")).await;
    revocations.apply(revocation("alice", RevokedAccess::None));
    assert_eq!(alice.expect_close().await, close_code::ACCESS_REVOKED);
    // An observer that joins now gets the whole document: nothing of Bob's.
    let mut observer = y_websocket(&registry, Access::ReadWrite, GatewayConfig::default()).await;
    observer.next_binary().await;
    observer
        .send(Message::Sync(SyncMessage::SyncStep1(Default::default())).encode())
        .await;
    let Ok(Message::Sync(SyncMessage::SyncStep2(state))) =
        weft_protocol::decode_frame(&observer.next_binary().await)
    else {
        panic!("a SyncStep2");
    };
    assert_eq!(
        state,
        vec![0, 0],
        "the downgraded session's update was dropped"
    );
    bob.stop.cancel();
    assert_eq!(bob.expect_close().await, close_code::SERVICE_RESTART);
}
