//! The `weft-docs` stream, version 1: what `weft docs export` writes and
//! `weft docs import` reads.
//!
//! Newline-delimited JSON, one object a line:
//!
//! 1. a header, `{"format":"weft-docs","version":1,"export_id":..,"log":..,
//!    "documents":N,"created_at_ms":..}`;
//! 2. one line per document, `{"doc":..,"state":..,"state_vector":..,
//!    "log":..,"position":{"partition":..,"offset":..}}`, `state` and
//!    `state_vector` in standard base64 (Yjs v1 encodings), `position` the
//!    point of the source log the state covers (`null` when unknown);
//! 3. a trailer, `{"trailer":true,"documents":N,"bytes":B,"sha256":..}`:
//!    how many document lines came, their bytes, and the SHA-256 of those
//!    lines (newlines included).
//!
//! Why lines of JSON: a document is one self-contained line, so a reader
//! holds one document at a time however long the stream, `head`/`grep`/`jq`
//! work on it, and a line cut short is a JSON error rather than a silently
//! different document. Base64 costs a third more bytes than a binary frame;
//! a stream compresses well (`| gzip`). A stream without its trailer, or
//! whose trailer disagrees with what came, is truncated or altered, and
//! the reader says so.

use std::io::{BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The `format` of the header.
pub const FORMAT: &str = "weft-docs";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// The longest line a reader accepts: a document's state in base64 plus
/// its fields. Far above any document an editor holds, and a bound on
/// what a corrupt stream can make the reader allocate.
pub const MAX_LINE_BYTES: usize = 512 * 1024 * 1024;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Random per export: an import's progress is kept under it.
    pub export_id: String,
    /// The log the documents were folded from (`embedded` or a topic).
    pub log: String,
    /// How many documents follow (for progress; the trailer is the check).
    pub documents: u64,
    pub created_at_ms: i64,
}

/// Where in its source log a document's state stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePosition {
    pub partition: i32,
    pub offset: i64,
}

/// One document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocEntry {
    pub doc: String,
    /// The whole document as one Yjs v1 update.
    pub state: Vec<u8>,
    /// Its v1 state vector.
    pub state_vector: Vec<u8>,
    pub log: String,
    pub position: Option<LinePosition>,
}

