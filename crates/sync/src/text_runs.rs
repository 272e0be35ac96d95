//! What changed in a `Y.Text` between two points of a document's history,
//! run by run, and who made each run.
//!
//! The document at the earlier point (a checkpoint's state) is loaded into
//! a scratch document that keeps deleted content (`skip_gc`), the logged
//! updates up to the later point are applied one by one, and `yrs`'s
//! snapshot diff of the two states gives the text as chunks, each unchanged,
//! added or removed. Adjacent changed chunks form one [`TextRun`]; its
//! authors are the writers of the updates that inserted its added items and
//! deleted its removed ones (each update's insertions and delete set name
//! the items exactly). Text inserted and deleted again between the two
//! points is in neither and is left out. Pure: no I/O.

use yrs::types::text::{ChangeKind, Diff, YChange};
use yrs::updates::decoder::Decode;
use yrs::{Any, Doc, ID, IdSet, Options, Out, ReadTxn, Snapshot, Text, Transact, Update};

use crate::update::InvalidUpdate;

/// One logged update and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributedUpdate {
    /// Its author (`None`: logged before Weft recorded authors).
    pub author: Option<String>,
    /// The Yjs v1 update.
    pub update: Vec<u8>,
}

/// A run of changed text: at `at` (a byte offset in the earlier text),
/// `deleted` was replaced by `inserted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRun {
    /// Byte offset in the earlier text.
    pub at: usize,
    /// The earlier text's run removed there.
    pub deleted: String,
    /// The text inserted there.
    pub inserted: String,
    /// Who inserted or deleted it, in order of first appearance.
    pub authors: Vec<String>,
}

/// What one update inserted and deleted, and its author.
struct UpdateIds {
    author: Option<String>,
    inserted: IdSet,
    deleted: IdSet,
}

/// Per root in `roots`, the runs that changed from the document `from`
/// (one Yjs v1 update) to it with `updates` applied in order.
pub fn text_runs(
    from: &[u8],
    updates: &[AttributedUpdate],
    roots: &[String],
) -> Result<Vec<Vec<TextRun>>, InvalidUpdate> {
    let doc = Doc::with_options(Options {
        skip_gc: true,
        ..Options::default()
    });
    apply(&doc, from)?;
    let earlier = doc.transact().snapshot();
    let mut ids = Vec::with_capacity(updates.len());
    for update in updates {
        weft_protocol::check_update_v1(&update.update)?;
        let decoded = Update::decode_v1(&update.update)?;
        ids.push(UpdateIds {
            author: update.author.clone(),
            inserted: decoded.insertions(true),
            deleted: decoded.delete_set().clone(),
        });
        crate::ycheck::apply_decoded(&doc, decoded).map_err(InvalidUpdate::Unappliable)?;
    }
    let later = doc.transact().snapshot();
    let mut all = Vec::with_capacity(roots.len());
    for root in roots {
        let text = doc.get_or_insert_text(root.as_str());
        let chunks = {
            let mut txn = doc.transact_mut();
            text.diff_range(&mut txn, Some(&later), Some(&earlier), YChange::identity)
        };
        all.push(runs_of(&chunks, &earlier, &ids));
    }
    Ok(all)
}

fn apply(doc: &Doc, bytes: &[u8]) -> Result<(), InvalidUpdate> {
    weft_protocol::check_update_v1(bytes)?;
    let update = Update::decode_v1(bytes)?;
    crate::ycheck::apply_decoded(doc, update).map_err(InvalidUpdate::Unappliable)?;
    Ok(())
}

fn visible(snapshot: &Snapshot, id: &ID) -> bool {
    snapshot.state_map.get(&id.client) > id.clock && !snapshot.delete_set.contains(id)
}

/// The runs `chunks` (a snapshot diff, unchanged text without a change)
/// describe; `earlier` is the snapshot offsets count in.
fn runs_of(chunks: &[Diff<YChange>], earlier: &Snapshot, ids: &[UpdateIds]) -> Vec<TextRun> {
    let mut runs = Vec::new();
    let mut current: Option<TextRun> = None;
    let mut offset = 0;
    for chunk in chunks {
        let Out::Any(Any::String(text)) = &chunk.insert else {
            // An embed: not text, no offset.
            continue;
        };
        let Some(change) = &chunk.ychange else {
            if let Some(run) = current.take() {
                runs.push(run);
            }
            offset += text.len();
            continue;
        };
        let (author, removed) = match change.kind {
            // Inserted and deleted again between the two points: in
            // neither text.
            ChangeKind::Removed if !visible(earlier, &change.id) => continue,
            ChangeKind::Removed => (
                ids.iter()
                    .find(|update| update.deleted.contains(&change.id)),
                true,
            ),
            ChangeKind::Added => (
                ids.iter()
                    .find(|update| update.inserted.contains(&change.id)),
                false,
            ),
        };
        let run = current.get_or_insert_with(|| TextRun {
            at: offset,
            deleted: String::new(),
            inserted: String::new(),
            authors: Vec::new(),
        });
        if removed {
            run.deleted.push_str(text);
            offset += text.len();
        } else {
            run.inserted.push_str(text);
        }
        if let Some(author) = author.and_then(|update| update.author.as_ref())
            && !run.authors.contains(author)
        {
            run.authors.push(author.clone());
        }
    }
    if let Some(run) = current {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests;
