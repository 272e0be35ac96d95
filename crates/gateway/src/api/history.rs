//! The history routes: versions, restore, undelete, activity (the diff is
//! `api::diff`; and the
//! `?version=` / `?at=` reads of `GET /api/documents/{name}`, which
//! [`point_asked`] parses for the document route).
//!
//! Times are RFC 3339 in UTC (`2026-12-03T16:47:36.123Z`); version ids are
//! decimal strings. Reads need a read grant; taking a version and
//! restoring, a write grant.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::{error, info};
use weft_sync::history::{Version, VersionKind};
use weft_sync::{HistoryError, HistoryPoint};

use super::extract::{DocName, Peer, QueryPairs, caller, limit_param, refusal_for, require};
use crate::auth::Access;
use crate::error::ApiError;
use crate::state::AppState;

/// Versions a listing returns when `limit` is not given.
const DEFAULT_VERSIONS_LIMIT: u32 = 50;
/// Most versions one listing returns.
const MAX_VERSIONS_LIMIT: u32 = 500;
/// Longest version name, in characters.
const MAX_VERSION_NAME_CHARS: usize = 200;

/// A version as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct VersionJson {
    id: String,
    name: Option<String>,
    at: String,
    authors: Vec<String>,
    kind: &'static str,
}

impl From<Version> for VersionJson {
    fn from(version: Version) -> Self {
        Self {
            id: version.id.to_string(),
            name: version.name,
            at: rfc3339(version.at_ms),
            authors: version.authors,
            kind: version.kind.as_str(),
        }
    }
}

#[derive(Serialize)]
struct VersionsPage {
    versions: Vec<VersionJson>,
    /// The `before` of the next page, or null on the last page.
    next: Option<String>,
}

/// `GET /api/documents/{name}/versions?before=&limit=`: newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::Read)?;
    let mut before = None;
    let mut limit = DEFAULT_VERSIONS_LIMIT;
    for (key, value) in &query {
        match key.as_str() {
            "before" => before = Some(version_id(value, "before")?),
            "limit" => {
                limit = limit_param(value, MAX_VERSIONS_LIMIT)?;
            }
            _ => {}
        }
    }
    let versions = state
        .registry
        .versions(&name, before, limit)
        .await
        .map_err(|failure| history_refusal(&failure))?;
    let full = versions.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next = full
        .then(|| versions.last().map(|version| version.id.to_string()))
        .flatten();
    let versions = versions.into_iter().map(VersionJson::from).collect();
    Ok(Json(VersionsPage { versions, next }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewVersionBody {
    name: Option<String>,
}

/// `POST /api/documents/{name}/versions` `{"name":"..."}`: a named version
/// of the document as it is now; 201 and the version.
pub(super) async fn create(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    body: Result<Json<NewVersionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let Json(body) = body.map_err(|rejection| {
        ApiError::bad_request(format!(
            "send a JSON object {{\"name\": \"...\"}}: {}",
            rejection.body_text()
        ))
    })?;
    let version_name = body.name.filter(|name| !name.trim().is_empty());
    if version_name
        .as_ref()
        .is_some_and(|name| name.chars().count() > MAX_VERSION_NAME_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "a version name is at most {MAX_VERSION_NAME_CHARS} characters"
        )));
    }
    let version = state
        .registry
        .create_version(&name, version_name.as_deref(), VersionKind::Named)
        .await
        .map_err(|failure| history_refusal(&failure))?;
    info!(
        doc = name,
        version = version.id,
        "named version taken through the API"
    );
    Ok((StatusCode::CREATED, Json(VersionJson::from(version))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreBody {
    version: Option<String>,
    at: Option<String>,
}

/// `POST /api/documents/{name}/restore` `{"version":"ID"}` or
/// `{"at":"RFC3339"}`: 200 and the version the restore leaves.
pub(super) async fn restore(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    body: Result<Json<RestoreBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let Json(body) = body.map_err(|rejection| {
        ApiError::bad_request(format!(
            "send {{\"version\": \"ID\"}} or {{\"at\": \"RFC 3339 time\"}}: {}",
            rejection.body_text()
        ))
    })?;
    let point = match (body.version, body.at) {
        (Some(version), None) => HistoryPoint::Version(version_id(&version, "version")?),
        (None, Some(at)) => HistoryPoint::At(instant(&at, "at")?),
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of \"version\" and \"at\"",
            ));
        }
    };
    let version = state
        .registry
        .restore(&name, point, caller.author())
        .await
        .map_err(|failure| history_refusal(&failure))?;
    info!(
        doc = name,
        version = version.id,
        "document restored through the API"
    );
    Ok(Json(VersionJson::from(version)).into_response())
}

