//! The smallest edit of a text: a character diff (Myers, with a
//! deadline) applied as removals and insertions, so characters both texts
//! share keep their items (and the cursors anchored to them).

use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};
use yrs::types::Attrs;
use yrs::{Any, Text, TransactionMut};

use crate::tree::{Marks, Run};

/// How long one diff may search for the smallest edit; past it, the
/// diff it has (still correct, maybe larger) is taken. Bounds the work a
/// large body costs.
const DIFF_DEADLINE: Duration = Duration::from_millis(200);

/// A character and the index of its marks in a table.
type Unit = (char, usize);

/// Rewrites `text` (holding `have`) into `want` with the fewest changed
/// characters; returns whether anything changed. Formatting is part of a
/// character: a character whose marks change is removed and inserted.
pub(crate) fn apply_runs(
    txn: &mut TransactionMut,
    text: &impl Text,
    have: &[Run],
    want: &[Run],
) -> bool {
    let mut table: Vec<Marks> = Vec::new();
    let old = units(have, &mut table);
    let want = keep_mark_attributes(have, want);
    let new = units(&want, &mut table);
    if old == new {
        return false;
    }
    let deadline = Instant::now() + DIFF_DEADLINE;
    let ops = capture_diff_slices_deadline(Algorithm::Myers, &old, &new, Some(deadline));
    let mut cursor: u32 = 0;
    for op in ops {
        match op {
            DiffOp::Equal { old_index, len, .. } => {
                cursor += byte_len(&old[old_index..old_index + len]);
            }
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                text.remove_range(txn, cursor, byte_len(&old[old_index..old_index + old_len]));
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                cursor = insert_units(
                    txn,
                    text,
                    cursor,
                    &new[new_index..new_index + new_len],
                    &table,
                );
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                text.remove_range(txn, cursor, byte_len(&old[old_index..old_index + old_len]));
                cursor = insert_units(
                    txn,
                    text,
                    cursor,
                    &new[new_index..new_index + new_len],
                    &table,
                );
            }
        }
    }
    true
}

/// `want` with each mark whose attributes the text already holds, and
/// more (a link Tiptap made carries `target` and `rel` that Markdown
/// cannot say), taking the held attributes: re-writing the same content
/// in a poorer format does not re-format the text.
fn keep_mark_attributes(have: &[Run], want: &[Run]) -> Vec<Run> {
    let held: Vec<(&String, &serde_json::Value)> =
        have.iter().flat_map(|run| run.marks.iter()).collect();
    want.iter()
        .map(|run| {
            let marks = run
                .marks
                .iter()
                .map(|(name, attrs)| {
                    let richer = held.iter().find(|(held_name, held_attrs)| {
                        *held_name == name && is_subset(attrs, held_attrs)
                    });
                    let attrs = richer.map_or(attrs, |(_, held_attrs)| *held_attrs);
                    (name.clone(), attrs.clone())
                })
                .collect();
            Run {
                text: run.text.clone(),
                marks,
            }
        })
        .collect()
}

/// Whether every key of object `small` is in `large` with the same value.
fn is_subset(small: &serde_json::Value, large: &serde_json::Value) -> bool {
    match (small.as_object(), large.as_object()) {
        (Some(small), Some(large)) => small
            .iter()
            .all(|(key, value)| large.get(key).is_some_and(|held| held == value)),
        _ => small == large,
    }
}

fn units(runs: &[Run], table: &mut Vec<Marks>) -> Vec<Unit> {
    let mut units = Vec::new();
    for run in runs {
        let index = match table.iter().position(|marks| *marks == run.marks) {
            Some(index) => index,
            None => {
                table.push(run.marks.clone());
                table.len() - 1
            }
        };
        units.extend(run.text.chars().map(|character| (character, index)));
    }
    units
}

fn byte_len(units: &[Unit]) -> u32 {
    let bytes: usize = units
        .iter()
        .map(|(character, _)| character.len_utf8())
        .sum();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Inserts `units` at `cursor`, one insertion per run of equal marks, each
/// with its marks stated (so it does not take its left neighbour's);
/// returns the cursor after them.
fn insert_units(
    txn: &mut TransactionMut,
    text: &impl Text,
    mut cursor: u32,
    units: &[Unit],
    table: &[Marks],
) -> u32 {
    let mut start = 0;
    while start < units.len() {
        let marks_index = units[start].1;
        let end = units[start..]
            .iter()
            .position(|(_, index)| *index != marks_index)
            .map_or(units.len(), |offset| start + offset);
        let chunk: String = units[start..end]
            .iter()
            .map(|(character, _)| character)
            .collect();
        let attributes: Attrs = table
            .get(marks_index)
            .map(|marks| {
                marks
                    .iter()
                    .map(|(name, attrs)| (name.as_str().into(), any_of(attrs)))
                    .collect()
            })
            .unwrap_or_default();
        text.insert_with_attributes(txn, cursor, &chunk, attributes);
        cursor += u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        start = end;
    }
    cursor
}

/// A JSON value as the CRDT's value.
pub(crate) fn any_of(value: &serde_json::Value) -> Any {
    serde_json::from_value(value.clone()).unwrap_or(Any::Null)
}

/// The CRDT's value as JSON.
pub(crate) fn json_of(value: &Any) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
