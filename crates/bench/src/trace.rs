//! A real editing trace for scenario 5: reading it, cutting a prefix, and
//! applying it to plain text and to a yrs `Text`.
//!
//! The format is the one of the editing-traces collection (sequential
//! traces): gzip-compressed JSON
//! `{"startContent": "", "endContent": "...", "txns": [{"patches": [[pos,
//! delCount, insertStr], ...]}, ...]}`, where positions and counts are
//! Unicode scalar values (not bytes, not UTF-16 units), and each patch
//! applies to the text as left by the patches before it.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context, ensure};
use serde::Deserialize;
use yrs::{Doc, GetString, OffsetKind, Options, Text, TextRef, Transact};

/// The replaying writer's client id (see [`char_offset_doc`]).
const WRITER_CLIENT_ID: yrs::block::ClientID = yrs::block::ClientID::new(3_141_592_653);

/// Name of the root text the trace is replayed into.
pub(crate) const TEXT_NAME: &str = "text";

/// One edit: delete `delete` characters at `pos`, then insert `insert`
/// there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Patch(pub(crate) u32, pub(crate) u32, pub(crate) String);

/// Patches applied together (one update in the replay).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Txn {
    pub(crate) patches: Vec<Patch>,
}

/// A whole trace, or a prefix of one.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Trace {
    pub(crate) start_content: String,
    pub(crate) end_content: String,
    pub(crate) txns: Vec<Txn>,
}

impl Trace {
    /// Reads a gzip-compressed trace file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Trace> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut json = String::new();
        flate2::read::GzDecoder::new(std::io::BufReader::new(file))
            .read_to_string(&mut json)
            .with_context(|| format!("gunzip {}", path.display()))?;
        Trace::parse(&json)
    }

    /// Parses the JSON of a trace.
    ///
    /// yrs counts text offsets in bytes or UTF-16 units, the trace in
    /// characters; they agree in UTF-16 as long as every character is in the
    /// Basic Multilingual Plane, so a trace with any other is refused.
    pub(crate) fn parse(json: &str) -> anyhow::Result<Trace> {
        let trace: Trace = serde_json::from_str(json).context("parse editing trace JSON")?;
        let outside_bmp = |text: &str| text.chars().any(|c| c.len_utf16() != 1);
        ensure!(
            !outside_bmp(&trace.start_content)
                && !trace
                    .txns
                    .iter()
                    .flat_map(|txn| &txn.patches)
                    .any(|Patch(_, _, insert)| outside_bmp(insert)),
            "the trace has characters outside the Basic Multilingual Plane \
             (their character offsets are not UTF-16 offsets)"
        );
        Ok(trace)
    }

    /// Number of edits (patches) in all transactions.
    pub(crate) fn edits(&self) -> usize {
        self.txns.iter().map(|txn| txn.patches.len()).sum()
    }

    /// The first whole transactions holding at most `max_edits` edits (at
    /// least one transaction), with `end_content` recomputed by applying
    /// them to `start_content`. The whole trace if it is no longer.
    pub(crate) fn prefix(&self, max_edits: usize) -> anyhow::Result<Trace> {
        if self.edits() <= max_edits {
            return Ok(self.clone());
        }
        let mut edits = 0;
        let mut txns = Vec::new();
        for txn in &self.txns {
            if edits + txn.patches.len() > max_edits && !txns.is_empty() {
                break;
            }
            edits += txn.patches.len();
            txns.push(txn.clone());
        }
        let end_content = apply_plain(&self.start_content, &txns)?;
        Ok(Trace {
            start_content: self.start_content.clone(),
            end_content,
            txns,
        })
    }
}

/// Applies `txns` to `start` as plain characters (the reference the yrs
/// replay is checked against). Quadratic in the text's length: meant for
/// prefixes and tests, the whole trace carries its own `endContent`.
pub(crate) fn apply_plain(start: &str, txns: &[Txn]) -> anyhow::Result<String> {
    let mut chars: Vec<char> = start.chars().collect();
    for (index, txn) in txns.iter().enumerate() {
        for Patch(pos, delete, insert) in &txn.patches {
            let (pos, delete) = (*pos as usize, *delete as usize);
            ensure!(
                pos + delete <= chars.len(),
                "txn {index}: patch at {pos} deleting {delete} is past the end ({})",
                chars.len()
            );
            chars.splice(pos..pos + delete, insert.chars());
        }
    }
    Ok(chars.into_iter().collect())
}

