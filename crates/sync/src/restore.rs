//! A restore as a forward update: the smallest edit, per root, that turns
//! a document's current content into a target's (an earlier version's).
//!
//! Yjs cannot bring deleted items back, so a restore inserts the target's
//! content anew where it differs, through the ordinary edit path; clients
//! converge on it live, and the history before it stays readable. Per
//! root, by the type its content shows (a server never learns the type a
//! client gave a root, see `shape_of`):
//!
//! - `Y.Text`: one replace between the common prefix and suffix of the two
//!   strings, or, where the target's text is still whole inside the
//!   current one, the removal of what surrounds it (its items are kept);
//!   formatting attributes of a re-inserted run are not restored;
//! - `Y.Map`: per key, removed or set where the values differ (a nested
//!   shared type is set as its JSON value);
//! - `Y.Array`: one replace between the common prefix and suffix of the
//!   elements, compared as JSON;
//! - `Y.XmlFragment`: if the markup differs, its children are replaced by
//!   a copy of the target's (elements, attributes as strings, text).
//!
//! Restoring content that equals the current one yields no update, so a
//! second restore to the same point changes nothing.

use yrs::types::ToJson;
use yrs::types::xml::{XmlElementPrelim, XmlFragment, XmlOut, XmlTextPrelim};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, Map, MapRef, ReadTxn, Text, TextRef, Transact,
    TransactionMut, Update, Xml, XmlFragmentRef,
};

use crate::update::InvalidUpdate;
use crate::ycheck;

/// Most levels of XML nesting a restore copies (deeper content is not
/// copied): bounds the recursion on stored input.
const MAX_XML_DEPTH: usize = 64;

/// What a root holds, judged by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Map,
    Array,
    Xml,
    Empty,
}

/// The Yjs v1 update that turns `current` into `target` (both whole
/// documents as v1 updates), or `None` if their content is the same.
pub fn restore_update(current: &[u8], target: &[u8]) -> Result<Option<Vec<u8>>, InvalidUpdate> {
    let mut names = root_names(current)?;
    for name in root_names(target)? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let working = doc_of(current)?;
    let wanted = doc_of(target)?;
    let before = working.transact().state_vector();
    let mut changed = false;
    for name in &names {
        let shape = match shape_of(target, name)? {
            Shape::Empty => shape_of(current, name)?,
            shape => shape,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            restore_root(&working, &wanted, name, shape)
        }));
        match outcome {
            Ok(root_changed) => changed |= root_changed,
            Err(_panic) => {
                return Err(InvalidUpdate::Unappliable(ycheck::ApplyFailure::Panicked));
            }
        }
    }
    // The encoding after `before` carries the whole delete set whatever
    // changed, so whether anything did is tracked, not read from it.
    Ok(changed.then(|| working.transact().encode_state_as_update_v1(&before)))
}

fn doc_of(state: &[u8]) -> Result<Doc, InvalidUpdate> {
    weft_protocol::check_update_v1(state)?;
    let doc = Doc::new();
    ycheck::apply_decoded(&doc, Update::decode_v1(state)?).map_err(InvalidUpdate::Unappliable)?;
    Ok(doc)
}

fn root_names(state: &[u8]) -> Result<Vec<String>, InvalidUpdate> {
    let doc = doc_of(state)?;
    let txn = doc.transact();
    Ok(txn.root_refs().map(|(name, _)| name.to_owned()).collect())
}

/// The shape of root `name` in `state`, judged on scratch copies: map
/// entries make a map; text runs a text; XML nodes a fragment; any other
/// element an array.
fn shape_of(state: &[u8], name: &str) -> Result<Shape, InvalidUpdate> {
    let as_map = doc_of(state)?;
    let map = as_map.get_or_insert_map(name);
    if map.len(&as_map.transact()) > 0 {
        return Ok(Shape::Map);
    }
    let as_text = doc_of(state)?;
    let text = as_text.get_or_insert_text(name);
    if !text.get_string(&as_text.transact()).is_empty() {
        return Ok(Shape::Text);
    }
    let as_array = doc_of(state)?;
    let array = as_array.get_or_insert_array(name);
    let txn = as_array.transact();
    if array.len(&txn) == 0 {
        return Ok(Shape::Empty);
    }
    let xml = array
        .iter(&txn)
        .any(|value| matches!(value, yrs::Out::YXmlElement(_) | yrs::Out::YXmlText(_)));
    Ok(if xml { Shape::Xml } else { Shape::Array })
}

/// Restores root `name`; tells whether anything changed.
fn restore_root(working: &Doc, wanted: &Doc, name: &str, shape: Shape) -> bool {
    match shape {
        Shape::Text => restore_text(
            working,
            &working.get_or_insert_text(name),
            wanted,
            &wanted.get_or_insert_text(name),
        ),
        Shape::Map => restore_map(
            working,
            &working.get_or_insert_map(name),
            wanted,
            &wanted.get_or_insert_map(name),
        ),
        Shape::Array => restore_array(
            working,
            &working.get_or_insert_array(name),
            wanted,
            &wanted.get_or_insert_array(name),
        ),
        Shape::Xml => restore_xml(
            working,
            &working.get_or_insert_xml_fragment(name),
            wanted,
            &wanted.get_or_insert_xml_fragment(name),
        ),
        Shape::Empty => false,
    }
}

