//! The y-websocket sync and awareness protocols end to end: real router,
//! real sockets, yrs documents on the client side.

mod common;

use common::{Peer, TempDir, TestServer, WAIT, append_local, awareness, awareness_entry, bounded};
use weft_gateway::GatewayConfig;
use weft_protocol::{Message, StateVector, SyncMessage};
use weft_sync::{Registry, RegistryConfig};
use yrs::{Doc, ReadTxn, Transact};

#[tokio::test]
async fn greeting_is_sync_step1_and_sync_step1_is_answered_with_sync_step2() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut writer = server.join("/greeting", 1).await;
    assert_eq!(
        writer.server_state,
        StateVector::default(),
        "a new document is empty"
    );
    let mut observer = server.join("/greeting", 2).await;
    writer.append("hello").await;
    observer.apply_next_update().await;

    // A client that edited offline connects.
    let offline = Doc::with_client_id(3);
    append_local(&offline, "offline ");
    let mut client = server.connect("/greeting").await;
    let Message::Sync(SyncMessage::SyncStep1(server_state)) = client.recv().await else {
        panic!("the first frame must be the server's SyncStep1");
    };
    assert_eq!(
        server_state,
        writer.state_vector(),
        "the greeting announces the document's state"
    );

    let (answer, ours) = {
        let txn = offline.transact();
        (
            txn.encode_state_as_update_v1(&server_state),
            txn.state_vector(),
        )
    };
    client
        .send(&Message::Sync(SyncMessage::SyncStep2(answer.clone())))
        .await;
    client
        .send(&Message::Sync(SyncMessage::SyncStep1(ours)))
        .await;
    let Message::Sync(SyncMessage::SyncStep2(missing)) = client.recv().await else {
        panic!("a SyncStep1 must be answered with SyncStep2");
    };
    let peer = Peer {
        client,
        doc: offline,
        server_state,
    };
    peer.apply(&missing);

    // The offline edit, sent as our SyncStep2, reaches the others as an Update.
    assert_eq!(writer.apply_next_update().await, answer);
    assert_eq!(observer.apply_next_update().await, answer);
    assert_eq!(peer.text(), writer.text());
    assert_eq!(peer.text(), observer.text());
    assert!(
        peer.text().contains("hello") && peer.text().contains("offline "),
        "{:?}",
        peer.text()
    );
}

#[tokio::test]
async fn update_reaches_the_other_client_and_is_not_echoed() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut alice = server.join("/pair", 1).await;
    let mut bob = server.join("/pair", 2).await;

    alice.append("hello").await;
    bob.apply_next_update().await;
    assert_eq!(bob.text(), "hello");

    let from_bob = bob.append(" world").await;
    // Alice's next frame is Bob's update: her own was not sent back to her.
    assert_eq!(alice.apply_next_update().await, from_bob);
    assert_eq!(alice.text(), "hello world");
    assert_eq!(alice.state_vector(), bob.state_vector());
}

#[tokio::test]
async fn documents_are_isolated_by_path() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut nested_writer = server.join("/a/b", 1).await;
    let mut nested_observer = server.join("/a/b", 2).await;
    nested_writer.append("in a/b").await;
    nested_observer.apply_next_update().await;

    let mut parent_writer = server.join("/a", 3).await;
    assert_eq!(
        parent_writer.server_state,
        StateVector::default(),
        "doc `a` is not doc `a/b`"
    );
    assert_eq!(parent_writer.text(), "");
    let mut parent_observer = server.join("/a", 4).await;
    parent_writer.append("in a").await;
    parent_observer.apply_next_update().await;

    // The next frame `a/b` sees is its own writer's, not `a`'s update.
    let nested_update = nested_writer.append(" again").await;
    assert_eq!(nested_observer.apply_next_update().await, nested_update);
    assert_eq!(nested_observer.text(), "in a/b again");
    assert_eq!(parent_observer.text(), "in a");
    assert_eq!(server.join("/a/b", 5).await.text(), "in a/b again");
    assert_eq!(server.join("/a", 6).await.text(), "in a");
}

#[tokio::test]
async fn url_encoded_paths_name_the_decoded_document() {
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut first = server.join("/team%20x/notes", 1).await;
    let mut second = server.join("/team%20x/notes", 2).await;
    first.append("shared").await;
    second.apply_next_update().await;
    assert_eq!(second.text(), "shared");

    // `%2F` decodes to `/`: the same document `team x/notes`.
    let mut third = server.join("/team%20x%2Fnotes", 3).await;
    assert_eq!(third.text(), "shared");
    let from_third = third.append(" too").await;
    assert_eq!(first.apply_next_update().await, from_third);
    assert_eq!(second.apply_next_update().await, from_third);
    assert_eq!(first.text(), "shared too");

    // Decoding happens once: `%2520` is a literal `%20`, another document.
    let other = server.join("/team%2520x/notes", 4).await;
    assert_eq!(other.text(), "");
}

