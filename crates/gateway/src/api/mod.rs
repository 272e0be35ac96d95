//! The REST API under `/api/`, for services and operators (plain HTTP; a
//! WebSocket upgrade at `/api/...` is still a document of that name).
//!
//! | route | does |
//! | --- | --- |
//! | `GET /api/openapi.json` | the OpenAPI 3.1 description (`openapi.json`, compiled in) |
//! | `GET /api/documents` | list documents (`?after=`, `?limit=`) |
//! | `GET /api/documents/{name}` | the document as a Yjs v1 update (`Accept: application/octet-stream`) or JSON of the root types named by `?text=`, `?map=`, `?array=`, `?xml=` |
//! | `POST /api/documents/{name}/updates` | apply a Yjs v1 update (body `application/octet-stream`) like a client's: durable through the bus before the 204 |
//! | `DELETE /api/documents/{name}` | delete the document on every node (admin); soft where history is kept, `?purge=true` removes its history too |
//! | `POST /api/documents/{name}/undelete` | bring a deleted document back as it was (write grant) |
//! | `GET /api/documents/{name}?version=ID` / `?at=RFC3339` | the document as it was (history) |
//! | `GET /api/documents/{name}/versions` | its versions, newest first (`?before=`, `?limit=`) |
//! | `POST /api/documents/{name}/versions` | take a named version (`{"name":"..."}`; write grant) |
//! | `POST /api/documents/{name}/restore` | restore to `{"version":"ID"}` or `{"at":"..."}` as a new edit (write grant) |
//! | `GET /api/documents/{name}/diff?from=ID&to=ID&text=ROOT` | per text root, the changed runs and who made each, and who wrote the versions between |
//! | `GET /api/documents/{name}/activity?from=&to=` | per author: updates, first and last time |
//! | `GET /api/documents/{name}/events` | server-sent events: each durable change (`id:` its log position; `Last-Event-ID` resumes) |
//! | `GET /api/events?docs=GLOB` | server-sent events of every document the glob matches and the caller may read |
//! | `POST /api/webhooks/replay` | deliver every change since `{"from":"RFC3339"}` to the webhooks again (admin) |
//! | `GET /api/documents/{name}/content?format=markdown\|prosemirror\|text&root=ROOT` | a root in an editor's format |
//! | `PUT /api/documents/{name}/content?format=..&root=ROOT` | write new content as the smallest change, one durable update (`Idempotency-Key`) |
//! | `PATCH /api/documents/{name}/content?root=ROOT` | a JSON Patch (RFC 6902) onto a map or array root (`Idempotency-Key`) |
//! | `POST /api/documents/{name}/stream?root=ROOT&index=N` | an agent's NDJSON text edits, each line a durable update, the agent in awareness meanwhile |
//! | `POST /api/revocations` | revoke a subject's or a token's access, on every node (admin) |
//! | `GET /api/revocations` | the live revocations (admin) |
//! | `GET /api/cluster` | the nodes of a cluster of owners and the partitions each owns (admin; `--cluster-mode ownership`) |
//!
//! `{name}` is one path segment, percent-decoded: `team%2Fplan` is the
//! document `team/plan`. Query strings are `application/x-www-form-urlencoded`
//! (`+` is a space).
//!
//! Authorisation: `Authorization: Bearer <JWT>`, verified like an upgrade's
//! token. `admin: true` may do everything; otherwise the `docs` globs
//! decide (read for GET, read-write for POST; a listing shows the documents
//! the token may read). Without configured auth the API is open, like the
//! WebSocket path. The OpenAPI document needs no token.

mod cluster;
mod content;
mod diff;
mod documents;
mod events;
mod extract;
mod history;
pub mod idempotency;
mod representation;
mod revocations;
mod stream;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::{GatewayConfig, MAX_REQUEST_BODY_BYTES};
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

/// The OpenAPI 3.1 document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The API's routes, to nest under `/api`. Only the updates and content
/// routes take a body larger than [`MAX_REQUEST_BODY_BYTES`] (up to a
/// WebSocket message), and the stream route a body of any length (each
/// line bounded).
pub(crate) fn router(config: &GatewayConfig) -> Router<AppState> {
    let read_only = |route: axum::routing::MethodRouter<AppState>| {
        route.fallback(|| async { method_not_allowed("GET, HEAD", "this route answers GET, HEAD") })
    };
    Router::new()
        .route("/openapi.json", read_only(get(openapi)))
        .route("/documents", read_only(get(documents::list)))
        .route("/cluster", read_only(get(cluster::get)))
        .route(
            "/revocations",
            get(revocations::list)
                .post(revocations::create)
                .fallback(|| async {
                    method_not_allowed("GET, HEAD, POST", "this route answers GET, HEAD, POST")
                }),
        )
        .route(
            "/documents/{name}",
            get(documents::get)
                .delete(documents::delete)
                .fallback(|| async {
                    method_not_allowed("GET, HEAD, DELETE", "this route answers GET, HEAD, DELETE")
                }),
        )
        .route(
            "/documents/{name}/versions",
            get(history::list).post(history::create).fallback(|| async {
                method_not_allowed("GET, HEAD, POST", "this route answers GET, HEAD, POST")
            }),
        )
        .route(
            "/documents/{name}/restore",
            post(history::restore)
                .fallback(|| async { method_not_allowed("POST", "this route answers POST") }),
        )
        .route(
            "/documents/{name}/undelete",
            post(history::undelete)
                .fallback(|| async { method_not_allowed("POST", "this route answers POST") }),
        )
        .route("/documents/{name}/diff", read_only(get(diff::diff)))
        .route("/documents/{name}/events", read_only(get(events::document)))
        .route("/events", read_only(get(events::many)))
        .route(
            "/webhooks/replay",
            post(events::replay)
                .fallback(|| async { method_not_allowed("POST", "this route answers POST") }),
        )
        .route(
            "/documents/{name}/activity",
            read_only(get(history::activity)),
        )
        .fallback(no_route)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_REQUEST_BODY_BYTES,
        ))
        .route(
            "/documents/{name}/updates",
            documents::updates_route(config.max_message_bytes),
        )
        .route(
            "/documents/{name}/content",
            content::content_route(config.max_message_bytes),
        )
        .route("/documents/{name}/stream", stream::stream_route())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn no_route(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!(
        "no API route {}; see /api/openapi.json",
        uri.path()
    ))
}
