//! One test suite every [`MessageBus`] must pass. Each bus's crate calls
//! [`run_all`] with two nodes on one fresh, empty log (a Kafka bus: a fresh
//! topic).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::bus::{Delivery, Interest, MessageBus, Record, RecordKind};

/// How long a delivery may take to arrive (a broker's fetch wait included).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(20);

/// The documents a test node has "loaded".
#[derive(Debug, Default)]
struct Wanted(Mutex<HashSet<String>>);

impl Wanted {
    fn add(&self, doc: &str) {
        self.0.lock().insert(doc.to_owned());
    }
}

impl Interest for Wanted {
    fn wants(&self, doc: &str) -> bool {
        self.0.lock().contains(doc)
    }
}

fn update(doc: &str, payload: &[u8], session: u64) -> Record {
    Record {
        doc: Arc::from(doc),
        kind: RecordKind::Update,
        payload: Bytes::copy_from_slice(payload),
        origin_session: session,
        author: None,
        span: tracing::Span::none(),
    }
}

async fn next(deliveries: &mut mpsc::Receiver<Delivery>, what: &str) -> Delivery {
    tokio::time::timeout(DELIVERY_DEADLINE, deliveries.recv())
        .await
        .unwrap_or_else(|_| panic!("no delivery within {DELIVERY_DEADLINE:?}: {what}"))
        .unwrap_or_else(|| panic!("subscription ended: {what}"))
}

/// Runs every check. `a` and `b` are two nodes of one empty log; neither
/// has subscribed yet.
pub async fn run_all(a: &dyn MessageBus, b: &dyn MessageBus) {
    assert_ne!(a.origin(), b.origin(), "two nodes, two origins");
    let wanted_by_b = Arc::new(Wanted::default());
    let interest: Arc<dyn Interest> = wanted_by_b.clone();
    let mut at_b = b.subscribe(interest).await.expect("subscribe b");
    let mut at_a = a
        .subscribe(Arc::new(Wanted::default()))
        .await
        .expect("subscribe a");
    assert!(
        a.subscribe(Arc::new(Wanted::default())).await.is_err(),
        "a node subscribes once"
    );
    a.check().await.expect("check answers once subscribed");

    publish_acknowledges_in_order(a).await;
    wanted_records_of_other_nodes_are_delivered(a, b, &wanted_by_b, &mut at_b).await;
    own_records_are_not_delivered_back(&mut at_a).await;
    replay_returns_a_documents_updates_after_a_position(a, b).await;
    deletions_are_durable_and_ordered_with_updates(a, b, &wanted_by_b, &mut at_b).await;
}

async fn publish_acknowledges_in_order(a: &dyn MessageBus) {
    let doc = "conformance/order";
    let results = a
        .publish(&[
            update(doc, b"1", 1),
            update(doc, b"2", 1),
            update(doc, b"3", 2),
        ])
        .await;
    assert_eq!(results.len(), 3, "one result per record");
    let positions: Vec<_> = results
        .into_iter()
        .map(|result| result.expect("published"))
        .collect();
    assert!(
        positions
            .windows(2)
            .all(|pair| pair[0].partition == pair[1].partition && pair[0].offset < pair[1].offset),
        "one document, one partition, increasing offsets: {positions:?}"
    );
    let empty = a.publish(&[]).await;
    assert!(empty.is_empty());
}

/// A node loads a document the way the registry does: it wants it, then
/// replays it; from the replay on, the document's live records reach it (a
/// bus may read only the partitions of the documents its node loaded).
async fn load(b: &dyn MessageBus, wanted_by_b: &Wanted, doc: &str) {
    wanted_by_b.add(doc);
    b.replay(doc, None).await.expect("replay while loading");
}

