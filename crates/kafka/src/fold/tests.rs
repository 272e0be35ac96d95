//! The fold's commit rule, debounce, eviction and deletions.

use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::*;

fn insert(client: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let root = doc.get_or_insert_text("t");
    root.insert(&mut doc.transact_mut(), 0, text);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn text_of(snapshot: &Snapshot) -> String {
    let doc = Doc::new();
    let root = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(Update::decode_v1(&snapshot.state).unwrap())
        .unwrap();
    root.get_string(&doc.transact())
}

fn config() -> FoldConfig {
    FoldConfig {
        debounce: Duration::from_secs(2),
        max_delay: Duration::from_secs(30),
        max_updates: 1000,
        evict_after: Duration::from_secs(60),
    }
}

#[test]
fn commits_never_pass_a_record_that_no_stored_snapshot_holds() {
    let now = Instant::now();
    let mut fold = Fold::new(config());
    fold.insert_base(0, "a", None, now);
    fold.insert_base(0, "b", None, now);
    assert!(fold.apply(0, 10, Some(("a", &insert(1, "a1"))), now));
    assert!(fold.apply(0, 11, Some(("b", &insert(2, "b1"))), now));
    fold.apply(0, 12, None, now);
    assert_eq!(fold.commit_offsets(), vec![(0, 10)], "nothing stored yet");

    // Only b's snapshot is written: a still pins the offset.
    let jobs = fold.due(now, true, None);
    let b_job = jobs.iter().find(|job| job.doc.as_ref() == "b").unwrap();
    fold.stored(b_job);
    assert_eq!(fold.commit_offsets(), vec![(0, 10)]);

    // a's job is made, then a record of a arrives before it is stored.
    let a_job = jobs.iter().find(|job| job.doc.as_ref() == "a").unwrap();
    assert!(fold.apply(0, 13, Some(("a", &insert(1, "a2"))), now));
    fold.stored(a_job);
    assert_eq!(
        fold.commit_offsets(),
        vec![(0, 11)],
        "the record after the snapshot's offset stays uncommitted"
    );
    let again = fold.due(now, true, None);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].snapshot.covers.offset, 13);
    fold.stored(&again[0]);
    assert_eq!(
        fold.commit_offsets(),
        vec![(0, 14)],
        "everything read is stored"
    );
}

#[test]
fn a_snapshot_covers_what_it_says_and_covered_records_are_skipped() {
    let now = Instant::now();
    let mut fold = Fold::new(config());
    fold.insert_base(3, "doc", None, now);
    fold.apply(3, 5, Some(("doc", &insert(1, "x"))), now);
    fold.apply(3, 6, Some(("doc", &insert(2, "y"))), now);
    let job = fold.due(now, true, None).pop().unwrap();
    assert_eq!(job.snapshot.covers.partition, 3);
    assert_eq!(job.snapshot.covers.offset, 6);
    assert_eq!(text_of(&job.snapshot).len(), 2);

    // A restarted worker starts from that snapshot, re-reads from an
    // older committed offset, and skips what the snapshot covers.
    let mut restarted = Fold::new(config());
    assert!(restarted.needs_base(3, "doc"));
    restarted.insert_base(3, "doc", Some(&job.snapshot), now);
    assert!(!restarted.apply(3, 5, Some(("doc", &insert(1, "x"))), now));
    assert!(!restarted.apply(3, 6, Some(("doc", &insert(2, "y"))), now));
    assert!(
        restarted.due(now, true, None).is_empty(),
        "nothing new to write"
    );
    assert!(restarted.apply(3, 7, Some(("doc", &insert(3, "z"))), now));
    let next = restarted.due(now, true, None).pop().unwrap();
    assert_eq!(text_of(&next.snapshot).len(), 3);
    assert_eq!(next.snapshot.covers.offset, 7);
}

#[test]
fn writes_wait_for_the_debounce_unless_forced() {
    let start = Instant::now();
    let mut fold = Fold::new(config());
    fold.insert_base(0, "doc", None, start);
    fold.apply(0, 1, Some(("doc", &insert(1, "x"))), start);
    assert!(
        fold.due(start + Duration::from_secs(1), false, None)
            .is_empty()
    );
    assert_eq!(
        fold.due(start + Duration::from_secs(2), false, None).len(),
        1
    );
    assert_eq!(fold.due(start, true, Some(&[0])).len(), 1, "forced");
    assert!(
        fold.due(start, true, Some(&[1])).is_empty(),
        "other partitions only"
    );
}

#[test]
fn revoked_partitions_and_idle_documents_leave_memory() {
    let now = Instant::now();
    let mut fold = Fold::new(config());
    fold.insert_base(0, "a", None, now);
    fold.insert_base(1, "b", None, now);
    fold.apply(1, 0, Some(("b", &insert(1, "b"))), now);
    fold.revoke(&[0]);
    assert_eq!(fold.documents(), 1);
    fold.evict_idle(now + Duration::from_secs(120));
    assert_eq!(fold.documents(), 1, "an unwritten document stays");
    let job = fold.due(now, true, None).pop().unwrap();
    fold.stored(&job);
    fold.evict_idle(now + Duration::from_secs(120));
    assert_eq!(fold.documents(), 0);
}

