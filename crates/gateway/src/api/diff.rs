//! `GET /api/documents/{name}/diff`: per text root, the runs that changed
//! between two versions and who made each (`weft_sync::text_runs`, from the
//! log between them); from a later version to an earlier one, or across
//! more updates than a diff replays, one replace between the common prefix
//! and suffix, attributed to the authors of the versions between them.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use weft_sync::{HistoryError, HistoryPoint, RootKind, read_roots};

use super::extract::{DocName, Peer, QueryPairs, caller, require};
use super::history::{VersionJson, history_refusal, version_id};
use crate::auth::Access;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Serialize)]
struct TextChange {
    /// Byte offset in the `from` text where the change starts.
    at: usize,
    deleted: String,
    inserted: String,
    /// Who inserted or deleted this run.
    authors: Vec<String>,
}

#[derive(Serialize)]
struct TextDiff {
    root: String,
    changes: Vec<TextChange>,
}

#[derive(Serialize)]
struct DiffJson {
    from: VersionJson,
    to: VersionJson,
    /// Who changed the document after `from` up to `to`.
    authors: Vec<String>,
    text: Vec<TextDiff>,
}

/// `GET /api/documents/{name}/diff?from=ID&to=ID&text=ROOT`: per named
/// text root, the runs that changed from one version to the other and who
/// made each, and who wrote the versions between them.
pub(super) async fn diff(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::Read)?;
    let mut from = None;
    let mut to = None;
    let mut roots = Vec::new();
    for (key, value) in &query {
        match key.as_str() {
            "from" => from = Some(version_id(value, "from")?),
            "to" => to = Some(version_id(value, "to")?),
            "text" if value.is_empty() => {
                return Err(ApiError::bad_request("a root type name is not empty"));
            }
            "text" => roots.push((RootKind::Text, value.clone())),
            _ => {}
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::bad_request("from and to name two versions (ids)"));
    };
    let registry = &state.registry;
    let refusal = |failure: HistoryError| history_refusal(&failure);
    let from_version = registry.version(&name, from).await.map_err(refusal)?;
    let to_version = registry.version(&name, to).await.map_err(refusal)?;
    let (low, high) = if from_version.id <= to_version.id {
        (&from_version, &to_version)
    } else {
        (&to_version, &from_version)
    };
    let authors = registry
        .authors_between(&name, low.id, high.id)
        .await
        .map_err(refusal)?;
    let root_names: Vec<String> = roots.iter().map(|(_, root)| root.clone()).collect();
    if from_version.covers <= to_version.covers
        && let Some(runs) = registry
            .text_runs(&name, &from_version, &to_version, root_names.clone())
            .await
            .map_err(refusal)?
    {
        let text = root_names
            .into_iter()
            .zip(runs)
            .map(|(root, runs)| TextDiff {
                root,
                changes: runs
                    .into_iter()
                    .map(|run| TextChange {
                        at: run.at,
                        deleted: run.deleted,
                        inserted: run.inserted,
                        authors: run.authors,
                    })
                    .collect(),
            })
            .collect();
        return Ok(Json(DiffJson {
            from: from_version.into(),
            to: to_version.into(),
            authors,
            text,
        })
        .into_response());
    }
    let from_state = registry
        .read_history(&name, HistoryPoint::Version(from))
        .await
        .map_err(refusal)?;
    let to_state = registry
        .read_history(&name, HistoryPoint::Version(to))
        .await
        .map_err(refusal)?;
    let (Some(before), Some(after)) = (
        read_roots(&from_state, &roots),
        read_roots(&to_state, &roots),
    ) else {
        return Err(ApiError::bad_request("a root could not be read as text"));
    };
    let mut text = Vec::with_capacity(roots.len());
    for (((_, root), old), new) in roots.iter().zip(before).zip(after) {
        let old = old.to_string();
        let new = new.to_string();
        text.push(TextDiff {
            root: root.clone(),
            changes: text_changes(&old, &new, &authors),
        });
    }
    Ok(Json(DiffJson {
        from: from_version.into(),
        to: to_version.into(),
        authors,
        text,
    })
    .into_response())
}

/// One replace between the common prefix and suffix (none if equal), by
/// `authors`.
fn text_changes(old: &str, new: &str, authors: &[String]) -> Vec<TextChange> {
    if old == new {
        return Vec::new();
    }
    let mut prefix = 0;
    for (x, y) in old.chars().zip(new.chars()) {
        if x != y {
            break;
        }
        prefix += x.len_utf8();
    }
    let mut suffix = 0;
    for (x, y) in old[prefix..].chars().rev().zip(new[prefix..].chars().rev()) {
        if x != y {
            break;
        }
        suffix += x.len_utf8();
    }
    vec![TextChange {
        at: prefix,
        deleted: old[prefix..old.len() - suffix].to_owned(),
        inserted: new[prefix..new.len() - suffix].to_owned(),
        authors: authors.to_vec(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backward_diff_is_one_replace_between_common_ends() {
        let authors = vec!["bob".to_owned()];
        let changes = text_changes("hello world", "hello brave new world", &authors);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].at, 6);
        assert_eq!(changes[0].deleted, "");
        assert_eq!(changes[0].inserted, "brave new ");
        assert_eq!(changes[0].authors, authors);
        assert!(text_changes("same", "same", &authors).is_empty());
    }
}
