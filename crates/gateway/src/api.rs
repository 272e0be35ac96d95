//! The REST API under `/api/`, for services and operators (plain HTTP; a
//! WebSocket upgrade at `/api/...` is still a document of that name).
//!
//! | route | does |
//! | --- | --- |
//! | `GET /api/openapi.json` | the OpenAPI 3.1 description (`openapi.json`, compiled in) |
//! | `GET /api/documents` | list documents (`?after=`, `?limit=`) |
//! | `GET /api/documents/{name}` | the document as a Yjs v1 update (`Accept: application/octet-stream`) or JSON of the root types named by `?text=`, `?map=`, `?array=`, `?xml=` |
//! | `POST /api/documents/{name}/updates` | apply a Yjs v1 update (body `application/octet-stream`) like a client's: durable through the bus before the 204 |
//! | `DELETE /api/documents/{name}` | delete the document on every node (admin) |
//!
//! `{name}` is one path segment, percent-decoded: `team%2Fplan` is the
//! document `team/plan`.
//!
//! Authorisation: `Authorization: Bearer <JWT>`, verified like an upgrade's
//! token. `admin: true` may do everything; otherwise the `docs` globs
//! decide (read for GET, read-write for POST; a listing shows the documents
//! the token may read). Without configured auth the API is open, like the
//! WebSocket path. The OpenAPI document needs no token.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use tracing::{error, info};
use weft_sync::{DeleteOutcome, PublishError, RootKind, SyncError, read_roots};

use crate::auth::{Access, ApiCaller, bearer_token_of};
use crate::config::{MAX_DOC_NAME_BYTES, MAX_REQUEST_BODY_BYTES};
use crate::{ApiError, AppState};

/// The OpenAPI 3.1 document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
/// Documents a listing returns when `limit` is not given.
const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most documents one listing returns.
const MAX_LIST_LIMIT: u32 = 1000;
/// Most root types one JSON read may name: each is a lookup in the
/// document; a real editor has a handful.
const MAX_ROOTS: usize = 64;
/// The path prefix of the API.
pub(crate) const PREFIX: &str = "/api";

/// A route of the API.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    OpenApi,
    Documents,
    Document(String),
    Updates(String),
}

/// Whether a plain (non-upgrade) request is for the API.
pub(crate) fn is_api_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/api/")
}

/// Serves one API request.
pub(crate) async fn dispatch(state: AppState, request: Request<Body>) -> Response {
    let route = route(request.uri().path());
    // Only the updates route takes a body larger than any other route.
    let body_limit = match &route {
        Ok(Some(Route::Updates(_))) => state.config.max_message_bytes,
        _ => MAX_REQUEST_BODY_BYTES as usize,
    };
    if let Some(declared) = crate::routes::declared_body_bytes(&request)
        && declared > body_limit as u64
    {
        return ApiError::payload_too_large(format!(
            "this route takes a body of at most {body_limit} bytes"
        ))
        .into_response();
    }
    let route = match route {
        Ok(Some(route)) => route,
        Ok(None) => {
            return ApiError::not_found(format!(
                "no API route {}; see {PREFIX}/openapi.json",
                request.uri().path()
            ))
            .into_response();
        }
        Err(refusal) => return refusal.into_response(),
    };
    let method = request.method().clone();
    let allowed = match &route {
        Route::OpenApi | Route::Documents => "GET, HEAD",
        Route::Document(_) => "GET, HEAD, DELETE",
        Route::Updates(_) => "POST",
    };
    let method_allowed = match &route {
        Route::OpenApi | Route::Documents => method == Method::GET || method == Method::HEAD,
        Route::Document(_) => {
            method == Method::GET || method == Method::HEAD || method == Method::DELETE
        }
        Route::Updates(_) => method == Method::POST,
    };
    if !method_allowed {
        let mut response =
            ApiError::method_not_allowed(format!("this route answers {allowed}")).into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return response;
    }
    if route == Route::OpenApi {
        return openapi();
    }
    if state.lifecycle.is_draining() {
        return ApiError::unavailable("draining", "this node is shutting down; retry elsewhere")
            .into_response();
    }
    let caller = match state
        .auth
        .api_caller(bearer_token_of(request.headers()).as_deref())
    {
        Ok(caller) => caller,
        Err(refusal) => {
            info!(status = refusal.status().as_u16(), reason = %refusal, "API request refused");
            let details = match refusal {
                crate::auth::AuthError::MissingToken => {
                    "this server requires a token: send an Authorization: Bearer header"
                }
                _ => refusal.details(),
            };
            return ApiError::new(refusal.status(), "unauthorized", details).into_response();
        }
    };
    let outcome = match route {
        Route::OpenApi => Ok(openapi()),
        Route::Documents => list(&state, &caller, request.uri().query()).await,
        Route::Document(name) if method == Method::DELETE => delete(&state, &caller, &name).await,
        Route::Document(name) => {
            let representation = negotiate(request.headers());
            get(
                &state,
                &caller,
                &name,
                representation,
                request.uri().query(),
            )
            .await
        }
        Route::Updates(name) => post_update(&state, &caller, &name, request, body_limit).await,
    };
    outcome.unwrap_or_else(IntoResponse::into_response)
}

fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// The route a path names, `None` for none. A document segment that does
/// not decode to a valid name is a 400.
fn route(path: &str) -> Result<Option<Route>, ApiError> {
    let Some(rest) = path.strip_prefix("/api/") else {
        return Ok(None);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    Ok(match segments.as_slice() {
        ["openapi.json"] => Some(Route::OpenApi),
        ["documents"] => Some(Route::Documents),
        ["documents", name] if !name.is_empty() => Some(Route::Document(doc_name(name)?)),
        ["documents", name, "updates"] if !name.is_empty() => Some(Route::Updates(doc_name(name)?)),
        _ => None,
    })
}

fn doc_name(segment: &str) -> Result<String, ApiError> {
    let name = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the document name is not valid UTF-8 once decoded"))?;
    if name.is_empty() || name.len() > MAX_DOC_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "document names are 1 to {MAX_DOC_NAME_BYTES} bytes"
        )));
    }
    Ok(name.into_owned())
}

/// The query's `key=value` pairs, form-decoded (`+` is a space).
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_decode_str(&text.replace('+', " "))
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| ApiError::bad_request("a query parameter is not valid UTF-8"))
        };
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(pairs)
}

/// What a `GET` of a document answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Representation {
    /// `application/json`: the named root types.
    Json,
    /// `application/octet-stream`: the whole state as a Yjs v1 update.
    Update,
}

/// The representation the `Accept` header prefers (`None`: none we serve,
/// 406). No header, or an empty one, takes JSON.
fn negotiate(headers: &HeaderMap) -> Option<Representation> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    if values.iter().all(|value| value.trim().is_empty()) {
        return Some(Representation::Json);
    }
    let mut best: Option<(f32, Representation)> = None;
    for range in values.iter().flat_map(|value| value.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|parameter| parameter.trim().strip_prefix("q="))
            .find_map(|value| value.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality <= 0.0 || quality.is_nan() {
            continue;
        }
        let representation = match media.as_str() {
            "application/octet-stream" => Representation::Update,
            "application/json" | "application/*" | "*/*" => Representation::Json,
            _ => continue,
        };
        if best.is_none_or(|(best_quality, _)| quality > best_quality) {
            best = Some((quality, representation));
        }
    }
    best.map(|(_, representation)| representation)
}

fn require(caller: &ApiCaller, name: &str, wanted: Access) -> Result<(), ApiError> {
    match caller.access_to(name) {
        Some(access) if access >= wanted => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token grants read-only access to this document",
        )),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token grants no access to this document",
        )),
    }
}

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

async fn list(
    state: &AppState,
    caller: &ApiCaller,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let mut after = String::new();
    let mut limit = DEFAULT_LIST_LIMIT;
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "after" if value.chars().count() > MAX_DOC_NAME_BYTES => {
                return Err(ApiError::bad_request(format!(
                    "after is a document name: at most {MAX_DOC_NAME_BYTES} characters"
                )));
            }
            "after" => after = value,
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIST_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit is an integer from 1 to {MAX_LIST_LIMIT}"
                        ))
                    })?;
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

async fn get(
    state: &AppState,
    caller: &ApiCaller,
    name: &str,
    representation: Option<Representation>,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    require(caller, name, Access::Read)?;
    let Some(representation) = representation else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not acceptable",
            "documents are served as application/json or application/octet-stream",
        ));
    };
    let roots = match representation {
        Representation::Json => roots_asked(query)?,
        Representation::Update => Vec::new(),
    };
    let read = state
        .registry
        .read(name)
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
    if representation == Representation::Update {
        return Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            read.state,
        )
            .into_response());
    }
    let Some(values) = read_roots(&read.state, &roots) else {
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

/// The root types `?text=`, `?map=`, `?array=`, `?xml=` name (repeatable).
fn roots_asked(query: Option<&str>) -> Result<Vec<(RootKind, String)>, ApiError> {
    let mut roots: Vec<(RootKind, String)> = Vec::new();
    for (key, value) in query_pairs(query)? {
        let kind = match key.as_str() {
            "text" => RootKind::Text,
            "map" => RootKind::Map,
            "array" => RootKind::Array,
            "xml" => RootKind::XmlFragment,
            _ => continue,
        };
        if value.is_empty() {
            return Err(ApiError::bad_request("a root type name is not empty"));
        }
        if roots.contains(&(kind, value.clone())) {
            continue;
        }
        roots.push((kind, value));
        if roots.len() > MAX_ROOTS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_ROOTS} root types per request"
            )));
        }
    }
    Ok(roots)
}