#[test]
fn a_deletion_empties_the_document_is_written_at_once_and_keeps_its_tombstone() {
    let now = Instant::now();
    let mut fold = Fold::new(config());
    fold.insert_base(0, "doc", None, now);
    fold.apply(0, 1, Some(("doc", &insert(1, "old"))), now);
    assert!(fold.delete(0, 2, "doc", &[0], now));
    assert!(!fold.delete(0, 2, "doc", &[0], now), "already covered");
    fold.apply(0, 3, Some(("doc", &insert(1, "stale"))), now);
    fold.apply(0, 4, Some(("doc", &insert(2, "new"))), now);
    let job = fold
        .due(now, false, None)
        .pop()
        .expect("due without debounce");
    assert_eq!(text_of(&job.snapshot), "new", "nothing deleted or stale");
    let tombstone = job.snapshot.tombstone.clone().expect("tombstone");
    assert_eq!(tombstone.position, 2);
    let deleted = weft_sync::tombstone::decode_state_vector(&tombstone.state_vector);
    assert_eq!(deleted.get(&yrs::block::ClientID::new(1)), 3);
    fold.stored(&job);
    assert_eq!(fold.commit_offsets(), vec![(0, 5)]);

    // A restarted worker keeps refusing the deleted client.
    let mut restarted = Fold::new(config());
    restarted.insert_base(0, "doc", Some(&job.snapshot), now);
    restarted.apply(0, 5, Some(("doc", &insert(1, "again"))), now);
    let again = restarted.due(now, true, None).pop().expect("written");
    assert_eq!(text_of(&again.snapshot), "new");
    assert_eq!(again.snapshot.tombstone, job.snapshot.tombstone);
}

#[test]
fn a_record_that_does_not_apply_is_skipped_but_covered() {
    let now = Instant::now();
    let mut fold = Fold::new(config());
    fold.insert_base(0, "doc", None, now);
    assert!(fold.apply(0, 0, Some(("doc", &insert(1, "x"))), now));
    // An implausible header: refused before yrs decodes it.
    assert!(fold.apply(0, 1, Some(("doc", b"\xff\xff\xff\xff\xff\x01")), now));
    let job = fold
        .due(now, true, None)
        .pop()
        .expect("offset 0 is a record");
    assert_eq!(text_of(&job.snapshot), "x");
    assert_eq!(job.snapshot.covers.offset, 1, "the skipped record is read");
    fold.stored(&job);
    assert_eq!(fold.commit_offsets(), vec![(0, 2)]);
}

#[test]
fn a_large_document_waits_for_more_records_between_snapshots() {
    let now = Instant::now();
    let config = FoldConfig {
        max_updates: 10,
        ..config()
    };
    // A base of more than one step (16 KiB) of state, then ten records:
    // a small document would be due, this one waits for twenty.
    let mut source = Fold::new(config.clone());
    source.insert_base(0, "big", None, now);
    assert!(source.apply(0, 0, Some(("big", &insert(1, &"x".repeat(20_000)))), now));
    let base = source.due(now, true, None).remove(0).snapshot;
    assert!(base.state.len() >= 16 * 1024 && base.state.len() < 32 * 1024);

    let mut fold = Fold::new(config.clone());
    fold.insert_base(0, "big", Some(&base), now);
    fold.insert_base(0, "small", None, now);
    for offset in 1..=10 {
        let text = offset.to_string();
        assert!(fold.apply(
            0,
            offset * 2,
            Some(("big", &insert(2 + offset as u64, &text))),
            now
        ));
        assert!(fold.apply(
            0,
            offset * 2 + 1,
            Some(("small", &insert(2 + offset as u64, &text))),
            now
        ));
    }
    let due: Vec<_> = fold
        .due(now, false, None)
        .into_iter()
        .map(|job| job.doc)
        .collect();
    assert_eq!(
        due,
        vec![Arc::<str>::from("small")],
        "ten records: only the small one"
    );
    for offset in 11..=20 {
        assert!(fold.apply(
            0,
            offset * 2,
            Some(("big", &insert(2 + offset as u64, "y"))),
            now
        ));
    }
    let jobs = fold.due(now, false, None);
    let big = jobs
        .iter()
        .find(|job| job.doc.as_ref() == "big")
        .expect("twenty records: due");
    fold.stored(big);

    // Its own snapshot is now the size that counts: still one step.
    for offset in 21..=30 {
        assert!(fold.apply(
            0,
            offset * 2,
            Some(("big", &insert(2 + offset as u64, "z"))),
            now
        ));
    }
    assert!(
        fold.due(now, false, None)
            .iter()
            .all(|job| job.doc.as_ref() != "big"),
        "ten records after a snapshot of over 16 KiB: not due yet"
    );
}