async fn wanted_records_of_other_nodes_are_delivered(
    a: &dyn MessageBus,
    b: &dyn MessageBus,
    wanted_by_b: &Wanted,
    at_b: &mut mpsc::Receiver<Delivery>,
) {
    let wanted = "conformance/wanted";
    let unwanted = "conformance/unwanted";
    load(b, wanted_by_b, wanted).await;
    let results = a
        .publish(&[update(unwanted, b"x", 7), update(wanted, b"w1", 7)])
        .await;
    let wanted_position = results[1].as_ref().expect("published").to_owned();
    a.publish_ephemeral(Record {
        doc: Arc::from(unwanted),
        kind: RecordKind::Awareness,
        payload: Bytes::from_static(b"not for b"),
        origin_session: 7,
        author: None,
        span: tracing::Span::none(),
    });
    a.publish_ephemeral(Record {
        doc: Arc::from(wanted),
        kind: RecordKind::Awareness,
        payload: Bytes::from_static(b"presence"),
        origin_session: 7,
        author: None,
        span: tracing::Span::none(),
    });

    a.publish_ephemeral(Record {
        doc: Arc::from(""),
        kind: RecordKind::Heartbeat,
        payload: Bytes::new(),
        origin_session: 0,
        author: None,
        span: tracing::Span::none(),
    });

    // Kinds may travel separately (Kafka: two topics), so no order between
    // them is assumed; within the wait, nothing of the unwanted document
    // may arrive.
    a.publish_ephemeral(Record {
        doc: Arc::from(wanted),
        kind: RecordKind::Stateless,
        payload: Bytes::from_static(b"{\"hello\":1}"),
        origin_session: 7,
        author: None,
        span: tracing::Span::none(),
    });
    let (mut update, mut awareness, mut heartbeat, mut stateless) = (None, None, None, None);
    while update.is_none() || awareness.is_none() || heartbeat.is_none() || stateless.is_none() {
        let delivery = next(
            at_b,
            "the wanted update, awareness, stateless and a heartbeat",
        )
        .await;
        assert_ne!(
            delivery.record.doc.as_ref(),
            unwanted,
            "unwanted records are skipped"
        );
        match delivery.record.kind {
            RecordKind::Update => update = Some(delivery),
            RecordKind::Awareness => awareness = Some(delivery),
            RecordKind::Heartbeat => heartbeat = Some(delivery),
            RecordKind::Stateless => stateless = Some(delivery),
            RecordKind::Delete => panic!("no deletion was published: {delivery:?}"),
        }
    }
    let Some(stateless) = stateless else {
        unreachable!("the loop ends when all four arrived");
    };
    assert_eq!(stateless.record.doc.as_ref(), wanted);
    assert_eq!(stateless.record.payload.as_ref(), b"{\"hello\":1}");
    let (Some(update), Some(awareness), Some(heartbeat)) = (update, awareness, heartbeat) else {
        unreachable!("the loop ends when all four arrived");
    };
    assert_eq!(update.record.doc.as_ref(), wanted);
    assert_eq!(update.record.payload.as_ref(), b"w1");
    assert_eq!(update.record.origin_session, 7);
    assert_eq!(&update.origin, a.origin());
    assert_eq!(update.position, Some(wanted_position));

    assert_eq!(awareness.record.doc.as_ref(), wanted);
    assert_eq!(awareness.record.payload.as_ref(), b"presence");
    assert_eq!(&awareness.origin, a.origin());

    assert_eq!(&heartbeat.origin, a.origin(), "heartbeats reach every node");
}

async fn own_records_are_not_delivered_back(at_a: &mut mpsc::Receiver<Delivery>) {
    // Everything above was published by `a`, which wants no document: no
    // update may come back to it, and no ephemeral record ever does (its
    // own updates may, for documents it wants: see `subscribe`).
    // Half a second is many fetch waits of any test configuration.
    let echoed = tokio::time::timeout(Duration::from_millis(500), at_a.recv()).await;
    assert!(
        echoed.is_err(),
        "a node's own records are not delivered to it: {echoed:?}"
    );
}

