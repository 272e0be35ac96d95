//! `Idempotency-Key` on the content writes: a retried write with the same
//! key, from the same caller, to the same document and route, is answered
//! with the first attempt's answer instead of being applied again.
//!
//! The cache is this node's own (not shared between nodes): a retry that
//! reaches another node is applied there. A `PUT` of content is
//! idempotent by itself (it writes a target, not a change); a `PATCH` or a
//! stream is not, so a client retrying those across nodes routes them to
//! one node. Only successful answers are kept; a concurrent retry waits
//! for the first attempt. Bounded: at most [`MAX_ENTRIES`] keys, each for
//! [`KEY_TTL`], the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// Keys kept at once; past it the oldest is forgotten.
pub const MAX_ENTRIES: usize = 10_000;
/// How long an answer is kept for a retry.
pub const KEY_TTL: Duration = Duration::from_secs(3600);
/// Longest key accepted (the IETF draft's keys are UUIDs; 255 leaves room).
const MAX_KEY_BYTES: usize = 255;
/// The request header.
pub(crate) const HEADER: &str = "idempotency-key";
/// The answer header that says a write was not applied again.
const REPLAYED: &str = "idempotent-replayed";

/// Who asked what: the key, scoped to the caller, document and route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    key: String,
    caller: Arc<str>,
    doc: String,
    route: &'static str,
}

/// A kept answer: a JSON body and its status.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: serde_json::Value,
}

#[derive(Debug)]
struct Entry {
    /// A hash of the request (query and body): the same key with another
    /// request is refused.
    fingerprint: u64,
    created: Instant,
    answer: Arc<OnceCell<Answer>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Scope, Entry>,
    order: VecDeque<(Scope, Instant)>,
}

/// The node's idempotency cache.
#[derive(Debug, Default)]
pub struct IdempotencyCache {
    inner: Mutex<Inner>,
}

/// The request's `Idempotency-Key`, if any (400 if malformed).
pub(crate) fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= MAX_KEY_BYTES
                && key.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key is 1 to {MAX_KEY_BYTES} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// A fingerprint of a request's parts.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

impl IdempotencyCache {
    /// Runs `write` once per key: the first call runs it, and a later one
    /// with the same key (and request) gets its answer, marked
    /// `Idempotent-Replayed: true`. Without a key, just runs it.
    pub(crate) async fn run<F>(
        &self,
        key: Option<String>,
        caller: Arc<str>,
        doc: &str,
        route: &'static str,
        request: u64,
        write: F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<Answer, ApiError>>,
    {
        let Some(key) = key else {
            return write.await.map(respond);
        };
        let scope = Scope {
            key,
            caller,
            doc: doc.to_owned(),
            route,
        };
        let cell = self.cell(scope, request)?;
        let mut ran = false;
        let answer = cell
            .get_or_try_init(|| {
                ran = true;
                write
            })
            .await?
            .clone();
        let mut response = respond(answer);
        if !ran {
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        Ok(response)
    }

    fn cell(&self, scope: Scope, request: u64) -> Result<Arc<OnceCell<Answer>>, ApiError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.evict(now);
        if let Some(entry) = inner.entries.get(&scope) {
            if entry.fingerprint != request {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency key reused",
                    "this Idempotency-Key was used for another request; use a new key",
                ));
            }
            return Ok(entry.answer.clone());
        }
        let answer = Arc::new(OnceCell::new());
        inner.order.push_back((scope.clone(), now));
        inner.entries.insert(
            scope,
            Entry {
                fingerprint: request,
                created: now,
                answer: answer.clone(),
            },
        );
        Ok(answer)
    }
}

impl Inner {
    /// Drops expired keys, and the oldest while over the bound.
    fn evict(&mut self, now: Instant) {
        while let Some((scope, created)) = self.order.front() {
            let expired = now.duration_since(*created) >= KEY_TTL;
            if !expired && self.entries.len() < MAX_ENTRIES {
                break;
            }
            if self
                .entries
                .get(scope)
                .is_some_and(|entry| entry.created == *created)
            {
                self.entries.remove(scope);
            }
            self.order.pop_front();
        }
    }
}

fn respond(answer: Answer) -> Response {
    (answer.status, axum::Json(answer.body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: u64) -> Result<Answer, ApiError> {
        Ok(Answer {
            status: StatusCode::OK,
            body: serde_json::json!({ "n": n }),
        })
    }

    async fn run(cache: &IdempotencyCache, key: &str, request: u64, n: u64) -> Response {
        let caller: Arc<str> = Arc::from("sub");
        match cache
            .run(Some(key.to_owned()), caller, "doc", "put", request, async {
                answer(n)
            })
            .await
        {
            Ok(response) => response,
            Err(refusal) => refusal.into_response(),
        }
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_answer_and_another_request_is_refused() {
        let cache = IdempotencyCache::default();
        let first = run(&cache, "k", 1, 1).await;
        assert!(first.headers().get(REPLAYED).is_none());
        let retry = run(&cache, "k", 1, 2).await;
        assert_eq!(
            retry.headers().get(REPLAYED).map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        let body = axum::body::to_bytes(retry.into_body(), 1024).await.unwrap();
        assert_eq!(
            &body[..],
            br#"{"n":1}"#,
            "the first answer, not a second run"
        );
        assert_eq!(
            run(&cache, "k", 9, 3).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_not_kept_and_the_cache_is_bounded() {
        let cache = IdempotencyCache::default();
        let caller: Arc<str> = Arc::from("sub");
        let failed = cache
            .run(Some("f".into()), caller, "doc", "put", 1, async {
                Err::<Answer, _>(ApiError::bad_request("no"))
            })
            .await;
        assert!(failed.is_err());
        assert!(
            run(&cache, "f", 1, 5)
                .await
                .headers()
                .get(REPLAYED)
                .is_none(),
            "ran again"
        );
        for key in 0..MAX_ENTRIES + 10 {
            run(&cache, &key.to_string(), 1, 0).await;
        }
        assert!(cache.inner.lock().entries.len() <= MAX_ENTRIES);
        assert!(
            run(&cache, "0", 1, 0)
                .await
                .headers()
                .get(REPLAYED)
                .is_none(),
            "the oldest was forgotten"
        );
    }
}
