//! JSON Patch (RFC 6902) onto a `Y.Map` or `Y.Array` root: the patch is
//! applied to the root's JSON, then the smallest change between the two
//! values is written (per key for a map; one replace between the common
//! prefix and suffix for an array). A changed value is written as a JSON
//! value (a nested shared type it replaces becomes plain JSON); values
//! the patch leaves equal are not touched.

use serde_json::Value;
use yrs::types::ToJson;
use yrs::{Any, Array, Map, Transact};

use crate::content::{Shape, commit, doc_of, shape_of};
use crate::error::ContentError;
use crate::textdiff::{any_of, json_of};

/// Most operations one patch may hold: each is a pass over the value.
pub const MAX_PATCH_OPERATIONS: usize = 1_000;

/// Applies `patch` to root `root` of `state`: the update (or `None` if
/// the value is unchanged) and the root's value after it.
pub fn patch_content(
    state: &[u8],
    root: &str,
    patch: &Value,
) -> Result<(Option<Vec<u8>>, Value), ContentError> {
    let operations = patch
        .as_array()
        .ok_or_else(|| ContentError::Patch("a patch is an array of operations".into()))?;
    if operations.len() > MAX_PATCH_OPERATIONS {
        return Err(ContentError::Patch(format!(
            "at most {MAX_PATCH_OPERATIONS} operations per patch"
        )));
    }
    let parsed: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|failure| ContentError::Patch(failure.to_string()))?;
    let shape = match shape_of(state, root)? {
        Shape::Empty if first_segment_is_index(operations) => Shape::Array,
        Shape::Empty => Shape::Map,
        shape @ (Shape::Map | Shape::Array) => shape,
        other => {
            return Err(ContentError::WrongShape {
                root: root.to_owned(),
                holds: other.name(),
                wanted: "a Y.Map or a Y.Array",
            });
        }
    };
    let doc = doc_of(state)?;
    if shape == Shape::Array {
        let array = doc.get_or_insert_array(root);
        let have: Vec<Value> = {
            let txn = doc.transact();
            array
                .iter(&txn)
                .map(|value| json_of(&value.to_json(&txn)))
                .collect()
        };
        let mut value = Value::Array(have.clone());
        json_patch::patch(&mut value, &parsed)
            .map_err(|failure| ContentError::PatchFailed(failure.to_string()))?;
        let Value::Array(want) = value.clone() else {
            return Err(ContentError::Patch("the root stays an array".into()));
        };
        let update = commit(&doc, |txn| {
            if have == want {
                return false;
            }
            let prefix = have.iter().zip(&want).take_while(|(a, b)| a == b).count();
            let suffix = have[prefix..]
                .iter()
                .rev()
                .zip(want[prefix..].iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            let removed = have.len() - prefix - suffix;
            let at = u32::try_from(prefix).unwrap_or(u32::MAX);
            if removed > 0 {
                array.remove_range(txn, at, u32::try_from(removed).unwrap_or(u32::MAX));
            }
            let inserted: Vec<Any> = want[prefix..want.len() - suffix]
                .iter()
                .map(any_of)
                .collect();
            if !inserted.is_empty() {
                array.insert_range(txn, at, inserted);
            }
            true
        })?;
        return Ok((update, value));
    }
    let map = doc.get_or_insert_map(root);
    let have: serde_json::Map<String, Value> = {
        let txn = doc.transact();
        map.iter(&txn)
            .map(|(key, value)| (key.to_owned(), json_of(&value.to_json(&txn))))
            .collect()
    };
    let mut value = Value::Object(have.clone());
    json_patch::patch(&mut value, &parsed)
        .map_err(|failure| ContentError::PatchFailed(failure.to_string()))?;
    let Value::Object(want) = value.clone() else {
        return Err(ContentError::Patch("the root stays an object".into()));
    };
    let update = commit(&doc, |txn| {
        let mut changed = false;
        for key in have.keys() {
            if !want.contains_key(key) {
                map.remove(txn, key);
                changed = true;
            }
        }
        for (key, wanted) in &want {
            if have.get(key) != Some(wanted) {
                map.insert(txn, key.as_str(), any_of(wanted));
                changed = true;
            }
        }
        changed
    })?;
    Ok((update, value))
}

/// Whether the first operation's path starts with an array index (`/0`,
/// `/-`): how an empty root's type is chosen.
fn first_segment_is_index(operations: &[Value]) -> bool {
    let Some(path) = operations
        .first()
        .and_then(|operation| operation.get("path"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let segment = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    segment == "-" || (!segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()))
}