async fn replay_returns_a_documents_updates_after_a_position(
    a: &dyn MessageBus,
    b: &dyn MessageBus,
) {
    let doc = "conformance/replay";
    let other = "conformance/replay-other";
    let first = a
        .publish(&[update(doc, b"r1", 1), update(other, b"o1", 1)])
        .await;
    let second = b
        .publish(&[update(doc, b"r2", 2), update(doc, b"r3", 2)])
        .await;
    let first_position = first[0].as_ref().expect("published").to_owned();
    assert!(second.iter().all(Result::is_ok));

    let all = b.replay(doc, None).await.expect("replay");
    let payloads: Vec<&[u8]> = all.iter().map(|record| record.update.as_ref()).collect();
    assert_eq!(
        payloads,
        vec![&b"r1"[..], b"r2", b"r3"],
        "only this document's updates, in order"
    );
    assert_eq!(all[0].position, first_position);

    let after = a
        .replay(doc, Some(first_position))
        .await
        .expect("replay after");
    let payloads: Vec<&[u8]> = after.iter().map(|record| record.update.as_ref()).collect();
    assert_eq!(payloads, vec![&b"r2"[..], b"r3"]);

    let last = after.last().expect("records").position;
    assert!(
        a.replay(doc, Some(last))
            .await
            .expect("replay at end")
            .is_empty()
    );
    assert!(
        a.replay("conformance/never-written", None)
            .await
            .expect("replay unknown")
            .is_empty()
    );
}

async fn deletions_are_durable_and_ordered_with_updates(
    a: &dyn MessageBus,
    b: &dyn MessageBus,
    wanted_by_b: &Wanted,
    at_b: &mut mpsc::Receiver<Delivery>,
) {
    let doc = "conformance/delete";
    load(b, wanted_by_b, doc).await;
    // A v1 state vector: one client (1) at clock 1.
    let deleted_state_vector: &[u8] = &[1, 1, 1];
    let before = a.publish(&[update(doc, b"before", 3)]).await;
    let deletion = a
        .publish(&[Record {
            doc: Arc::from(doc),
            kind: RecordKind::Delete,
            payload: Bytes::from_static(deleted_state_vector),
            origin_session: 3,
            author: None,
            span: tracing::Span::none(),
        }])
        .await;
    let after = a.publish(&[update(doc, b"after", 3)]).await;
    let before = before[0].as_ref().expect("published").to_owned();
    let deletion = deletion[0].as_ref().expect("deletion published").to_owned();
    let after = after[0].as_ref().expect("published").to_owned();
    assert!(
        before.partition == deletion.partition
            && deletion.partition == after.partition
            && before.offset < deletion.offset
            && deletion.offset < after.offset,
        "a deletion is ordered with the document's updates: {before:?} {deletion:?} {after:?}"
    );

    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let delivery = next(at_b, "the update, the deletion, the update").await;
        if delivery.record.doc.as_ref() != doc {
            continue;
        }
        if delivery.record.kind == RecordKind::Delete {
            assert_eq!(delivery.position, Some(deletion));
            assert_eq!(delivery.record.payload.as_ref(), deleted_state_vector);
        }
        kinds.push(delivery.record.kind);
    }
    assert_eq!(
        kinds,
        vec![RecordKind::Update, RecordKind::Delete, RecordKind::Update],
        "delivered in log order"
    );

    // A replay holds the deletion where it was published; what follows it
    // is after it (a log may drop what precedes it).
    let replayed = b.replay(doc, None).await.expect("replay");
    let at = replayed
        .iter()
        .position(|record| record.kind == RecordKind::Delete)
        .expect("the deletion is replayed");
    assert_eq!(replayed[at].position, deletion);
    assert_eq!(replayed[at].update.as_ref(), deleted_state_vector);
    assert!(
        replayed[at + 1..]
            .iter()
            .all(|record| record.kind == RecordKind::Update && record.position >= deletion)
    );
    assert!(
        replayed
            .iter()
            .any(|record| record.position == after && record.update.as_ref() == b"after"),
        "the update after the deletion is replayed"
    );
    let from_deletion = b.replay(doc, Some(deletion)).await.expect("replay");
    assert!(
        from_deletion
            .iter()
            .all(|record| record.kind == RecordKind::Update && record.position > deletion),
        "nothing at or before a position is replayed after it"
    );
}
