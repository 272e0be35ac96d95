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
//! document `team/plan`. Query strings are `application/x-www-form-urlencoded`
//! (`+` is a space).
//!
//! Authorisation: `Authorization: Bearer <JWT>`, verified like an upgrade's
//! token. `admin: true` may do everything; otherwise the `docs` globs
//! decide (read for GET, read-write for POST; a listing shows the documents
//! the token may read). Without configured auth the API is open, like the
//! WebSocket path. The OpenAPI document needs no token.

mod documents;
mod representation;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, OriginalUri, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::info;

use crate::auth::{ApiCaller, AuthError, bearer_token_of};
use crate::config::{GatewayConfig, MAX_DOC_NAME_BYTES, MAX_REQUEST_BODY_BYTES};
use crate::error::{ApiError, draining, method_not_allowed};
use crate::state::AppState;

/// The OpenAPI 3.1 document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The API's routes, to nest under `/api`. Only the updates route takes a
/// body larger than [`MAX_REQUEST_BODY_BYTES`]: an update may be as large
/// as a WebSocket message.
pub(crate) fn router(config: &GatewayConfig) -> Router<AppState> {
    let read_only = |route: axum::routing::MethodRouter<AppState>| {
        route.fallback(|| async { method_not_allowed("GET, HEAD", "this route answers GET, HEAD") })
    };
    Router::new()
        .route("/openapi.json", read_only(get(openapi)))
        .route("/documents", read_only(get(documents::list)))
        .route(
            "/documents/{name}",
            get(documents::get)
                .delete(documents::delete)
                .fallback(|| async {
                    method_not_allowed("GET, HEAD, DELETE", "this route answers GET, HEAD, DELETE")
                }),
        )
        .fallback(no_route)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_REQUEST_BODY_BYTES as usize,
        ))
        .route(
            "/documents/{name}/updates",
            documents::updates_route(config.max_message_bytes),
        )
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

/// Who calls, once the node takes requests: a draining node refuses (503),
/// then the bearer token decides (401).
pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(draining());
    }
    state
        .auth
        .api_caller(bearer_token_of(headers).as_deref())
        .map_err(|refusal| {
            info!(status = refusal.status().as_u16(), reason = %refusal, "API request refused");
            match refusal {
                AuthError::MissingToken => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this server requires a token: send an Authorization: Bearer header",
                ),
                other => ApiError::from(&other),
            }
        })
}

/// The document a route's `{name}` segment names, percent-decoded; a name
/// that is not UTF-8 or not 1 to 1024 bytes is a 400.
#[derive(Debug)]
pub(crate) struct DocName(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for DocName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request("the document name is not valid UTF-8 once decoded")
            })?;
        if name.is_empty() || name.len() > MAX_DOC_NAME_BYTES {
            return Err(ApiError::bad_request(format!(
                "document names are 1 to {MAX_DOC_NAME_BYTES} bytes"
            )));
        }
        Ok(Self(name))
    }
}

/// The query's `key=value` pairs, form-decoded (`+` is a space), in order.
#[derive(Debug, Default)]
pub(crate) struct QueryPairs(pub(crate) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let pairs: Result<Query<Vec<(String, String)>>, QueryRejection> =
            Query::from_request_parts(parts, state).await;
        let Query(pairs) =
            pairs.map_err(|_| ApiError::bad_request("the query string does not decode"))?;
        Ok(Self(pairs))
    }
}
