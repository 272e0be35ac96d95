//! Awareness coalesced per tick: one frame per tick per document, carrying
//! each changed client's latest state.

use weft_protocol::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::block::ClientID;

use super::*;
use crate::awareness_tick::{AWARENESS_TICK, AWARENESS_TICK_MIN_SESSIONS};

fn cursor(client: u64, clock: u32, anchor: u32) -> AwarenessUpdate {
    AwarenessUpdate {
        clients: [(
            ClientID::new(client),
            AwarenessUpdateEntry {
                clock,
                json: Arc::from(format!(r#"{{"cursor":{{"anchor":{anchor}}}}}"#)),
            },
        )]
        .into(),
    }
}

/// The next frame queued for `client`, as an awareness update.
async fn next_awareness(client: &mut Client) -> AwarenessUpdate {
    let frame = client.frames.recv().await.expect("the session is open");
    match decode_frame(&frame) {
        Ok(Message::Awareness(update)) => update,
        other => panic!("expected an awareness frame, got {other:?}"),
    }
}

fn clock_of(update: &AwarenessUpdate, client: u64) -> Option<u32> {
    update
        .clients
        .get(&ClientID::new(client))
        .map(|entry| entry.clock)
}

#[tokio::test(start_paused = true)]
async fn changes_within_one_tick_go_out_as_one_frame_of_latest_states() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store, test_config());
    let mut alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    let mut carol = join(&registry, "doc", 16).await;
    // Enough sessions for the document to coalesce.
    let mut others = Vec::new();
    for _ in 3..AWARENESS_TICK_MIN_SESSIONS {
        others.push(join(&registry, "doc", 16).await);
    }

    // A quiet document sends a change at once, not to its sender.
    alice.session.apply_awareness(cursor(1, 1, 0));
    let first = carol.frames.try_recv().expect("sent at once");
    let Ok(Message::Awareness(first)) = decode_frame(&first) else {
        panic!("expected awareness");
    };
    assert_eq!(clock_of(&first, 1), Some(1));
    assert_eq!(clock_of(&next_awareness(&mut bob).await, 1), Some(1));
    assert!(alice.frames.try_recv().is_err(), "no echo of a lone change");

    // Within the next tick: two changes of alice's client, one of bob's.
    alice.session.apply_awareness(cursor(1, 2, 5));
    alice.session.apply_awareness(cursor(1, 3, 9));
    bob.session.apply_awareness(cursor(2, 1, 4));
    assert!(carol.frames.try_recv().is_err(), "held until the tick ends");

    let tick = next_awareness(&mut carol).await;
    assert_eq!(tick.clients.len(), 2, "one entry per client: {tick:?}");
    assert_eq!(clock_of(&tick, 1), Some(3), "the latest state only");
    assert_eq!(
        tick.clients[&ClientID::new(1)].json.as_ref(),
        r#"{"cursor":{"anchor":9}}"#
    );
    assert_eq!(
        clock_of(&tick, 2),
        Some(1),
        "bob's change rides the same frame"
    );
    assert!(carol.frames.try_recv().is_err(), "one frame for the tick");
    // Two senders: the same bytes go to everyone, senders included.
    assert_eq!(next_awareness(&mut alice).await.clients.len(), 2);
    assert_eq!(next_awareness(&mut bob).await.clients.len(), 2);

    // A tick with one sender's changes only is not sent back to it.
    alice.session.apply_awareness(cursor(1, 4, 12));
    assert_eq!(clock_of(&next_awareness(&mut carol).await, 1), Some(4));
    assert_eq!(clock_of(&next_awareness(&mut bob).await, 1), Some(4));
    assert!(alice.frames.try_recv().is_err());
    tokio::time::sleep(AWARENESS_TICK * 2).await;
    assert!(alice.frames.try_recv().is_err(), "nothing more for alice");
}

#[tokio::test(start_paused = true)]
async fn a_leaving_session_is_removed_at_once_even_within_a_tick() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store, test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut carol = join(&registry, "doc", 16).await;
    let mut others = Vec::new();
    for _ in 2..AWARENESS_TICK_MIN_SESSIONS {
        others.push(join(&registry, "doc", 16).await);
    }
    alice.session.apply_awareness(cursor(1, 1, 0));
    assert_eq!(clock_of(&next_awareness(&mut carol).await, 1), Some(1));
    alice.session.apply_awareness(cursor(1, 2, 3));
    drop(alice);
    let removal = next_awareness(&mut carol).await;
    let entry = &removal.clients[&ClientID::new(1)];
    assert_eq!(
        (entry.clock, entry.json.as_ref()),
        (3, "null"),
        "removed before the held change's tick ends"
    );
    // The tick still flushes; it carries the removal, never the old state.
    let tick = next_awareness(&mut carol).await;
    assert_eq!(tick.clients[&ClientID::new(1)].json.as_ref(), "null");
    assert!(carol.session.awareness_frame().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_small_document_relays_every_change_at_once() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store, test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut carol = join(&registry, "doc", 16).await;
    for clock in 1..=3 {
        alice.session.apply_awareness(cursor(1, clock, clock));
        let frame = carol.frames.try_recv().expect("relayed at once");
        let Ok(Message::Awareness(relayed)) = decode_frame(&frame) else {
            panic!("expected awareness");
        };
        assert_eq!(clock_of(&relayed, 1), Some(clock));
    }
}
