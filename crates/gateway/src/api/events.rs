//! The change feed over HTTP: server-sent events and the webhooks' replay.
//!
//! - `GET /api/documents/{name}/events`: each durable change of the
//!   document as an event whose `id:` is its log position; a reconnecting
//!   client's `Last-Event-ID` (or `?after=`) resumes after it by reading the
//!   log, then the stream goes on live. Without either it starts at the
//!   log's end. Read grant.
//! - `GET /api/events?docs=GLOB`: the same for every document the glob
//!   matches and the caller may read.
//! - `POST /api/webhooks/replay` (admin): `{"from":"RFC3339"}` delivers
//!   every change since then to every webhook again.
//!
//! An embedded node serves them all. A cluster node serves the event
//! streams from its topic's feed (the rows `weft persist` stored, numbered
//! in the order stored: `id:` is that number) and stores a replay for the
//! `weft persist` worker that delivers the webhooks to apply.
//! A stream ends
//! when the node drains or the caller's token expires (the client
//! reconnects and resumes).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use weft_sync::LogSeq;
use weft_sync::changes::{Change, ChangeFeed};

use super::extract::{DocName, Peer, QueryPairs, caller, require};
use super::history::{instant, rfc3339};
use crate::auth::{Access, ApiCaller, DocGrant};
use crate::error::ApiError;
use crate::state::AppState;

