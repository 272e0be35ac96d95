//! The tree read from, and written onto, a `Y.XmlFragment` laid out as
//! y-prosemirror does: an element per node (named by its type, its
//! attributes as the element's), a `Y.XmlText` per run of adjacent text
//! (its marks as formatting attributes).
//!
//! Writing computes the smallest change: children equal at both ends are
//! kept; between them, children of the same type are paired and edited
//! in place (attributes set or removed, text diffed by character), the
//! rest removed or inserted. A one-word change in a long paragraph is
//! that word's removal and insertion.

use std::collections::BTreeMap;

use yrs::types::xml::{XmlElementPrelim, XmlOut, XmlTextPrelim};
use yrs::{ReadTxn, Text, TransactionMut, Xml, XmlElementRef, XmlFragment, XmlTextRef};

use crate::textdiff::{any_of, apply_runs, json_of};
use crate::tree::{Element, MAX_DEPTH, Node, Run, push_run};

/// Children whose texts share at least this share of their characters
/// (common prefix and suffix) are edited in place rather than replaced.
const SIMILAR_ENOUGH: f64 = 0.5;

/// The nodes of `fragment`.
pub(crate) fn read<T: ReadTxn>(txn: &T, fragment: &impl XmlFragment) -> Vec<Node> {
    read_children(txn, fragment, 0)
}

fn read_children<T: ReadTxn>(txn: &T, parent: &impl XmlFragment, depth: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    if depth >= MAX_DEPTH {
        return nodes;
    }
    for index in 0..parent.len(txn) {
        match parent.get(txn, index) {
            Some(XmlOut::Element(element)) => {
                let attrs = element
                    .attributes(txn)
                    .map(|(key, value)| (key.to_owned(), out_json(txn, value)))
                    .filter(|(_, value)| !value.is_null())
                    .collect();
                nodes.push(Node::Element(Element {
                    name: element.tag().to_string(),
                    attrs,
                    children: read_children(txn, &element, depth + 1),
                }));
            }
            Some(XmlOut::Text(text)) => {
                // One node per child, however its runs merge, so a
                // node's index is its child's.
                let mut merged = Vec::new();
                for run in runs_of(txn, &text) {
                    push_run(&mut merged, run);
                }
                let runs = match merged.pop() {
                    Some(Node::Text(runs)) => runs,
                    _ => Vec::new(),
                };
                nodes.push(Node::Text(runs));
            }
            Some(XmlOut::Fragment(nested)) => nodes.extend(read_children(txn, &nested, depth + 1)),
            None => {}
        }
    }
    nodes
}

fn out_json<T: ReadTxn>(txn: &T, value: yrs::Out) -> serde_json::Value {
    match value {
        yrs::Out::Any(any) => json_of(&any),
        other => serde_json::Value::from(other.to_string(txn)),
    }
}

/// The runs of a text: its formatted chunks (embeds are not text).
pub(crate) fn runs_of<T: ReadTxn>(txn: &T, text: &impl Text) -> Vec<Run> {
    let mut runs = Vec::new();
    for chunk in text.diff(txn, yrs::types::text::YChange::identity) {
        let yrs::Out::Any(yrs::Any::String(string)) = chunk.insert else {
            continue;
        };
        let marks = chunk
            .attributes
            .map(|attrs| {
                attrs
                    .iter()
                    .filter(|(_, value)| **value != yrs::Any::Null)
                    .map(|(name, value)| (name.to_string(), json_of(value)))
                    .collect()
            })
            .unwrap_or_default();
        runs.push(Run {
            text: string.to_string(),
            marks,
        });
    }
    runs
}

/// Rewrites `fragment`'s children into `want`; returns whether anything
/// changed.
pub(crate) fn write(txn: &mut TransactionMut, fragment: &impl XmlFragment, want: &[Node]) -> bool {
    let have = read_children(txn, fragment, 0);
    sync_children(txn, fragment, &have, want, 0)
}

