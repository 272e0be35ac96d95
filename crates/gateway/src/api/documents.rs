//! The document routes: list, read, write an update, delete.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::info;
use weft_sync::{DeleteOutcome, HistoryError, RootKind, read_roots};

use super::extract::{DocName, Peer, QueryPairs, caller, limit_param, refusal_for, require};
use super::history::{history_refusal, point_asked};
use super::representation::{Representation, negotiate, roots_asked};
use crate::auth::Access;
use crate::config::MAX_DOC_NAME_BYTES;
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

/// Documents a listing returns when `limit` is not given.
const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most documents one listing returns.
const MAX_LIST_LIMIT: u32 = 1000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    documents: Vec<ListedJson>,
    /// The `after` of the next page, or null on the last page.
    next: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedJson {
    name: String,
    loaded: bool,
    snapshot_bytes: Option<i64>,
}

/// `GET /api/documents?after=&limit=`.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, None, peer).await?;
    let mut after = String::new();
    let mut limit = DEFAULT_LIST_LIMIT;
    for (key, value) in query {
        match key.as_str() {
            "after" if value.chars().count() > MAX_DOC_NAME_BYTES => {
                return Err(ApiError::bad_request(format!(
                    "after is a document name: at most {MAX_DOC_NAME_BYTES} characters"
                )));
            }
            "after" => after = value,
            "limit" => {
                limit = limit_param(&value, MAX_LIST_LIMIT)?;
            }
            _ => {}
        }
    }
    let listed = state
        .registry
        .list(&after, limit)
        .await
        .map_err(|failure| refusal_for(&failure, "list documents"))?;
    let next = (listed.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| listed.last().map(|doc| doc.name.clone()))
        .flatten();
    let documents = listed
        .into_iter()
        .filter(|doc| caller.access_to(&doc.name).is_some())
        .map(|doc| ListedJson {
            name: doc.name,
            loaded: doc.loaded,
            snapshot_bytes: doc.snapshot_bytes,
        })
        .collect();
    Ok(axum::Json(Listing { documents, next }).into_response())
}

/// `GET /api/documents/{name}`: the whole state, or the named root types
/// as JSON; with `?version=ID` or `?at=RFC3339`, as it was then.
pub(super) async fn get(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::Read)?;
    let Some(representation) = negotiate(&headers) else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not acceptable",
            "documents are served as application/json or application/octet-stream",
        ));
    };
    let roots = match representation {
        Representation::Json => roots_asked(&query)?,
        Representation::Update => Vec::new(),
    };
    let document_state = match point_asked(&query)? {
        Some(point) => state
            .registry
            .read_history(&name, point)
            .await
            .map_err(|failure| history_refusal(&failure))?,
        None => {
            let read = state
                .registry
                .read(&name)
                .await
                .map_err(|failure| refusal_for(&failure, "read document"))?;
            if !read.has_content {
                let details = if read.deleted_at_ms.is_some() {
                    "the document was deleted and has not been written since"
                } else {
                    "no such document"
                };
                return Err(ApiError::not_found(details));
            }
            read.state
        }
    };
    if representation == Representation::Update {
        return Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            document_state,
        )
            .into_response());
    }
    let Some(values) = read_roots(&document_state, &roots) else {
        return Err(ApiError::bad_request(
            "a root type could not be read as the type asked for",
        ));
    };
    let mut body = serde_json::Map::new();
    body.insert("name".to_owned(), serde_json::Value::from(name));
    for key in ["text", "map", "array", "xml"] {
        body.insert(
            key.to_owned(),
            serde_json::Value::Object(Default::default()),
        );
    }
    for ((kind, root), value) in roots.into_iter().zip(values) {
        let key = match kind {
            RootKind::Text => "text",
            RootKind::Map => "map",
            RootKind::Array => "array",
            RootKind::XmlFragment => "xml",
        };
        let value = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
        if let Some(serde_json::Value::Object(group)) = body.get_mut(key) {
            group.insert(root, value);
        }
    }
    Ok(axum::Json(serde_json::Value::Object(body)).into_response())
}

/// `POST /api/documents/{name}/updates`, bounded by `--max-message-bytes`
/// (declared or not) instead of the 64 KiB of every other route.
pub(super) fn updates_route<S>(max_message_bytes: usize) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AppState: axum::extract::FromRef<S>,
{
    post(post_update)
        .fallback(|| async { method_not_allowed("POST", "this route answers POST") })
        .layer::<_, Infallible>(DefaultBodyLimit::disable())
        .layer::<_, Infallible>(RequestBodyLimitLayer::new(max_message_bytes))
        .layer::<_, Infallible>(axum::middleware::map_response(
            move |response: Response| async move { too_large_as_json(response, max_message_bytes) },
        ))
}

/// The JSON refusal of an update over the limit (the limit layer's own
/// 413 is plain text).
fn too_large_as_json(response: Response, limit: usize) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    update_too_large(limit).into_response()
}

fn update_too_large(limit: usize) -> ApiError {
    ApiError::payload_too_large(format!(
        "an update is at most {limit} bytes (--max-message-bytes)"
    ))
}

async fn post_update(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
            "send the update as application/octet-stream (a Yjs v1 update)",
        ));
    }
    let body = body.map_err(|_| update_too_large(state.config.max_message_bytes))?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send a Yjs v1 update",
        ));
    }
    state
        .registry
        .apply_update_as(&name, body.to_vec(), caller.author())
        .await
        .map_err(|failure| refusal_for(&failure, "apply update"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/documents/{name}` (admin): a soft delete where history is
/// kept (`POST .../undelete` brings it back within retention);
/// `?purge=true` also removes its history for good.
pub(super) async fn delete(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, None, peer).await?;
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "deleting a document takes a token with admin: true",
        ));
    }
    let mut purge = false;
    for (key, value) in &query {
        if key == "purge" {
            purge = match value.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(ApiError::bad_request("purge is true or false")),
            };
        }
    }
    let outcome = state
        .registry
        .delete(&name)
        .await
        .map_err(|failure| refusal_for(&failure, "delete document"))?;
    let purged = if purge {
        match state.registry.purge_history(&name).await {
            Ok(purged) => purged,
            Err(HistoryError::Disabled) => false,
            Err(failure) => return Err(history_refusal(&failure)),
        }
    } else {
        false
    };
    match outcome {
        DeleteOutcome::Deleted => {
            info!(doc = name, purge, "document deleted through the API");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        DeleteOutcome::NotFound if purged => {
            info!(
                doc = name,
                "deleted document's history purged through the API"
            );
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        DeleteOutcome::NotFound => Err(ApiError::not_found("no such document")),
    }
}