async fn post_update(
    state: &AppState,
    caller: &ApiCaller,
    name: &str,
    request: Request<Body>,
    body_limit: usize,
) -> Result<Response, ApiError> {
    require(caller, name, Access::ReadWrite)?;
    let content_type = request
        .headers()
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
    let body = axum::body::to_bytes(request.into_body(), body_limit)
        .await
        .map_err(|_| {
            ApiError::payload_too_large(format!(
                "an update is at most {body_limit} bytes (--max-message-bytes)"
            ))
        })?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send a Yjs v1 update",
        ));
    }
    state
        .registry
        .apply_update(name, body.to_vec())
        .await
        .map_err(|failure| refusal_for(&failure, "apply update"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(state: &AppState, caller: &ApiCaller, name: &str) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "deleting a document takes a token with admin: true",
        ));
    }
    match state
        .registry
        .delete(name)
        .await
        .map_err(|failure| refusal_for(&failure, "delete document"))?
    {
        DeleteOutcome::Deleted => {
            info!(doc = name, "document deleted through the API");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        DeleteOutcome::NotFound => Err(ApiError::not_found("no such document")),
    }
}

/// The answer to a registry failure: the client's fault is a 4xx with a
/// reason, anything else a 503 (logged here, once, with its cause).
fn refusal_for(failure: &SyncError, doing: &'static str) -> ApiError {
    match failure {
        SyncError::InvalidUpdate(_) => {
            ApiError::bad_request("the body is not a Yjs v1 update that can be applied")
        }
        SyncError::Deleted => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the update builds on the history of a deleted document",
        ),
        SyncError::ShuttingDown => {
            ApiError::unavailable("draining", "this node is shutting down; retry elsewhere")
        }
        SyncError::NotConnected => ApiError::unavailable(
            "not ready",
            "this node is not connected to its message bus yet; retry",
        ),
        SyncError::TooManyDocuments => ApiError::unavailable(
            "too many documents",
            "this node holds as many documents as it may; retry later",
        ),
        SyncError::Publish(PublishError::Unavailable) => {
            ApiError::unavailable("not ready", "the message bus is not connected; retry")
        }
        SyncError::Publish(_) | SyncError::Load(_) | SyncError::Replay(_) => {
            error!(error = %failure, error.source = ?std::error::Error::source(failure), doing, "API request failed");
            ApiError::unavailable("unavailable", "the document could not be served; retry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_one_segment_names() {
        assert_eq!(route("/api/openapi.json").unwrap(), Some(Route::OpenApi));
        assert_eq!(route("/api/documents").unwrap(), Some(Route::Documents));
        assert_eq!(
            route("/api/documents/team%2Fplan").unwrap(),
            Some(Route::Document("team/plan".to_owned()))
        );
        assert_eq!(
            route("/api/documents/a%20b/updates").unwrap(),
            Some(Route::Updates("a b".to_owned()))
        );
        assert_eq!(route("/api/documents/").unwrap(), None);
        assert_eq!(route("/api/documents/team/plan").unwrap(), None);
        assert_eq!(route("/api/nothing").unwrap(), None);
        assert!(route("/api/documents/%ff").is_err());
    }

    #[test]
    fn accept_picks_the_preferred_representation() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            negotiate(&headers)
        };
        assert_eq!(negotiate(&HeaderMap::new()), Some(Representation::Json));
        assert_eq!(
            with("application/octet-stream"),
            Some(Representation::Update)
        );
        assert_eq!(with("application/json"), Some(Representation::Json));
        assert_eq!(with("*/*"), Some(Representation::Json));
        assert_eq!(
            with("application/json;q=0.5, application/octet-stream"),
            Some(Representation::Update)
        );
        assert_eq!(
            with("application/octet-stream;q=0, application/json"),
            Some(Representation::Json)
        );
        assert_eq!(with("text/html"), None);
        assert_eq!(with("application/octet-stream;q=0"), None);
    }

    #[test]
    fn root_names_come_from_the_query() {
        let roots = roots_asked(Some("text=body&map=meta&array=items&xml=pm&other=x")).unwrap();
        assert_eq!(
            roots,
            vec![
                (RootKind::Text, "body".to_owned()),
                (RootKind::Map, "meta".to_owned()),
                (RootKind::Array, "items".to_owned()),
                (RootKind::XmlFragment, "pm".to_owned()),
            ]
        );
        assert_eq!(
            roots_asked(Some("text=a%20b&text=a+b")).unwrap(),
            vec![(RootKind::Text, "a b".to_owned())]
        );
        assert_eq!(roots_asked(Some("text=a&map=a")).unwrap().len(), 2);
        assert!(roots_asked(Some("text=")).is_err());
    }
}