fn sync_children(
    txn: &mut TransactionMut,
    parent: &impl XmlFragment,
    have: &[Node],
    want: &[Node],
    depth: usize,
) -> bool {
    if have == want || depth >= MAX_DEPTH {
        return false;
    }
    let prefix = have.iter().zip(want).take_while(|(a, b)| a == b).count();
    let suffix = have[prefix..]
        .iter()
        .rev()
        .zip(want[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let old = &have[prefix..have.len() - suffix];
    let new = &want[prefix..want.len() - suffix];
    let mut position = u32::try_from(prefix).unwrap_or(u32::MAX);
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        let old_left = old.len() - i;
        let new_left = new.len() - j;
        let pair = same_kind(&old[i], &new[j])
            && (old_left == new_left || similarity(&old[i], &new[j]) >= SIMILAR_ENOUGH);
        if pair {
            edit_in_place(txn, parent, position, &old[i], &new[j], depth);
            position += 1;
            i += 1;
            j += 1;
        } else if new_left > old_left {
            insert_node(txn, parent, position, &new[j], depth);
            position += 1;
            j += 1;
        } else {
            parent.remove_range(txn, position, 1);
            i += 1;
        }
    }
    if i < old.len() {
        parent.remove_range(
            txn,
            position,
            u32::try_from(old.len() - i).unwrap_or(u32::MAX),
        );
    }
    for node in &new[j..] {
        insert_node(txn, parent, position, node, depth);
        position += 1;
    }
    true
}

fn same_kind(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Text(_), Node::Text(_)) => true,
        (Node::Element(a), Node::Element(b)) => a.name == b.name,
        _ => false,
    }
}

/// The share of two nodes' text found in their common prefix and suffix.
fn similarity(a: &Node, b: &Node) -> f64 {
    let a: Vec<char> = crate::tree::plain_text(std::slice::from_ref(a))
        .chars()
        .collect();
    let b: Vec<char> = crate::tree::plain_text(std::slice::from_ref(b))
        .chars()
        .collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    (prefix + suffix) as f64 / longest as f64
}

fn edit_in_place(
    txn: &mut TransactionMut,
    parent: &impl XmlFragment,
    position: u32,
    have: &Node,
    want: &Node,
    depth: usize,
) {
    match (parent.get(txn, position), have, want) {
        (Some(XmlOut::Text(text)), Node::Text(old), Node::Text(new)) => {
            apply_runs(txn, &text, old, new);
        }
        (Some(XmlOut::Element(element)), Node::Element(old), Node::Element(new)) => {
            sync_attributes(txn, &element, &old.attrs, &new.attrs);
            sync_children(txn, &element, &old.children, &new.children, depth + 1);
        }
        _ => {
            parent.remove_range(txn, position, 1);
            insert_node(txn, parent, position, want, depth);
        }
    }
}

fn sync_attributes(
    txn: &mut TransactionMut,
    element: &XmlElementRef,
    have: &BTreeMap<String, serde_json::Value>,
    want: &BTreeMap<String, serde_json::Value>,
) {
    for key in have.keys() {
        if !want.contains_key(key) {
            element.remove_attribute(txn, key);
        }
    }
    for (key, value) in want {
        if have.get(key) != Some(value) {
            element.insert_attribute(txn, key.as_str(), any_of(value));
        }
    }
}

fn insert_node(
    txn: &mut TransactionMut,
    parent: &impl XmlFragment,
    position: u32,
    node: &Node,
    depth: usize,
) {
    if depth >= MAX_DEPTH {
        return;
    }
    match node {
        Node::Text(runs) => {
            let text: XmlTextRef = parent.insert(txn, position, XmlTextPrelim::new(""));
            apply_runs(txn, &text, &[], runs);
        }
        Node::Element(element) => {
            let created = parent.insert(
                txn,
                position,
                XmlElementPrelim::empty(element.name.as_str()),
            );
            for (key, value) in &element.attrs {
                created.insert_attribute(txn, key.as_str(), any_of(value));
            }
            for (index, child) in element.children.iter().enumerate() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                insert_node(txn, &created, index, child, depth + 1);
            }
        }
    }
}
