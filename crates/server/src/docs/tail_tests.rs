use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::*;

const LOG: &str = "topic";

/// A writer's document: each edit is returned as the update it makes.
struct Writer(Doc);

impl Writer {
    fn new(client: u64) -> Self {
        Self(Doc::with_client_id(client))
    }

    fn push(&self, text: &str) -> Vec<u8> {
        let before = self.0.transact().state_vector();
        let field = self.0.get_or_insert_text("text");
        let mut txn = self.0.transact_mut();
        let at = field.len(&txn);
        field.insert(&mut txn, at, text);
        txn.encode_state_as_update_v1(&before)
    }

    fn entry(&self, doc: &str, offset: i64) -> DocEntry {
        let txn = self.0.transact();
        DocEntry {
            doc: doc.to_owned(),
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            state_vector: txn.state_vector().encode_v1(),
            log: LOG.to_owned(),
            position: Some(LinePosition {
                partition: 0,
                offset,
            }),
        }
    }
}

fn text_of(entry: &DocEntry) -> String {
    let doc = Doc::new();
    let field = doc.get_or_insert_text("text");
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(&entry.state).unwrap())
        .unwrap();
    field.get_string(&txn)
}

#[test]
fn records_past_a_snapshot_are_folded_into_it_at_the_last_offset() {
    let writer = Writer::new(1);
    writer.push("stored");
    let snapshot = writer.entry("doc", 10);
    let mut tails = Tails::default();
    tails.fold(0, 11, RecordKind::Update, "doc", &writer.push(", then"));
    tails.fold(0, 14, RecordKind::Update, "doc", &writer.push(" the tail"));
    let entry = tails.apply(LOG, "doc", Some(snapshot)).unwrap().unwrap();
    assert_eq!(text_of(&entry), "stored, then the tail");
    assert_eq!(
        entry.position,
        Some(LinePosition {
            partition: 0,
            offset: 14
        })
    );
    assert_eq!(tails.records_folded, 2);
    // Taken: a second apply leaves the stored state alone.
    let again = writer.entry("doc", 10);
    assert_eq!(
        tails.apply(LOG, "doc", Some(again.clone())).unwrap(),
        Some(again)
    );
}

#[test]
fn many_records_are_merged_as_they_come_without_losing_any() {
    let writer = Writer::new(1);
    let mut tails = Tails::default();
    let mut expected = String::new();
    for index in 0..(MERGE_EVERY_UPDATES * 3 + 5) {
        let piece = format!("{index};");
        expected.push_str(&piece);
        tails.fold(
            2,
            index as i64,
            RecordKind::Update,
            "doc",
            &writer.push(&piece),
        );
    }
    let held = tails.docs.get("doc").unwrap().updates.len();
    assert!(held < MERGE_EVERY_UPDATES, "{held} updates held unmerged");
    let entry = tails.apply(LOG, "doc", None).unwrap().unwrap();
    assert_eq!(text_of(&entry), expected);
}

#[test]
fn a_deletion_in_the_tail_drops_the_snapshot_and_what_came_before() {
    let old = Writer::new(1);
    old.push("before the deletion");
    let mut tails = Tails::default();
    tails.fold(0, 20, RecordKind::Update, "doc", &old.push(" and more"));
    tails.fold(0, 21, RecordKind::Delete, "doc", &[]);
    let new = Writer::new(2);
    tails.fold(0, 22, RecordKind::Update, "doc", &new.push("written again"));
    let entry = tails
        .apply(LOG, "doc", Some(old.entry("doc", 19)))
        .unwrap()
        .unwrap();
    assert_eq!(text_of(&entry), "written again");

    tails.fold(0, 30, RecordKind::Delete, "gone", &[]);
    assert_eq!(
        tails
            .apply(LOG, "gone", Some(old.entry("gone", 29)))
            .unwrap(),
        None,
        "a document deleted last is not exported"
    );
}

#[test]
fn documents_only_in_the_topic_are_found() {
    let writer = Writer::new(1);
    let mut tails = Tails::default();
    tails.fold(0, 1, RecordKind::Update, "listed", &writer.push("a"));
    tails.fold(1, 1, RecordKind::Update, "new", &writer.push("b"));
    let listed = vec!["listed".to_owned(), "other".to_owned()];
    assert_eq!(tails.topic_only(&listed), ["new"]);
}

#[test]
fn only_records_past_a_documents_snapshot_on_its_partition_are_read() {
    let covers = HashMap::from([(
        "doc".to_owned(),
        LinePosition {
            partition: 1,
            offset: 7,
        },
    )]);
    assert!(!past_snapshot(&covers, "doc", 1, 7));
    assert!(past_snapshot(&covers, "doc", 1, 8));
    assert!(
        past_snapshot(&covers, "doc", 0, 3),
        "a snapshot of another partition covers nothing here"
    );
    assert!(past_snapshot(&covers, "never-snapshotted", 1, 0));
}