fn restore_text(working: &Doc, text: &TextRef, wanted: &Doc, target: &TextRef) -> bool {
    let have = text.get_string(&working.transact());
    let want = target.get_string(&wanted.transact());
    if have == want {
        return false;
    }
    let (prefix, suffix) = common_ends(&have, &want);
    let mut txn = working.transact_mut();
    let have_middle = &have[prefix..have.len() - suffix];
    let want_middle = &want[prefix..want.len() - suffix];
    // The target's text still whole inside the current one (text was
    // added around it): remove what surrounds it, keeping its items.
    if !want_middle.is_empty()
        && let Some(start) = have_middle.find(want_middle)
    {
        let end = start + want_middle.len();
        if end < have_middle.len() {
            text.remove_range(
                &mut txn,
                index(prefix + end),
                index(have_middle.len() - end),
            );
        }
        if start > 0 {
            text.remove_range(&mut txn, index(prefix), index(start));
        }
        return true;
    }
    let removed = have.len() - prefix - suffix;
    if removed > 0 {
        text.remove_range(&mut txn, index(prefix), index(removed));
    }
    let inserted = &want[prefix..want.len() - suffix];
    if !inserted.is_empty() {
        text.insert(&mut txn, index(prefix), inserted);
    }
    true
}

/// Byte lengths of the common prefix and suffix of `a` and `b`, on
/// character boundaries and not overlapping (the document's text indexes
/// are in bytes).
fn common_ends(a: &str, b: &str) -> (usize, usize) {
    let mut prefix = 0;
    for (x, y) in a.chars().zip(b.chars()) {
        if x != y {
            break;
        }
        prefix += x.len_utf8();
    }
    let mut suffix = 0;
    for (x, y) in a[prefix..].chars().rev().zip(b[prefix..].chars().rev()) {
        if x != y {
            break;
        }
        suffix += x.len_utf8();
    }
    (prefix, suffix)
}

fn index(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn restore_map(working: &Doc, map: &MapRef, wanted: &Doc, target: &MapRef) -> bool {
    let want: Vec<(String, Any)> = {
        let txn = wanted.transact();
        target
            .iter(&txn)
            .map(|(key, value)| (key.to_owned(), value.to_json(&txn)))
            .collect()
    };
    let have: Vec<(String, Any)> = {
        let txn = working.transact();
        map.iter(&txn)
            .map(|(key, value)| (key.to_owned(), value.to_json(&txn)))
            .collect()
    };
    let mut txn = working.transact_mut();
    let mut changed = false;
    for (key, _) in &have {
        if !want.iter().any(|(wanted_key, _)| wanted_key == key) {
            map.remove(&mut txn, key);
            changed = true;
        }
    }
    for (key, value) in want {
        let same = have
            .iter()
            .any(|(have_key, have_value)| *have_key == key && *have_value == value);
        if !same {
            map.insert(&mut txn, key, value);
            changed = true;
        }
    }
    changed
}

fn restore_array(working: &Doc, array: &ArrayRef, wanted: &Doc, target: &ArrayRef) -> bool {
    let want: Vec<Any> = {
        let txn = wanted.transact();
        target.iter(&txn).map(|value| value.to_json(&txn)).collect()
    };
    let have: Vec<Any> = {
        let txn = working.transact();
        array.iter(&txn).map(|value| value.to_json(&txn)).collect()
    };
    if have == want {
        return false;
    }
    let prefix = have.iter().zip(&want).take_while(|(x, y)| x == y).count();
    let suffix = have[prefix..]
        .iter()
        .rev()
        .zip(want[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut txn = working.transact_mut();
    let removed = have.len() - prefix - suffix;
    if removed > 0 {
        array.remove_range(&mut txn, index(prefix), index(removed));
    }
    let inserted = want[prefix..want.len() - suffix].to_vec();
    if !inserted.is_empty() {
        array.insert_range(&mut txn, index(prefix), inserted);
    }
    true
}

fn restore_xml(
    working: &Doc,
    fragment: &XmlFragmentRef,
    wanted: &Doc,
    target: &XmlFragmentRef,
) -> bool {
    if fragment.get_string(&working.transact()) == target.get_string(&wanted.transact()) {
        return false;
    }
    let mut txn = working.transact_mut();
    let children = fragment.len(&txn);
    if children > 0 {
        fragment.remove_range(&mut txn, 0, children);
    }
    let source = wanted.transact();
    copy_xml_children(&source, target, &mut txn, fragment, 0);
    true
}

/// Appends copies of `from`'s children (in `source`) to `into`.
fn copy_xml_children<T: ReadTxn>(
    source: &T,
    from: &impl XmlFragment,
    txn: &mut TransactionMut,
    into: &impl XmlFragment,
    depth: usize,
) {
    if depth >= MAX_XML_DEPTH {
        return;
    }
    for position in 0..from.len(source) {
        match from.get(source, position) {
            Some(XmlOut::Element(element)) => {
                let copy = into.push_back(txn, XmlElementPrelim::empty(element.tag().clone()));
                for (key, value) in element.attributes(source) {
                    copy.insert_attribute(txn, key, value.to_string(source));
                }
                copy_xml_children(source, &element, txn, &copy, depth + 1);
            }
            Some(XmlOut::Text(text)) => {
                into.push_back(txn, XmlTextPrelim::new(text.get_string(source)));
            }
            Some(XmlOut::Fragment(nested)) => {
                copy_xml_children(source, &nested, txn, into, depth + 1);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
