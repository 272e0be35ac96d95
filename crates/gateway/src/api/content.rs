//! `/api/documents/{name}/content`: a root in an editor's format.
//!
//! - `GET ?format=markdown|prosemirror|text&root=ROOT`: the root as
//!   Markdown, ProseMirror JSON or plain text;
//! - `PUT` (same query, the new content as the body): the smallest change
//!   from the current content to the new one, committed as one durable
//!   update (see `weft_content`);
//! - `PATCH ?root=ROOT`, a JSON Patch (RFC 6902) for a map or array root.
//!
//! `root` defaults to `default` (the fragment Tiptap's Collaboration
//! extension binds) and `format` to `markdown`. Writes take an
//! `Idempotency-Key` (see `idempotency`) and bodies up to
//! `--max-message-bytes`, like the updates route.
//!
//! A `GET` answers an `ETag` of the content it returns; a `PUT` with
//! `If-Match` is refused (412) if the root's content in that format has
//! changed since, so a read-modify-write does not undo an edit made in
//! between (the check and the commit are not one step: an edit landing
//! between them merges as any concurrent edit does).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::error;
use weft_content::{ContentError, Format};

use super::extract::{DocName, Peer, QueryPairs, caller, refusal_for, require};
use super::idempotency::{Answer, fingerprint, key_of};
use crate::auth::Access;
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

/// The root a request names when it names none: Tiptap's Collaboration
/// extension binds the fragment `default`.
pub(crate) const DEFAULT_ROOT: &str = "default";
/// Longest root name accepted.
const MAX_ROOT_BYTES: usize = 256;

/// The content route, its bodies bounded by `--max-message-bytes`.
pub(super) fn content_route<S>(max_message_bytes: usize) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AppState: axum::extract::FromRef<S>,
{
    get(read)
        .put(put)
        .patch(patch)
        .fallback(|| async {
            method_not_allowed(
                "GET, HEAD, PUT, PATCH",
                "this route answers GET, HEAD, PUT, PATCH",
            )
        })
        .layer::<_, Infallible>(DefaultBodyLimit::disable())
        .layer::<_, Infallible>(RequestBodyLimitLayer::new(max_message_bytes))
        .layer::<_, Infallible>(axum::middleware::map_response(
            move |response: Response| async move {
                if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return too_large(max_message_bytes).into_response();
                }
                response
            },
        ))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::payload_too_large(format!(
        "a content body is at most {limit} bytes (--max-message-bytes)"
    ))
}

/// The root a query names (`root`, or [`DEFAULT_ROOT`]).
pub(super) fn root_param(query: &[(String, String)]) -> Result<String, ApiError> {
    let root = query
        .iter()
        .find(|(key, _)| key == "root")
        .map_or(DEFAULT_ROOT, |(_, value)| value.as_str());
    if root.is_empty() || root.len() > MAX_ROOT_BYTES {
        return Err(ApiError::bad_request(format!(
            "root is a root type's name, 1 to {MAX_ROOT_BYTES} bytes"
        )));
    }
    Ok(root.to_owned())
}

/// The media type of the body (lowercase, without parameters), if any.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next().unwrap_or_default().trim();
    (!media.is_empty()).then(|| media.to_ascii_lowercase())
}

fn unsupported(details: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported media type",
        details,
    )
}

/// The format of a `PUT`: `?format=`, else its `Content-Type`
/// (`text/markdown`, `application/json`, `text/plain`), else Markdown; a
/// body whose type says another format is refused (415).
fn put_format(query: &[(String, String)], headers: &HeaderMap) -> Result<Format, ApiError> {
    let named = query.iter().any(|(key, _)| key == "format");
    let format = format_param(query)?;
    let Some(media) = media_type(headers) else {
        return Ok(format);
    };
    let typed = match media.as_str() {
        "text/markdown" | "text/x-markdown" => Format::Markdown,
        "application/json" => Format::ProseMirror,
        "text/plain" => Format::Text,
        _ => {
            return Err(unsupported(
                "send text/markdown, application/json (ProseMirror) or text/plain",
            ));
        }
    };
    if !named {
        return Ok(typed);
    }
    // Plain text is also Markdown (without markup).
    let fits = typed == format || (format == Format::Markdown && typed == Format::Text);
    if !fits {
        return Err(unsupported(
            "the body's Content-Type is not the format asked for: markdown takes text/markdown or text/plain, prosemirror application/json, text text/plain",
        ));
    }
    Ok(format)
}

fn format_param(query: &[(String, String)]) -> Result<Format, ApiError> {
    match query
        .iter()
        .find(|(key, _)| key == "format")
        .map(|(_, value)| value.as_str())
    {
        None | Some("markdown") => Ok(Format::Markdown),
        Some("prosemirror") => Ok(Format::ProseMirror),
        Some("text") => Ok(Format::Text),
        Some(_) => Err(ApiError::bad_request(
            "format is markdown, prosemirror or text",
        )),
    }
}