#[tokio::test]
async fn awareness_is_relayed_queried_and_removed_on_disconnect() {
    const ALICE: u64 = 1001;
    let alice_state = r#"{"user":{"name":"alice"},"cursor":3}"#;
    let server = TestServer::start(GatewayConfig::default()).await;
    let mut alice = server.join("/presence", 1).await;
    let mut bob = server.join("/presence", 2).await;

    alice
        .client
        .send(&Message::Awareness(awareness(ALICE, 1, alice_state)))
        .await;
    let relayed = bob.client.recv_awareness().await;
    assert_eq!(
        awareness_entry(&relayed, ALICE),
        Some((1, alice_state.to_owned()))
    );

    // A joining client is greeted with the present states, and a query
    // returns them.
    let mut carol = server.connect("/presence").await;
    assert!(matches!(
        carol.recv().await,
        Message::Sync(SyncMessage::SyncStep1(_))
    ));
    let greeted = carol.recv_awareness().await;
    assert_eq!(
        awareness_entry(&greeted, ALICE),
        Some((1, alice_state.to_owned()))
    );
    carol.send(&Message::QueryAwareness).await;
    let queried = carol.recv_awareness().await;
    assert_eq!(
        awareness_entry(&queried, ALICE),
        Some((1, alice_state.to_owned()))
    );
    assert_eq!(queried.clients.len(), 1);

    // Alice leaves: everyone else is told her state is gone.
    alice.client.close().await;
    for client in [&mut bob.client, &mut carol] {
        let removal = client.recv_awareness().await;
        let (clock, json) =
            awareness_entry(&removal, ALICE).expect("a removal for Alice's client id");
        assert_eq!(json, "null");
        assert!(
            clock > 1,
            "a removal must win over the state it removes (clock {clock})"
        );
    }

    // Nobody is present any more: a query gets no awareness frame, so the
    // next frame is the answer to the SyncStep1 sent after it.
    carol.send(&Message::QueryAwareness).await;
    carol
        .send(&Message::Sync(SyncMessage::SyncStep1(
            StateVector::default(),
        )))
        .await;
    match carol.recv().await {
        Message::Sync(SyncMessage::SyncStep2(_)) => {}
        other => panic!("expected no awareness after Alice left, got {other:?}"),
    }
}

#[tokio::test]
async fn text_survives_a_registry_restart_on_sqlite() {
    let dir = TempDir::new("durability");
    let url = format!("sqlite://{}", dir.path().join("weft.db").display());

    // First life: write through the gateway, then shut down in order.
    let mut expected = String::new();
    for (round, chunk) in ["written before the first restart", ", and after it"]
        .into_iter()
        .enumerate()
    {
        let store = weft_persistence::open_store(&url)
            .await
            .expect("open the SQLite store");
        let registry = Registry::embedded(store, RegistryConfig::default());
        let server = TestServer::with_registry(registry.clone(), GatewayConfig::default()).await;
        let base = 10 * u64::try_from(round).expect("small round");
        let mut writer = server.join("/notes/durable", base + 1).await;
        assert_eq!(
            writer.text(),
            expected,
            "round {round} sees what earlier rounds wrote"
        );
        let mut observer = server.join("/notes/durable", base + 2).await;
        writer.append(chunk).await;
        observer.apply_next_update().await;
        expected.push_str(chunk);
        writer.client.close().await;
        observer.client.close().await;
        server.state.lifecycle.start_draining();
        bounded(
            WAIT,
            "sessions to end",
            server.state.lifecycle.sessions_closed(),
        )
        .await;
        bounded(WAIT, "registry shutdown", registry.shutdown()).await;
    }

    let store = weft_persistence::open_store(&url)
        .await
        .expect("reopen the SQLite store");
    let registry = Registry::embedded(store, RegistryConfig::default());
    let server = TestServer::with_registry(registry.clone(), GatewayConfig::default()).await;
    let reader = server.join("/notes/durable", 100).await;
    assert_eq!(reader.text(), expected);
    reader.client.close().await;
    bounded(WAIT, "registry shutdown", registry.shutdown()).await;
}