#[derive(Serialize)]
struct ActivityJson {
    author: Option<String>,
    updates: u64,
    first: String,
    last: String,
}

#[derive(Serialize)]
struct ActivityPage {
    activity: Vec<ActivityJson>,
}

/// `POST /api/documents/{name}/undelete`: a deleted document's content as
/// it was just before its deletion, back as a new edit (write grant);
/// 200 and the version it leaves.
pub(super) async fn undelete(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let version = state
        .registry
        .undelete(&name, caller.author())
        .await
        .map_err(|failure| history_refusal(&failure))?;
    info!(
        doc = name,
        version = version.id,
        "document undeleted through the API"
    );
    Ok(Json(VersionJson::from(version)).into_response())
}

/// `GET /api/documents/{name}/activity?from=&to=` (RFC 3339; default: the
/// whole retention up to now): per author, updates and first and last
/// time.
pub(super) async fn activity(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::Read)?;
    let mut from_ms = 0;
    let mut to_ms = i64::MAX;
    for (key, value) in &query {
        match key.as_str() {
            "from" => from_ms = instant(value, "from")?,
            "to" => to_ms = instant(value, "to")?,
            _ => {}
        }
    }
    if from_ms > to_ms {
        return Err(ApiError::bad_request("from is after to"));
    }
    let activity = state
        .registry
        .activity(&name, from_ms, to_ms)
        .await
        .map_err(|failure| history_refusal(&failure))?;
    let activity = activity
        .into_iter()
        .map(|row| ActivityJson {
            author: row.author,
            updates: row.updates,
            first: rfc3339(row.first_ms),
            last: rfc3339(row.last_ms),
        })
        .collect();
    Ok(Json(ActivityPage { activity }).into_response())
}

/// The history point a document read asks for (`?version=ID` or
/// `?at=RFC3339`), if any.
pub(super) fn point_asked(query: &[(String, String)]) -> Result<Option<HistoryPoint>, ApiError> {
    let mut point = None;
    for (key, value) in query {
        let asked = match key.as_str() {
            "version" => HistoryPoint::Version(version_id(value, "version")?),
            "at" => HistoryPoint::At(instant(value, "at")?),
            _ => continue,
        };
        if point.is_some() {
            return Err(ApiError::bad_request(
                "ask for one point: version or at, once",
            ));
        }
        point = Some(asked);
    }
    Ok(point)
}

pub(super) fn version_id(value: &str, what: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} is a version id (a positive integer, as GET /api/documents/{{name}}/versions lists), not {value:?}"
            ))
        })
}

/// An RFC 3339 time in UTC (`Z`), as milliseconds since the Unix epoch.
pub(super) fn instant(value: &str, what: &str) -> Result<i64, ApiError> {
    let malformed = || {
        ApiError::bad_request(format!(
            "{what} is an RFC 3339 time in UTC such as 2026-12-03T16:47:36Z, not {value:?}"
        ))
    };
    let time = humantime::parse_rfc3339(value).map_err(|_| malformed())?;
    let since_epoch = time.duration_since(UNIX_EPOCH).map_err(|_| malformed())?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| malformed())
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC, to the
/// millisecond.
pub(super) fn rfc3339(at_ms: i64) -> String {
    let millis = u64::try_from(at_ms).unwrap_or(0);
    let time = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The answer to a history failure: the client's fault is a 4xx naming
/// the problem; the server's a 5xx, logged here once.
pub(super) fn history_refusal(failure: &HistoryError) -> ApiError {
    match failure {
        HistoryError::Disabled => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not implemented",
            "this node keeps no history (a cluster node, or --history-retention 0)",
        ),
        HistoryError::UnknownVersion(id) => {
            ApiError::not_found(format!("this document has no version {id}"))
        }
        HistoryError::BeforeRetention => ApiError::bad_request(
            "the instant is before the history retention (--history-retention); nothing older can be read",
        ),
        HistoryError::NothingThen => {
            ApiError::not_found("the document had no content at that point")
        }
        HistoryError::NotDeleted => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the document is not deleted (or was written again since)",
        ),
        HistoryError::Sync(failure) => refusal_for(failure, "read history"),
        HistoryError::Store(_) | HistoryError::Corrupt(_) => {
            error!(error = %failure, error.source = ?std::error::Error::source(failure), "history request failed");
            ApiError::unavailable("service unavailable", "the history store failed; retry")
        }
    }
}

/// Now, for tests of times.
#[cfg(test)]
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
