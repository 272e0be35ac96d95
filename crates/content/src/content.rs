//! Reads and writes of one root by format: what `GET` and `PUT
//! /api/documents/{name}/content` compute.

use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::{Doc, GetString, Map, Transact, TransactionMut};

use crate::error::ContentError;
use crate::textdiff::apply_runs;
use crate::tree::{Marks, Run, paragraphs_of, plain_text};
use crate::{markdown, markdown_out, tree, yxml};

/// A content format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown, through Tiptap StarterKit's schema (an XML root).
    Markdown,
    /// ProseMirror JSON (an XML root).
    ProseMirror,
    /// Plain text: a `Y.Text` root, or an XML root's text (a paragraph
    /// per line).
    Text,
}

/// What a root holds, judged by its content (a server never learns the
/// type a client gave a root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Text,
    Map,
    Array,
    Xml,
    Empty,
}

impl Shape {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Text => "a Y.Text",
            Shape::Map => "a Y.Map",
            Shape::Array => "a Y.Array",
            Shape::Xml => "a Y.XmlFragment",
            Shape::Empty => "nothing",
        }
    }
}

/// A scratch document holding `state`.
pub(crate) fn doc_of(state: &[u8]) -> Result<Doc, ContentError> {
    let doc = Doc::new();
    if !state.is_empty() {
        weft_protocol::check_update_v1(state).map_err(weft_sync::InvalidUpdate::from)?;
        weft_sync::ycheck::apply_contained(&doc, state)
            .map_err(weft_sync::InvalidUpdate::Unappliable)?;
    }
    Ok(doc)
}

/// The shape of root `root` in `state`, judged on scratch copies (asking
/// for a root as one type fixes its type in that copy).
pub(crate) fn shape_of(state: &[u8], root: &str) -> Result<Shape, ContentError> {
    let as_map = doc_of(state)?;
    if as_map.get_or_insert_map(root).len(&as_map.transact()) > 0 {
        return Ok(Shape::Map);
    }
    let as_text = doc_of(state)?;
    if !as_text
        .get_or_insert_text(root)
        .get_string(&as_text.transact())
        .is_empty()
    {
        return Ok(Shape::Text);
    }
    let as_array = doc_of(state)?;
    let array = as_array.get_or_insert_array(root);
    let txn = as_array.transact();
    if yrs::Array::len(&array, &txn) == 0 {
        return Ok(Shape::Empty);
    }
    let xml = yrs::Array::iter(&array, &txn)
        .any(|value| matches!(value, yrs::Out::YXmlElement(_) | yrs::Out::YXmlText(_)));
    Ok(if xml { Shape::Xml } else { Shape::Array })
}

fn wrong_shape(root: &str, holds: Shape, wanted: &'static str) -> ContentError {
    ContentError::WrongShape {
        root: root.to_owned(),
        holds: holds.name(),
        wanted,
    }
}

/// Root `root` of `state` in `format`: Markdown or text as a string,
/// ProseMirror as its JSON (serialised).
pub fn read_content(state: &[u8], root: &str, format: Format) -> Result<String, ContentError> {
    let shape = shape_of(state, root)?;
    let doc = doc_of(state)?;
    match (format, shape) {
        (Format::Text, Shape::Text | Shape::Empty) => {
            let text = doc.get_or_insert_text(root);
            Ok(text.get_string(&doc.transact()))
        }
        (_, Shape::Xml | Shape::Empty) => {
            let fragment = doc.get_or_insert_xml_fragment(root);
            let nodes = yxml::read(&doc.transact(), &fragment);
            Ok(match format {
                Format::Markdown => markdown_out::write(&nodes),
                Format::ProseMirror => tree::to_prosemirror(&nodes).to_string(),
                Format::Text => plain_text(&nodes),
            })
        }
        (Format::Text, other) => Err(wrong_shape(root, other, "text")),
        (_, other) => Err(wrong_shape(root, other, "a Y.XmlFragment")),
    }
}

/// The update that makes root `root` of `state` hold `body` (in
/// `format`), or `None` if it holds it already.
pub fn write_content(
    state: &[u8],
    root: &str,
    format: Format,
    body: &str,
) -> Result<Option<Vec<u8>>, ContentError> {
    let shape = shape_of(state, root)?;
    let doc = doc_of(state)?;
    match (format, shape) {
        (Format::Text, Shape::Text | Shape::Empty) => {
            let text = doc.get_or_insert_text(root);
            let have = text.get_string(&doc.transact());
            commit(&doc, |txn| {
                // Plain text keeps each character's formatting where the
                // character stays; new text takes none.
                let have_runs = plain_runs(&have);
                let want_runs = plain_runs(body);
                apply_runs(txn, &text, &have_runs, &want_runs)
            })
        }
        (_, Shape::Xml | Shape::Empty) => {
            let nodes = match format {
                Format::Markdown => markdown::parse(body)?,
                Format::ProseMirror => {
                    let value: serde_json::Value = serde_json::from_str(body)
                        .map_err(|failure| ContentError::ProseMirror(failure.to_string()))?;
                    tree::from_prosemirror(&value)?
                }
                Format::Text => paragraphs_of(body),
            };
            let fragment = doc.get_or_insert_xml_fragment(root);
            commit(&doc, |txn| yxml::write(txn, &fragment, &nodes))
        }
        (Format::Text, other) => Err(wrong_shape(root, other, "text")),
        (_, other) => Err(wrong_shape(root, other, "a Y.XmlFragment")),
    }
}

fn plain_runs(text: &str) -> Vec<Run> {
    vec![Run {
        text: text.to_owned(),
        marks: Marks::new(),
    }]
}

/// Runs `change` in one transaction of `doc`, a panic of the CRDT library
/// contained, and returns that transaction's update if it changed
/// anything.
pub(crate) fn commit(
    doc: &Doc,
    change: impl FnOnce(&mut TransactionMut) -> bool,
) -> Result<Option<Vec<u8>>, ContentError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        // A change that wrote nothing (equal after normalising) is none.
        let changed =
            change(&mut txn) && (!txn.insert_set().is_empty() || !txn.delete_set().is_empty());
        changed.then(|| txn.encode_update_v1())
    }));
    outcome.map_err(|_panic| ContentError::Panicked)
}
