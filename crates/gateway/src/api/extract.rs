//! What the API's handlers take from a request: the caller, the document
//! name, the query.

use axum::extract::rejection::QueryRejection;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use tracing::{error, info};
use weft_sync::SyncError;

use crate::auth::{Access, ApiCaller, AuthError, bearer_token_of};
use crate::config::MAX_DOC_NAME_BYTES;
use crate::error::{ApiError, FailureAnswer, draining};
use crate::live::{TokenFacts, unix_now};
use crate::state::AppState;

/// Who calls, once the node takes requests: a draining node refuses (503),
/// then the bearer token decides (401), or the permission service, asked
/// about `doc` (503 if it cannot answer).
pub(crate) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    doc: Option<&str>,
    peer: Peer,
) -> Result<ApiCaller, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(draining());
    }
    let context = match peer.0 {
        Some(remote) => state.auth.context(headers, remote),
        None => crate::auth::RequestContext::default(),
    };
    let caller = state
        .auth
        .api_caller(bearer_token_of(headers).as_deref(), doc, &context)
        .await
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
        })?;
    if let ApiCaller::Token(claims) = &caller
        && state
            .revocations
            .current()
            .revokes_all(&TokenFacts::of(claims), unix_now())
    {
        info!(sub = %claims.sub, "API request refused: token revoked");
        return Err(ApiError::from(&AuthError::Revoked));
    }
    Ok(caller)
}

/// The peer's address, when the server recorded it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
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

/// Refuses a caller without `wanted` access to `name` (403).
pub(crate) fn require(caller: &ApiCaller, name: &str, wanted: Access) -> Result<(), ApiError> {
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

/// The answer to a registry failure (see [`FailureAnswer`]): the client's
/// fault is a 4xx with a reason, anything else a 503, logged here, once,
/// with its cause when it is the server's fault.
pub(crate) fn refusal_for(failure: &SyncError, doing: &'static str) -> ApiError {
    let answer = FailureAnswer::sync(failure);
    if answer.internal {
        error!(error = %failure, error.source = ?std::error::Error::source(failure), doing, "API request failed");
    }
    answer.refusal
}

/// A `limit` query parameter: an integer from 1 to `max`, or a 400 that
/// says so.
pub(crate) fn limit_param(value: &str, max: u32) -> Result<u32, ApiError> {
    value
        .parse()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| ApiError::bad_request(format!("limit is an integer from 1 to {max}")))
}
