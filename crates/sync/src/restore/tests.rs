use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update, XmlFragment,
};

use super::restore_update;

fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

/// An editor's document, its state at the version, and what it became.
fn edited(edit: impl Fn(&Doc), then: impl Fn(&Doc)) -> (Doc, Vec<u8>) {
    let doc = Doc::new();
    edit(&doc);
    let version = state(&doc);
    then(&doc);
    (doc, version)
}

#[test]
fn text_is_restored_by_one_replace_and_a_second_restore_changes_nothing() {
    let (doc, version) = edited(
        |doc| {
            doc.get_or_insert_text("t")
                .insert(&mut doc.transact_mut(), 0, "héllo world")
        },
        |doc| {
            let text = doc.get_or_insert_text("t");
            text.insert(&mut doc.transact_mut(), 7, "big ");
            text.remove_range(&mut doc.transact_mut(), 0, 1);
        },
    );
    let text = doc.get_or_insert_text("t");
    assert_eq!(text.get_string(&doc.transact()), "éllo big world");
    let update = restore_update(&state(&doc), &version)
        .unwrap()
        .expect("the content differs");
    apply(&doc, &update);
    assert_eq!(text.get_string(&doc.transact()), "héllo world");
    assert_eq!(restore_update(&state(&doc), &version).unwrap(), None);
}

#[test]
fn a_concurrent_editor_keeps_its_later_edits_after_converging() {
    let (doc, version) = edited(
        |doc| {
            doc.get_or_insert_text("t")
                .insert(&mut doc.transact_mut(), 0, "abc")
        },
        |doc| {
            doc.get_or_insert_text("t")
                .insert(&mut doc.transact_mut(), 3, "XYZ")
        },
    );
    let other = Doc::new();
    apply(&other, &state(&doc));
    let update = restore_update(&state(&doc), &version).unwrap().unwrap();
    // The other editor types at the start while the restore travels.
    other
        .get_or_insert_text("t")
        .insert(&mut other.transact_mut(), 0, ">");
    apply(&other, &update);
    apply(&doc, &update);
    apply(&doc, &state(&other));
    let text = doc.get_or_insert_text("t");
    assert_eq!(text.get_string(&doc.transact()), ">abc");
}

#[test]
fn map_keys_are_set_and_removed_one_by_one() {
    let (doc, version) = edited(
        |doc| {
            let map = doc.get_or_insert_map("m");
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "kept", 1);
            map.insert(&mut txn, "changed", "old");
            map.insert(&mut txn, "removed-later", true);
        },
        |doc| {
            let map = doc.get_or_insert_map("m");
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "changed", "new");
            map.remove(&mut txn, "removed-later");
            map.insert(&mut txn, "added", 2);
        },
    );
    let update = restore_update(&state(&doc), &version).unwrap().unwrap();
    apply(&doc, &update);
    let map = doc.get_or_insert_map("m");
    let txn = doc.transact();
    let json = map.to_json(&txn);
    let Any::Map(entries) = json else {
        panic!("a map reads as a JSON object");
    };
    assert_eq!(entries.len(), 3);
    assert_eq!(entries.get("changed"), Some(&Any::from("old")));
    assert_eq!(entries.get("removed-later"), Some(&Any::Bool(true)));
    assert!(!entries.contains_key("added"));
}

#[test]
fn arrays_replace_only_what_differs() {
    let (doc, version) = edited(
        |doc| {
            let array = doc.get_or_insert_array("a");
            array.insert_range(&mut doc.transact_mut(), 0, [1, 2, 3, 4]);
        },
        |doc| {
            let array = doc.get_or_insert_array("a");
            array.remove_range(&mut doc.transact_mut(), 1, 2);
            array.insert(&mut doc.transact_mut(), 1, 9);
        },
    );
    let update = restore_update(&state(&doc), &version).unwrap().unwrap();
    apply(&doc, &update);
    let array = doc.get_or_insert_array("a");
    let values = array.to_json(&doc.transact());
    assert_eq!(
        values,
        Any::from(vec![
            Any::from(1.0),
            Any::from(2.0),
            Any::from(3.0),
            Any::from(4.0)
        ])
    );
}

#[test]
fn xml_fragments_get_a_copy_of_the_version() {
    use yrs::types::xml::{XmlElementPrelim, XmlTextPrelim};
    let (doc, version) = edited(
        |doc| {
            let fragment = doc.get_or_insert_xml_fragment("x");
            let mut txn = doc.transact_mut();
            let paragraph = fragment.push_back(&mut txn, XmlElementPrelim::empty("p"));
            paragraph.push_back(&mut txn, XmlTextPrelim::new("first"));
        },
        |doc| {
            let fragment = doc.get_or_insert_xml_fragment("x");
            let mut txn = doc.transact_mut();
            fragment.push_back(&mut txn, XmlElementPrelim::empty("h1"));
        },
    );
    let before = {
        let restored = Doc::new();
        apply(&restored, &version);
        let fragment = restored.get_or_insert_xml_fragment("x");
        fragment.get_string(&restored.transact())
    };
    let update = restore_update(&state(&doc), &version).unwrap().unwrap();
    apply(&doc, &update);
    let fragment = doc.get_or_insert_xml_fragment("x");
    assert_eq!(fragment.get_string(&doc.transact()), before);
    assert_eq!(before, "<p>first</p>");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(restore_update(&[0xff, 0xff, 0xff], &[0, 0]).is_err());
}

#[test]
fn text_typed_around_the_version_is_removed_and_the_version_kept() {
    let (doc, version) = edited(
        |doc| {
            doc.get_or_insert_text("t")
                .insert(&mut doc.transact_mut(), 0, "keep me")
        },
        |doc| {
            let text = doc.get_or_insert_text("t");
            text.insert(&mut doc.transact_mut(), 0, "ab");
            text.insert(&mut doc.transact_mut(), 9, " and more");
        },
    );
    let before = doc.transact().state_vector();
    let update = restore_update(&state(&doc), &version).unwrap().unwrap();
    apply(&doc, &update);
    let text = doc.get_or_insert_text("t");
    assert_eq!(text.get_string(&doc.transact()), "keep me");
    assert_eq!(
        doc.transact().state_vector(),
        before,
        "only deletions: nothing was inserted again"
    );
}
