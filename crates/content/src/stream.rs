//! An agent's text edits, one line of a stream at a time, into a `Y.Text`
//! root: `{"insert":"text"}` at the stream's cursor (which then moves past
//! it) or `{"delete":N}` (the N characters after the cursor).
//!
//! The stream writes from one scratch document with one client id, so its
//! updates chain like one editor's and its awareness entry can name the
//! same id. The cursor is a sticky index bound to the character before
//! it: edits others make before it move it with the text, as an editor's
//! cursor moves.

use serde_json::Value;
use yrs::{Assoc, Doc, GetString, IndexedSequence, ReadTxn, StickyIndex, Text, TextRef, Transact};

use crate::content::{Shape, commit, doc_of, shape_of};
use crate::error::ContentError;

/// One line of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEdit {
    /// Insert this text at the cursor.
    Insert(String),
    /// Delete this many characters (Unicode scalar values) after the
    /// cursor.
    Delete(u32),
}

impl StreamEdit {
    /// Reads one NDJSON line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|failure| format!("not JSON: {failure}"))?;
        let Some(object) = value.as_object() else {
            return Err(r#"a line is an object: {"insert":"text"} or {"delete":N}"#.into());
        };
        if object.len() != 1 {
            return Err(r#"a line has one key: "insert" or "delete""#.into());
        }
        if let Some(insert) = object.get("insert") {
            return insert
                .as_str()
                .map(|text| StreamEdit::Insert(text.to_owned()))
                .ok_or_else(|| "insert is a string".to_owned());
        }
        if let Some(delete) = object.get("delete") {
            return delete
                .as_u64()
                .and_then(|count| u32::try_from(count).ok())
                .map(StreamEdit::Delete)
                .ok_or_else(|| "delete is a count of characters".to_owned());
        }
        Err(r#"a line has one key: "insert" or "delete""#.into())
    }
}

/// A stream's writer into one text root.
#[derive(Debug)]
pub struct TextStream {
    doc: Doc,
    text: TextRef,
    /// Where the stream starts, in characters, until the first edit.
    index: u32,
    cursor: Option<StickyIndex>,
}

impl TextStream {
    /// A stream into root `root` of `state`, starting at character
    /// `index`; refused if the root holds something other than text.
    pub fn new(state: &[u8], root: &str, index: u32) -> Result<Self, ContentError> {
        match shape_of(state, root)? {
            Shape::Text | Shape::Empty => {}
            other => {
                return Err(ContentError::WrongShape {
                    root: root.to_owned(),
                    holds: other.name(),
                    wanted: "a Y.Text",
                });
            }
        }
        let doc = doc_of(&[])?;
        let text = doc.get_or_insert_text(root);
        let stream = Self {
            doc,
            text,
            index,
            cursor: None,
        };
        stream.catch_up(state)?;
        let length = stream
            .text
            .get_string(&stream.doc.transact())
            .chars()
            .count();
        if usize::try_from(index).unwrap_or(usize::MAX) > length {
            return Err(ContentError::OutOfRange(format!(
                "index {index} is past the text's end ({length} characters)"
            )));
        }
        Ok(stream)
    }

    /// What the stream's copy of the document holds: ask the document
    /// for what it lacks (a diff, not the whole state) before each line.
    pub fn state_vector(&self) -> yrs::StateVector {
        self.doc.transact().state_vector()
    }

    /// The client id the stream's updates are written under.
    pub fn client_id(&self) -> yrs::ClientID {
        self.doc.client_id()
    }

    fn catch_up(&self, state: &[u8]) -> Result<(), ContentError> {
        if state.is_empty() {
            return Ok(());
        }
        weft_sync::ycheck::apply_contained(&self.doc, state)
            .map_err(weft_sync::InvalidUpdate::Unappliable)?;
        Ok(())
    }

    /// The update that applies `edit` to the document, `state` being the
    /// document's state or what the stream's copy lacks of it (see
    /// [`TextStream::state_vector`]) (`None`: an empty insert or a delete
    /// of nothing).
    pub fn apply(
        &mut self,
        state: &[u8],
        edit: &StreamEdit,
    ) -> Result<Option<Vec<u8>>, ContentError> {
        self.catch_up(state)?;
        let content = self.text.get_string(&self.doc.transact());
        let offset = match &self.cursor {
            Some(cursor) => cursor
                .get_offset(&self.doc.transact())
                .map_or(0, |offset| offset.index),
            None => byte_offset(&content, 0, self.index)?,
        };
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let mut failure = None;
        let text = self.text.clone();
        let mut cursor = None;
        let update = commit(&self.doc, |txn| match edit {
            StreamEdit::Insert(inserted) if inserted.is_empty() => false,
            StreamEdit::Insert(inserted) => {
                text.insert(txn, offset, inserted);
                let end = offset + u32::try_from(inserted.len()).unwrap_or(u32::MAX);
                cursor = text.sticky_index(txn, end, Assoc::Before);
                true
            }
            StreamEdit::Delete(0) => false,
            StreamEdit::Delete(count) => match byte_offset(&content[at..], 0, *count) {
                Ok(length) => {
                    text.remove_range(txn, offset, length);
                    cursor = text.sticky_index(txn, offset, Assoc::Before);
                    true
                }
                Err(refused) => {
                    failure = Some(refused);
                    false
                }
            },
        })?;
        if let Some(refused) = failure {
            return Err(refused);
        }
        if cursor.is_some() {
            self.cursor = cursor;
        }
        Ok(update)
    }
}

/// The byte offset `count` characters after byte `from` of `text`.
fn byte_offset(text: &str, from: usize, count: u32) -> Result<u32, ContentError> {
    let rest = text.get(from..).unwrap_or_default();
    let wanted = usize::try_from(count).unwrap_or(usize::MAX);
    let mut bytes = 0;
    let mut characters = 0;
    for character in rest.chars() {
        if characters == wanted {
            break;
        }
        bytes += character.len_utf8();
        characters += 1;
    }
    if characters < wanted {
        return Err(ContentError::OutOfRange(format!(
            "{count} characters asked for, {characters} there"
        )));
    }
    Ok(u32::try_from(bytes).unwrap_or(u32::MAX))
}