#[derive(Serialize, Deserialize)]
struct DocLine {
    doc: String,
    state: String,
    state_vector: String,
    log: String,
    position: Option<LinePosition>,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub trailer: bool,
    pub documents: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Why a stream could not be read or written.
#[derive(Debug, Error)]
pub enum FormatError {
    #[error("read or write the stream")]
    Io(#[from] std::io::Error),
    #[error("line {line}: not a weft-docs line")]
    Json {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: bad base64 in {field}")]
    Base64 {
        line: u64,
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("not a weft-docs stream (format {0:?})")]
    NotWeftDocs(String),
    #[error("weft-docs version {0} is newer than this weft reads ({VERSION})")]
    Version(u32),
    #[error("line {0} is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong(u64),
    #[error("the stream is empty")]
    Empty,
    #[error("the stream is truncated: it ends after {0} documents without its trailer")]
    Truncated(u64),
    #[error("the stream is damaged: its trailer says {expected}, the stream holds {found}")]
    Mismatch { expected: String, found: String },
    #[error("line {0}: data after the trailer")]
    AfterTrailer(u64),
}

/// Writes a stream: header, documents, trailer.
#[derive(Debug)]
pub struct StreamWriter<W: Write> {
    out: W,
    hasher: Sha256,
    documents: u64,
    bytes: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the header.
    pub fn start(mut out: W, header: &Header) -> Result<Self, FormatError> {
        let line =
            serde_json::to_vec(header).map_err(|source| FormatError::Json { line: 1, source })?;
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        Ok(Self {
            out,
            hasher: Sha256::new(),
            documents: 0,
            bytes: 0,
        })
    }

    /// Writes one document; returns the bytes of its line.
    pub fn write(&mut self, entry: &DocEntry) -> Result<u64, FormatError> {
        let line = DocLine {
            doc: entry.doc.clone(),
            state: STANDARD.encode(&entry.state),
            state_vector: STANDARD.encode(&entry.state_vector),
            log: entry.log.clone(),
            position: entry.position,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|source| FormatError::Json {
            line: self.documents + 2,
            source,
        })?;
        bytes.push(b'\n');
        self.out.write_all(&bytes)?;
        self.hasher.update(&bytes);
        self.documents += 1;
        let length = bytes.len() as u64;
        self.bytes += length;
        Ok(length)
    }

    /// Writes the trailer and flushes; returns it.
    pub fn finish(mut self) -> Result<Trailer, FormatError> {
        let trailer = Trailer {
            trailer: true,
            documents: self.documents,
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
        };
        let line = serde_json::to_vec(&trailer).map_err(|source| FormatError::Json {
            line: self.documents + 2,
            source,
        })?;
        self.out.write_all(&line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(trailer)
    }
}

/// What [`StreamReader::next_entry`] found.
#[derive(Debug)]
pub enum Item {
    /// A document and the bytes of its line.
    Doc(DocEntry, u64),
    /// The trailer, checked against what came: the stream is whole.
    End(Trailer),
}

/// Reads a stream, checking it as it goes.
#[derive(Debug)]
pub struct StreamReader<R: BufRead> {
    input: R,
    header: Header,
    hasher: Sha256,
    documents: u64,
    bytes: u64,
    line: Vec<u8>,
}

impl<R: BufRead> StreamReader<R> {
    /// Reads and checks the header.
    pub fn open(mut input: R) -> Result<Self, FormatError> {
        let mut line = Vec::new();
        if !read_line(&mut input, &mut line, 1)? {
            return Err(FormatError::Empty);
        }
        let header: Header = serde_json::from_slice(&line)
            .map_err(|source| FormatError::Json { line: 1, source })?;
        if header.format != FORMAT {
            return Err(FormatError::NotWeftDocs(header.format));
        }
        if header.version > VERSION {
            return Err(FormatError::Version(header.version));
        }
        Ok(Self {
            input,
            header,
            hasher: Sha256::new(),
            documents: 0,
            bytes: 0,
            line,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next document, or the checked trailer.
    pub fn next_entry(&mut self) -> Result<Item, FormatError> {
        let number = self.documents + 2;
        if !read_line(&mut self.input, &mut self.line, number)? {
            return Err(FormatError::Truncated(self.documents));
        }
        if !self.line.ends_with(b"\n") {
            return Err(FormatError::Truncated(self.documents));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&self.line).map_err(|source| FormatError::Json {
                line: number,
                source,
            })?;
        if value.get("trailer").is_some() {
            let trailer: Trailer =
                serde_json::from_value(value).map_err(|source| FormatError::Json {
                    line: number,
                    source,
                })?;
            self.check_trailer(&trailer)?;
            let mut rest = Vec::new();
            if read_line(&mut self.input, &mut rest, number + 1)? {
                return Err(FormatError::AfterTrailer(number + 1));
            }
            return Ok(Item::End(trailer));
        }
        let line: DocLine = serde_json::from_value(value).map_err(|source| FormatError::Json {
            line: number,
            source,
        })?;
        let entry = DocEntry {
            state: decode(&line.state, number, "state")?,
            state_vector: decode(&line.state_vector, number, "state_vector")?,
            doc: line.doc,
            log: line.log,
            position: line.position,
        };
        self.hasher.update(&self.line);
        self.documents += 1;
        let length = self.line.len() as u64;
        self.bytes += length;
        Ok(Item::Doc(entry, length))
    }

    fn check_trailer(&self, trailer: &Trailer) -> Result<(), FormatError> {
        let found = format!(
            "{} documents, {} bytes, sha256 {}",
            self.documents,
            self.bytes,
            hex(&self.hasher.clone().finalize())
        );
        let expected = format!(
            "{} documents, {} bytes, sha256 {}",
            trailer.documents, trailer.bytes, trailer.sha256
        );
        if found != expected {
            return Err(FormatError::Mismatch { expected, found });
        }
        Ok(())
    }
}

/// Reads one line (newline kept) into `line`, at most [`MAX_LINE_BYTES`];
/// `false` at the end of the input.
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    number: u64,
) -> Result<bool, FormatError> {
    line.clear();
    let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX);
    let read = std::io::Read::take(&mut *input, limit).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(false);
    }
    if line.len() >= MAX_LINE_BYTES && !line.ends_with(b"\n") {
        return Err(FormatError::LineTooLong(number));
    }
    Ok(true)
}

fn decode(text: &str, line: u64, field: &'static str) -> Result<Vec<u8>, FormatError> {
    STANDARD.decode(text).map_err(|source| FormatError::Base64 {
        line,
        field,
        source,
    })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