/// The answer to a content failure: the caller's input is a 4xx; a
/// defect is a 500, logged here.
pub(super) fn content_refusal(failure: &ContentError) -> ApiError {
    match failure {
        ContentError::ProseMirror(_) | ContentError::TooDeep(_) | ContentError::Patch(_) => {
            ApiError::bad_request(failure.to_string())
        }
        ContentError::OutOfRange(_) => ApiError::bad_request(failure.to_string()),
        ContentError::WrongShape { .. } | ContentError::PatchFailed(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", failure.to_string())
        }
        ContentError::Stored(_) | ContentError::Panicked => {
            error!(error = %failure, "content conversion failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "the content could not be converted",
            )
        }
    }
}

/// Runs a conversion off the runtime's threads (it is CPU work the size
/// of the document).
async fn convert<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ContentError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(outcome) => outcome.map_err(|failure| content_refusal(&failure)),
        Err(_join) => Err(content_refusal(&ContentError::Panicked)),
    }
}

async fn read(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::Read)?;
    let root = root_param(&query)?;
    let format = format_param(&query)?;
    let read = state
        .registry
        .read(&name)
        .await
        .map_err(|failure| refusal_for(&failure, "read document"))?;
    if !read.has_content {
        return Err(ApiError::not_found("no such document"));
    }
    let body = convert(move || weft_content::read_content(&read.state, &root, format)).await?;
    let tag = etag(&body);
    let content_type = match format {
        Format::Markdown => "text/markdown; charset=utf-8",
        Format::ProseMirror => "application/json",
        Format::Text => "text/plain; charset=utf-8",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::ETAG, tag.as_str()),
        ],
        body,
    )
        .into_response())
}

/// The entity tag of a root's content in one format.
fn etag(content: &str) -> String {
    format!("\"{:016x}\"", fingerprint(&[content.as_bytes()]))
}

/// The tags of `If-Match` (`None`: no header; `*` matches anything).
fn if_match(headers: &HeaderMap) -> Option<Vec<String>> {
    let values: Vec<&str> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/").to_owned())
            .filter(|tag| !tag.is_empty())
            .collect(),
    )
}

fn body_text(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<String, ApiError> {
    let body = body.map_err(|_| too_large(limit))?;
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the body is not UTF-8"))
}

async fn put(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let root = root_param(&query)?;
    let format = put_format(&query, &headers)?;
    let key = key_of(&headers)?;
    let expected = if_match(&headers);
    let body = body_text(body, state.config.max_message_bytes)?;
    let request = fingerprint(&[
        root.as_bytes(),
        format!("{format:?}").as_bytes(),
        body.as_bytes(),
    ]);
    let author = caller.author();
    let cache = state.idempotency.clone();
    let write = async {
        let current = state
            .registry
            .read(&name)
            .await
            .map_err(|failure| refusal_for(&failure, "read document"))?;
        let update = {
            let root = root.clone();
            convert(move || {
                if let Some(expected) = expected
                    && !expected.iter().any(|tag| tag == "*")
                {
                    let now = weft_content::read_content(&current.state, &root, format)?;
                    if !expected.contains(&etag(&now)) {
                        return Ok(Err(()));
                    }
                }
                weft_content::write_content(&current.state, &root, format, &body).map(Ok)
            })
            .await?
        };
        let Ok(update) = update else {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition failed",
                "the content changed since the If-Match tag was read; read it again",
            ));
        };
        commit(&state, &name, update, author.clone(), root.as_str()).await
    };
    cache
        .run(key, caller.author(), &name, "put-content", request, write)
        .await
}

/// Commits `update` (if any) as `author`'s edit and answers what changed.
pub(super) async fn commit(
    state: &AppState,
    name: &str,
    update: Option<Vec<u8>>,
    author: std::sync::Arc<str>,
    root: &str,
) -> Result<Answer, ApiError> {
    let update_bytes = update.as_ref().map_or(0, Vec::len);
    if let Some(update) = update {
        state
            .registry
            .apply_update_as(name, update, author)
            .await
            .map_err(|failure| refusal_for(&failure, "apply content"))?;
    }
    Ok(Answer {
        status: StatusCode::OK,
        body: json!({
            "name": name,
            "root": root,
            "changed": update_bytes > 0,
            "updateBytes": update_bytes,
        }),
    })
}

async fn patch(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let root = root_param(&query)?;
    if !matches!(
        media_type(&headers).as_deref(),
        None | Some("application/json-patch+json" | "application/json")
    ) {
        return Err(unsupported("send the patch as application/json-patch+json"));
    }
    let key = key_of(&headers)?;
    let body = body_text(body, state.config.max_message_bytes)?;
    let patch: serde_json::Value = serde_json::from_str(&body)
        .map_err(|failure| ApiError::bad_request(format!("the body is not JSON: {failure}")))?;
    let request = fingerprint(&[root.as_bytes(), body.as_bytes()]);
    let author = caller.author();
    let cache = state.idempotency.clone();
    let write = async {
        let current = state
            .registry
            .read(&name)
            .await
            .map_err(|failure| refusal_for(&failure, "read document"))?;
        let update = {
            let root = root.clone();
            convert(move || {
                weft_content::patch_content(&current.state, &root, &patch).map(|(update, _)| update)
            })
            .await?
        };
        commit(&state, &name, update, author.clone(), root.as_str()).await
    };
    cache
        .run(key, caller.author(), &name, "patch-content", request, write)
        .await
}
