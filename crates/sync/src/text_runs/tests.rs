use yrs::StateVector;

use super::*;

/// A writer with its own client id; each edit is one logged update.
struct Writer {
    doc: Doc,
    author: &'static str,
}

impl Writer {
    fn new(client: u64, author: &'static str, state: &[u8]) -> Self {
        let doc = Doc::with_client_id(client);
        doc.transact_mut()
            .apply_update(Update::decode_v1(state).unwrap())
            .unwrap();
        Self { doc, author }
    }

    fn edit(
        &self,
        change: impl FnOnce(&yrs::TextRef, &mut yrs::TransactionMut),
    ) -> AttributedUpdate {
        let text = self.doc.get_or_insert_text("text");
        let mut txn = self.doc.transact_mut();
        change(&text, &mut txn);
        AttributedUpdate {
            author: Some(self.author.to_owned()),
            update: txn.encode_update_v1(),
        }
    }

    fn sync_from(&self, update: &AttributedUpdate) {
        self.doc
            .transact_mut()
            .apply_update(Update::decode_v1(&update.update).unwrap())
            .unwrap();
    }
}

fn state_with(text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(1);
    let root = doc.get_or_insert_text("text");
    root.insert(&mut doc.transact_mut(), 0, text);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// `from`'s text with `runs` applied, back to front.
fn replay(from: &str, runs: &[TextRun]) -> String {
    let mut text = from.to_owned();
    for run in runs.iter().rev() {
        text.replace_range(run.at..run.at + run.deleted.len(), &run.inserted);
    }
    text
}

#[test]
fn runs_name_who_inserted_and_who_deleted() {
    let from = state_with("hello brave world");
    let alice = Writer::new(10, "alice", &from);
    let bob = Writer::new(20, "bob", &from);
    let first = alice.edit(|text, txn| text.insert(txn, 0, "oh, "));
    bob.sync_from(&first);
    // bob deletes "brave " (at 10 after alice's insert) and appends "!".
    let second = bob.edit(|text, txn| {
        text.remove_range(txn, 10, 6);
        text.insert(txn, 15, "!");
    });
    let runs = text_runs(&from, &[first, second], &["text".to_owned()]).unwrap();
    assert_eq!(
        runs[0],
        vec![
            TextRun {
                at: 0,
                deleted: String::new(),
                inserted: "oh, ".into(),
                authors: vec!["alice".into()]
            },
            TextRun {
                at: 6,
                deleted: "brave ".into(),
                inserted: String::new(),
                authors: vec!["bob".into()]
            },
            TextRun {
                at: 17,
                deleted: String::new(),
                inserted: "!".into(),
                authors: vec!["bob".into()]
            },
        ]
    );
    assert_eq!(replay("hello brave world", &runs[0]), "oh, hello world!");
}

#[test]
fn a_replace_by_two_authors_is_one_run_naming_both() {
    let from = state_with("hello");
    let alice = Writer::new(10, "alice", &from);
    let bob = Writer::new(20, "bob", &from);
    let deletion = alice.edit(|text, txn| text.remove_range(txn, 0, 5));
    bob.sync_from(&deletion);
    let insertion = bob.edit(|text, txn| text.insert(txn, 0, "goodbye"));
    let runs = text_runs(&from, &[deletion, insertion], &["text".to_owned()]).unwrap();
    assert_eq!(runs[0].len(), 1);
    assert_eq!(runs[0][0].deleted, "hello");
    assert_eq!(runs[0][0].inserted, "goodbye");
    assert_eq!(
        runs[0][0].authors,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
}

#[test]
fn text_written_and_removed_between_the_points_is_in_no_run() {
    let from = state_with("abc");
    let alice = Writer::new(10, "alice", &from);
    let typo = alice.edit(|text, txn| text.insert(txn, 3, "xyz"));
    let fixed = alice.edit(|text, txn| text.remove_range(txn, 3, 3));
    let runs = text_runs(&from, &[typo, fixed], &["text".to_owned()]).unwrap();
    assert!(runs[0].is_empty(), "{:?}", runs[0]);
}

#[test]
fn offsets_are_bytes_of_the_earlier_text_and_unknown_authors_are_left_out() {
    let from = state_with("héllo wörld");
    let writer = Writer::new(10, "alice", &from);
    let mut edit = writer.edit(|text, txn| text.insert(txn, 7, "big "));
    edit.author = None;
    let runs = text_runs(&from, &[edit], &["text".to_owned(), "absent".to_owned()]).unwrap();
    assert_eq!(
        runs[0],
        vec![TextRun {
            at: 7,
            deleted: String::new(),
            inserted: "big ".into(),
            authors: Vec::new()
        }]
    );
    assert!(runs[1].is_empty());
    assert_eq!(replay("héllo wörld", &runs[0]), "héllo big wörld");
}

#[test]
fn an_update_that_does_not_decode_is_an_error() {
    let from = state_with("a");
    let broken = AttributedUpdate {
        author: None,
        update: vec![0xff, 0xff, 0xff],
    };
    assert!(text_runs(&from, &[broken], &["text".to_owned()]).is_err());
}
