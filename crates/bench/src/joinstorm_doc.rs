//! Scenario 7's document: built by the driver, in the shape a block
//! editor gives a long document, and what a join must deliver of it.

use yrs::types::ToJson as _;
use yrs::{Any, Doc, Map, Text, TextPrelim, Transact};
#[cfg(test)]
use yrs::{ReadTxn as _, StateVector, Update, updates::decoder::Decode as _};

/// Root map of the document.
const SECTIONS: &str = "sections";
/// Bytes of text per section.
const SECTION_BYTES: u32 = 16 * 1024;
/// How far back from the end of a section an edit in between lands.
const RECENT_BYTES: u32 = 4 * 1024;
/// Bytes of edits per uploaded update (one transaction).
pub(crate) const CHUNK_BYTES: usize = 512 * 1024;

/// The document's content as JSON (each section's text a string): what
/// every join must deliver.
#[derive(Debug, PartialEq)]
pub(crate) struct Content(Any);

pub(crate) fn content_of(doc: &Doc) -> Content {
    let sections = doc.get_or_insert_map(SECTIONS);
    let txn = doc.transact();
    Content(sections.to_json(&txn))
}

/// A small deterministic generator (the document is the same every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

const WORDS: [&str; 16] = [
    "weft", "warp", "thread", "loom", "shuttle", "pattern", "colour", "fibre", "tension", "bobbin",
    "heddle", "reed", "selvedge", "twill", "satin", "plain",
];

fn paragraph(rng: &mut Lcg) -> String {
    let words = 12 + rng.below(60);
    let mut text = String::with_capacity(words as usize * 8);
    for index in 0..words {
        if index > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    text.push_str(".\n");
    text
}

/// Builds the document to about `doc_bytes`; returns it and its updates,
/// one per transaction, in order.
///
/// The document is a map of sections, each a text written paragraph by
/// paragraph (a block editor's shape): most paragraphs are appended, a
/// quarter go in between the recent ones, and now and then a range is
/// deleted again; each section also has a word count entry.
pub(crate) fn build_document(doc_bytes: usize) -> (Doc, Vec<Vec<u8>>) {
    let doc = Doc::new();
    let sections = doc.get_or_insert_map(SECTIONS);
    let mut rng = Lcg(0x5eed);
    let mut updates = Vec::new();
    let mut sent = 0;
    let mut section = 0_u32;
    while sent < doc_bytes {
        let mut txn = doc.transact_mut();
        let mut written = 0;
        while written < CHUNK_BYTES {
            let key = format!("section-{section:06}");
            let text = sections.insert(&mut txn, key.clone(), TextPrelim::new(""));
            let mut words = 0_u64;
            while text.len(&txn) < SECTION_BYTES {
                let paragraph = paragraph(&mut rng);
                written += paragraph.len();
                words += paragraph.split(' ').count() as u64;
                let len = text.len(&txn);
                // ASCII text: any byte offset is a character boundary.
                let recent = u64::from(len.min(RECENT_BYTES));
                let at = if rng.below(4) == 0 {
                    len - rng.below(recent + 1) as u32
                } else {
                    len
                };
                text.insert(&mut txn, at, &paragraph);
                if rng.below(10) == 0 && recent > 100 {
                    let from = len - 60 - rng.below(recent - 60) as u32;
                    text.remove_range(&mut txn, from, 10 + rng.below(50) as u32);
                }
            }
            sections.insert(&mut txn, format!("{key}-words"), Any::from(words as f64));
            section += 1;
        }
        let update = txn.encode_update_v1();
        drop(txn);
        sent += update.len();
        updates.push(update);
    }
    (doc, updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_reaches_its_size_in_realistic_updates() {
        let (doc, updates) = build_document(2 * CHUNK_BYTES);
        assert!(updates.len() >= 2, "{} updates", updates.len());
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(state.len() >= CHUNK_BYTES, "{} bytes", state.len());
        let content = content_of(&doc);
        let Any::Map(sections) = &content.0 else {
            panic!("sections is not a map: {:?}", content.0);
        };
        assert!(sections.len() > 20, "{} entries", sections.len());
        let Some(Any::String(first)) = sections.get("section-000000") else {
            panic!("no first section");
        };
        assert!(
            first.lines().count() > 20,
            "{} paragraphs",
            first.lines().count()
        );
        // The updates rebuild the same content, and the payload check
        // tells a different document apart.
        let rebuilt = Doc::new();
        for update in &updates {
            let update = Update::decode_v1(update).expect("decode");
            rebuilt.transact_mut().apply_update(update).expect("apply");
        }
        assert_eq!(content_of(&rebuilt), content);
    }
}
