//! Weft's documents in the formats editors and services speak: Markdown
//! and ProseMirror JSON for a `Y.XmlFragment` bound by y-prosemirror (as
//! Tiptap's Collaboration extension binds it), plain text for a `Y.Text`,
//! JSON Patch (RFC 6902) for a `Y.Map` or `Y.Array`, and the text edits an
//! agent streams.
//!
//! Every write is computed on a scratch copy of the document and returned
//! as one Yjs v1 update holding only that change (the transaction's own
//! items and deletions), for the caller to commit like a client's edit;
//! content equal to the current one yields no update. No I/O.
//!
//! Layout, leaves first: `error`; `tree` (the ProseMirror-shaped tree and
//! its JSON); `markdown` (Markdown to tree) and `markdown_out` (tree to
//! Markdown); `textdiff` (the smallest text edit); `yxml` (tree to and from
//! a fragment); `json` (JSON Patch onto maps and arrays); `stream` (an
//! agent's text edits); `content` (reads and writes by format).

mod content;
mod error;
mod json;
mod markdown;
mod markdown_out;
mod stream;
mod textdiff;
mod tree;
mod yxml;

pub use content::{Format, read_content, write_content};
pub use error::ContentError;
pub use json::{MAX_PATCH_OPERATIONS, patch_content};
pub use markdown::parse as parse_markdown;
pub use markdown_out::write as write_markdown;
pub use stream::{StreamEdit, TextStream};
pub use tree::{Element, MAX_DEPTH, Marks, Node, Run, from_prosemirror, to_prosemirror};

#[cfg(test)]
mod tests;