/// A document whose text offsets count UTF-16 units, which for the traces
/// [`Trace::parse`] accepts (Basic Multilingual Plane only) are the
/// trace's character offsets.
///
/// Its client id is fixed: ids are written as varints wherever an item
/// names its neighbours, so a random one (1 to 8 bytes) would make the
/// document's encoded size vary from run to run. This one is 32 bits, the
/// size Yjs gives its random ids.
pub(crate) fn char_offset_doc() -> Doc {
    Doc::with_options(Options {
        client_id: WRITER_CLIENT_ID,
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Applies one transaction to `text` in `doc` and returns its update (v1).
pub(crate) fn apply_txn(doc: &Doc, text: &TextRef, txn: &Txn) -> Vec<u8> {
    let mut yrs_txn = doc.transact_mut();
    for Patch(pos, delete, insert) in &txn.patches {
        if *delete > 0 {
            text.remove_range(&mut yrs_txn, *pos, *delete);
        }
        if !insert.is_empty() {
            text.insert(&mut yrs_txn, *pos, insert);
        }
    }
    yrs_txn.encode_update_v1()
}

/// The text of the trace's root text in `doc`.
pub(crate) fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text(TEXT_NAME);
    let txn = doc.transact();
    text.get_string(&txn)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use yrs::updates::decoder::Decode;
    use yrs::{ReadTxn, StateVector, Update};

    use super::*;

    const SMALL: &str = r#"{
        "startContent": "",
        "endContent": "hé wörld",
        "txns": [
            {"time": "2021-04-19T06:06:58.219Z", "patches": [[0, 0, "hello"]]},
            {"patches": [[1, 4, "é"], [2, 0, " world"]]},
            {"patches": [[4, 1, "ö"]]}
        ]
    }"#;

    #[test]
    fn parses_the_format() {
        let trace = Trace::parse(SMALL).unwrap();
        assert_eq!(trace.start_content, "");
        assert_eq!(trace.end_content, "hé wörld");
        assert_eq!(trace.txns.len(), 3);
        assert_eq!(trace.edits(), 4);
        assert_eq!(trace.txns[1].patches[0], Patch(1, 4, "é".into()));
    }

    #[test]
    fn plain_application_counts_characters() {
        let trace = Trace::parse(SMALL).unwrap();
        assert_eq!(
            apply_plain(&trace.start_content, &trace.txns).unwrap(),
            trace.end_content
        );
    }

    #[test]
    fn characters_outside_the_bmp_are_refused() {
        let json = r#"{"startContent": "", "endContent": "\ud83d\ude00",
            "txns": [{"patches": [[0, 0, "\ud83d\ude00"]]}]}"#;
        assert!(Trace::parse(json).is_err());
    }

    #[test]
    fn patches_past_the_end_are_refused() {
        let txns = vec![Txn {
            patches: vec![Patch(1, 0, "x".into())],
        }];
        assert!(apply_plain("", &txns).is_err());
    }

    #[test]
    fn prefix_recomputes_the_end() {
        let trace = Trace::parse(SMALL).unwrap();
        let prefix = trace.prefix(3).unwrap();
        assert_eq!(prefix.txns.len(), 2);
        assert_eq!(prefix.end_content, "hé world");
        let one = trace.prefix(1).unwrap();
        assert_eq!(one.end_content, "hello");
        let whole = trace.prefix(100).unwrap();
        assert_eq!(whole.end_content, trace.end_content);
    }

    #[test]
    fn yrs_replay_matches_and_updates_rebuild_it() {
        let trace = Trace::parse(SMALL).unwrap();
        let doc = char_offset_doc();
        let text = doc.get_or_insert_text(TEXT_NAME);
        let updates: Vec<Vec<u8>> = trace
            .txns
            .iter()
            .map(|txn| apply_txn(&doc, &text, txn))
            .collect();
        assert_eq!(text_of(&doc), trace.end_content);
        // A replica with default (byte) offsets that only applies the
        // updates ends with the same text.
        let replica = Doc::new();
        for update in updates {
            replica
                .transact_mut()
                .apply_update(Update::decode_v1(&update).unwrap())
                .unwrap();
        }
        assert_eq!(text_of(&replica), trace.end_content);
        let full = replica
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(!full.is_empty());
    }

    #[test]
    fn loads_gzip() {
        let dir = std::env::temp_dir().join(format!("weft-bench-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("small.json.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(SMALL.as_bytes()).unwrap();
        std::fs::write(&path, encoder.finish().unwrap()).unwrap();
        let trace = Trace::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(trace.edits(), 4);
    }

    /// The real trace, when `BENCH_TRACE` names it (an absolute path, or
    /// one relative to crates/bench, where `cargo test` runs): yrs reaches
    /// its `endContent`, and a prefix agrees with the plain application.
    #[test]
    fn real_trace_when_given() {
        let Some(path) = std::env::var_os("BENCH_TRACE") else {
            return;
        };
        let trace = Trace::load(Path::new(&path)).unwrap();
        let doc = char_offset_doc();
        let text = doc.get_or_insert_text(TEXT_NAME);
        for txn in &trace.txns {
            let _update = apply_txn(&doc, &text, txn);
        }
        assert_eq!(text_of(&doc), trace.end_content);
        let prefix = trace.prefix(5_000).unwrap();
        let doc = char_offset_doc();
        let text = doc.get_or_insert_text(TEXT_NAME);
        for txn in &prefix.txns {
            let _update = apply_txn(&doc, &text, txn);
        }
        assert_eq!(text_of(&doc), prefix.end_content);
    }
}