/// Changes read from the log per query while a stream catches up.
const CATCH_UP_PAGE: u32 = 200;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/documents/{name}/events`.
pub(super) async fn document(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::Read)?;
    let feed = feed_of(&state)?;
    let after = resume_position(&headers, &query, feed).await?;
    let expires = expiry_of(&caller);
    Ok(stream(&state, feed, after, Filter::Document(name), expires))
}

/// `GET /api/events?docs=GLOB`.
pub(super) async fn many(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, None, peer).await?;
    let glob = query
        .iter()
        .find(|(key, _)| key == "docs")
        .map_or("**", |(_, value)| value.as_str());
    let grant = DocGrant::new(glob, Access::Read)
        .map_err(|refusal| ApiError::bad_request(format!("docs is a document glob: {refusal}")))?;
    let feed = feed_of(&state)?;
    let after = resume_position(&headers, &query, feed).await?;
    let expires = expiry_of(&caller);
    Ok(stream(
        &state,
        feed,
        after,
        Filter::Glob { grant, caller },
        expires,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    from: String,
}

/// `POST /api/webhooks/replay` (admin).
pub(super) async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !caller(&state, &headers, None, peer).await?.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "replaying webhooks takes a token with admin: true",
        ));
    }
    let Json(body) = body.map_err(|rejection| {
        ApiError::bad_request(format!(
            "the body is JSON {{\"from\":\"RFC3339\"}}: {}",
            rejection.body_text()
        ))
    })?;
    let from_ms = instant(&body.from, "from")?;
    let feed = feed_of(&state)?;
    // A cluster node's replay stores a request that the worker delivering
    // the webhooks applies; an embedded node's rewinds its own pipelines.
    let Some(webhooks) = feed.replay() else {
        return Err(ApiError::not_found(
            "no webhooks are configured (--webhook-url)",
        ));
    };
    let position = webhooks.replay_from(from_ms).await.map_err(|failure| {
        error!(error = %failure, error.source = ?std::error::Error::source(&failure), "webhook replay failed");
        ApiError::unavailable("service unavailable", "the store failed; retry")
    })?;
    info!(from = %body.from, position, "webhooks replayed");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "from": rfc3339(from_ms), "after": position.to_string() })),
    )
        .into_response())
}

/// When the caller's token expires: the stream ends then (the client
/// reconnects with a fresh token and resumes).
fn expiry_of(caller: &ApiCaller) -> Option<tokio::time::Instant> {
    let ApiCaller::Token(claims) = caller else {
        return None;
    };
    let left = claims.exp.saturating_sub(crate::live::unix_now());
    Some(tokio::time::Instant::now() + Duration::from_secs(left))
}

fn feed_of(state: &AppState) -> Result<&ChangeFeed, ApiError> {
    state.registry.change_feed().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not implemented",
            "this node serves no change feed",
        )
    })
}

/// `Last-Event-ID`, else `?after=`, else the log's end now.
async fn resume_position(
    headers: &HeaderMap,
    query: &[(String, String)],
    feed: &ChangeFeed,
) -> Result<LogSeq, ApiError> {
    let given = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("invalid").to_owned())
        .or_else(|| {
            query
                .iter()
                .find(|(key, _)| key == "after")
                .map(|(_, value)| value.clone())
        });
    if let Some(given) = given {
        return given
            .trim()
            .parse::<LogSeq>()
            .ok()
            .filter(|position| *position >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Last-Event-ID (or after) is an event id this feed sent (a log position), not {given:?}"
                ))
            });
    }
    feed.log().log_end().await.map_err(|failure| {
        error!(error = %failure, error.source = ?std::error::Error::source(&failure), "change feed read failed");
        ApiError::unavailable("service unavailable", "the store failed; retry")
    })
}

/// Which changes a stream sends.
enum Filter {
    Document(String),
    Glob { grant: DocGrant, caller: ApiCaller },
}

impl Filter {
    fn wants(&self, doc: &str) -> bool {
        match self {
            Self::Document(name) => name == doc,
            Self::Glob { grant, caller } => grant.matches(doc) && caller.access_to(doc).is_some(),
        }
    }

    fn only_doc(&self) -> Option<&str> {
        match self {
            Self::Document(name) => Some(name),
            Self::Glob { .. } => None,
        }
    }
}

/// A stream's position in the log.
struct Tail {
    feed: ChangeFeed,
    end: watch::Receiver<LogSeq>,
    cursor: LogSeq,
    filter: Filter,
    read: VecDeque<Change>,
    draining: CancellationToken,
    /// The token's expiry, if any.
    expires: Option<tokio::time::Instant>,
}

fn stream(
    state: &AppState,
    feed: &ChangeFeed,
    after: LogSeq,
    filter: Filter,
    expires: Option<tokio::time::Instant>,
) -> Response {
    let tail = Tail {
        feed: feed.clone(),
        end: feed.end(),
        cursor: after,
        filter,
        read: VecDeque::new(),
        draining: state.lifecycle.sessions_stop().clone(),
        expires,
    };
    Sse::new(events(tail))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn events(tail: Tail) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(tail, |mut tail| async move {
        let change = tail.next().await?;
        Some((Ok(event_of(&change)), tail))
    })
}

impl Tail {
    /// The next change the stream wants; `None` ends the stream (the node
    /// drains, or the store failed: the client resumes).
    async fn next(&mut self) -> Option<Change> {
        loop {
            while let Some(change) = self.read.pop_front() {
                if self.filter.wants(&change.doc) {
                    return Some(change);
                }
            }
            let end = *self.end.borrow_and_update();
            if end > self.cursor {
                let doc = self.filter.only_doc();
                let page = match self
                    .feed
                    .log()
                    .changes_after(self.cursor, doc, CATCH_UP_PAGE)
                    .await
                {
                    Ok(page) => page,
                    Err(failure) => {
                        error!(error = %failure, error.source = ?std::error::Error::source(&failure), "change feed read failed");
                        return None;
                    }
                };
                let full = page.len() >= CATCH_UP_PAGE as usize;
                if let Some(last) = page.last() {
                    self.cursor = last.position;
                }
                // Every change up to `end` was committed before `end` was
                // read: a short page has them all.
                if !full {
                    self.cursor = self.cursor.max(end);
                }
                self.read.extend(page);
                continue;
            }
            let expires = self.expires;
            tokio::select! {
                () = self.draining.cancelled() => return None,
                () = sleep_until_or_forever(expires) => return None,
                changed = self.end.changed() => changed.ok()?,
            }
        }
    }
}

async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn event_of(change: &Change) -> Event {
    let data = json!({
        "event": change.kind.event_name(),
        "doc": change.doc,
        "position": change.position.to_string(),
        "at": change.at_ms.map(rfc3339),
        "author": change.author,
        "update": STANDARD.encode(&change.update),
    });
    Event::default()
        .id(change.position.to_string())
        .event(change.kind.event_name())
        .data(data.to_string())
}
