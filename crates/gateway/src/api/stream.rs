//! `POST /api/documents/{name}/stream?root=ROOT&index=N`: an agent's edits
//! as NDJSON, each line (`{"insert":"text"}` or `{"delete":N}`) committed
//! as a durable update as it arrives, through the same path as a REST
//! write (the committer, the bus), attributed to the caller.
//!
//! For the stream's length the writer is a session of the document, in
//! its awareness as `{"user":{"name":<sub>,"agent":true}}` under the
//! stream's client id (renewed every [`AWARENESS_RENEW`], since editors
//! drop a state not renewed for 30 s); the entry goes when the stream
//! ends, however it ends (the session is dropped, as a closed socket's).
//!
//! A bad line ends the stream with a JSON refusal naming the line; the
//! lines before it stay applied (each was its own commit). Bounded: a line
//! is at most [`MAX_LINE_BYTES`]; a stream silent for [`IDLE_TIMEOUT`] ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};
use weft_content::{StreamEdit, TextStream};
use weft_protocol::{AwarenessUpdate, AwarenessUpdateEntry, Message, SyncMessage};
use weft_sync::{QueuedBytes, Session, SessionOutbox};

use super::content::{content_refusal, root_param};
use super::extract::{DocName, Peer, QueryPairs, caller, refusal_for, require};
use super::idempotency::{Answer, fingerprint, key_of};
use crate::auth::Access;
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

/// Longest line of a stream.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;
/// A stream that sends nothing for this long is ended.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the agent's awareness state is renewed while it streams.
const AWARENESS_RENEW: Duration = Duration::from_secs(15);
/// Frames the stream's session may have queued (it reads none: its
/// drain discards them).
const OUTBOX_FRAMES: usize = 64;

/// The stream route: no body limit (a stream is as long as the agent
/// writes), each line bounded instead.
pub(super) fn stream_route<S>() -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AppState: axum::extract::FromRef<S>,
{
    post(stream)
        .fallback(|| async { method_not_allowed("POST", "this route answers POST") })
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::disable())
}

async fn stream(
    State(state): State<AppState>,
    DocName(name): DocName,
    headers: HeaderMap,
    peer: Peer,
    QueryPairs(query): QueryPairs,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Some(&name), peer).await?;
    require(&caller, &name, Access::ReadWrite)?;
    let root = root_param(&query)?;
    let index = match query.iter().find(|(key, _)| key == "index") {
        None => 0,
        Some((_, value)) => value
            .parse::<u32>()
            .map_err(|_| ApiError::bad_request("index is a character position, from 0"))?,
    };
    let key = key_of(&headers)?;
    let request = fingerprint(&[root.as_bytes(), &index.to_be_bytes()]);
    let author = caller.author();
    let cache = state.idempotency.clone();
    let write = run(&state, &name, &root, index, author.clone(), body);
    cache
        .run(key, author, &name, "stream", request, write)
        .await
}

/// The session a stream writes through, and what empties its outbox.
struct Writer {
    session: Session,
    deleted: CancellationToken,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

async fn join(state: &AppState, name: &str, author: &str) -> Result<Writer, ApiError> {
    let (frames, mut receiver) = weft_sync::outbox_channel(OUTBOX_FRAMES);
    let queued = QueuedBytes::new(state.config.send_queue_bytes);
    let deleted = CancellationToken::new();
    let outbox = SessionOutbox {
        frames,
        queued: queued.clone(),
        overflowed: CancellationToken::new(),
        deleted: deleted.clone(),
        prefix: Bytes::new(),
    };
    let mut session = state
        .registry
        .join(name, outbox)
        .await
        .map_err(|failure| refusal_for(&failure, "join document"))?;
    session.set_author(author);
    // The stream reads nothing the document broadcasts; its frames are
    // dropped as they come, so its outbox never fills.
    let drain = tokio::spawn(async move {
        while let Some(frame) = receiver.recv().await {
            queued.remove(frame.len());
        }
    });
    Ok(Writer {
        session,
        deleted,
        drain,
    })
}

fn presence(client: yrs::ClientID, clock: u32, author: &str) -> AwarenessUpdate {
    let state = json!({"user": {"name": author, "agent": true}}).to_string();
    AwarenessUpdate {
        clients: HashMap::from([(
            client,
            AwarenessUpdateEntry {
                clock,
                json: Arc::from(state),
            },
        )]),
    }
}

/// What a stream did so far.
#[derive(Debug, Default)]
struct Progress {
    /// Lines read, blank ones included (a refusal names its line by this).
    read: u64,
    /// Edits applied (blank lines are none).
    lines: u64,
    updates: u64,
}

impl Progress {
    fn refusal(&self, line: u64, why: &str) -> ApiError {
        ApiError::bad_request(format!(
            "line {line}: {why}; the {} lines before it stay applied",
            self.lines
        ))
    }
}

async fn run(
    state: &AppState,
    name: &str,
    root: &str,
    index: u32,
    author: Arc<str>,
    body: Body,
) -> Result<Answer, ApiError> {
    let current = state
        .registry
        .read(name)
        .await
        .map_err(|failure| refusal_for(&failure, "read document"))?;
    let mut text_stream = TextStream::new(&current.state, root, index)
        .map_err(|failure| content_refusal(&failure))?;
    let writer = join(state, name, &author).await?;
    let client = text_stream.client_id();
    let mut clock = 1;
    writer
        .session
        .apply_awareness(presence(client, clock, &author));
    info!(doc = name, root, session = %writer.session.id(), "agent stream open");
    let mut progress = Progress::default();
    let mut body = body.into_data_stream();
    let mut buffer = BytesMut::new();
    let mut renew = tokio::time::interval(AWARENESS_RENEW);
    renew.reset();
    let mut ended = false;
    // The idle deadline runs from the last bytes, not from the last
    // awareness renewal.
    let mut last_bytes = tokio::time::Instant::now();
    while !ended {
        // Every complete line in the buffer, in order.
        while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line = buffer.split_to(end + 1);
            apply_line(&writer, &mut text_stream, &mut progress, &line[..end]).await?;
        }
        if buffer.len() > MAX_LINE_BYTES {
            return Err(progress.refusal(
                progress.read + 1,
                &format!("a line is at most {MAX_LINE_BYTES} bytes"),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep_until(last_bytes + IDLE_TIMEOUT) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timeout",
                    format!("the stream sent nothing for {} s; the {} lines before stay applied", IDLE_TIMEOUT.as_secs(), progress.lines),
                ));
            }
            chunk = body.next() => match chunk {
                Some(Ok(bytes)) => {
                    last_bytes = tokio::time::Instant::now();
                    buffer.extend_from_slice(&bytes);
                }
                Some(Err(failure)) => {
                    debug!(doc = name, error = %failure, "agent stream body ended early");
                    return Err(ApiError::bad_request(format!(
                        "the body ended early; the {} lines before stay applied",
                        progress.lines
                    )));
                }
                None => ended = true,
            },
            _ = renew.tick() => {
                clock += 1;
                writer.session.apply_awareness(presence(client, clock, &author));
            }
        }
    }
    if !buffer.is_empty() {
        let line = buffer.split();
        apply_line(&writer, &mut text_stream, &mut progress, &line).await?;
    }
    info!(
        doc = name,
        lines = progress.lines,
        updates = progress.updates,
        "agent stream closed"
    );
    // Dropping the writer leaves the document: its awareness entry is
    // removed for everyone at once.
    drop(writer);
    Ok(Answer {
        status: StatusCode::OK,
        body: json!({
            "name": name,
            "root": root,
            "lines": progress.lines,
            "updates": progress.updates,
            "clientId": client.get(),
        }),
    })
}

async fn apply_line(
    writer: &Writer,
    text_stream: &mut TextStream,
    progress: &mut Progress,
    line: &[u8],
) -> Result<(), ApiError> {
    progress.read += 1;
    let number = progress.read;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    if writer.deleted.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "document deleted",
            format!(
                "the document was deleted; the {} lines before stay applied",
                progress.lines
            ),
        ));
    }
    let line = std::str::from_utf8(line).map_err(|_| progress.refusal(number, "not UTF-8"))?;
    let edit = StreamEdit::parse(line).map_err(|why| progress.refusal(number, &why))?;
    // What the stream's copy lacks of the document: a diff, not the
    // whole state, whatever the document's size.
    let known = text_stream.state_vector();
    let frame = writer
        .session
        .answer_sync_step1(&known)
        .map_err(|failure| refusal_for(&failure, "read document"))?;
    let Ok(Message::Sync(SyncMessage::SyncStep2(missing))) = weft_protocol::decode_frame(&frame)
    else {
        error!(
            doc = writer.session.doc_name(),
            "a document's own SyncStep2 did not decode"
        );
        return Err(content_refusal(&weft_content::ContentError::Panicked));
    };
    let update = text_stream
        .apply(&missing, &edit)
        .map_err(|failure| progress.refusal(number, &failure.to_string()))?;
    if let Some(update) = update {
        let pending = writer
            .session
            .submit_update(update)
            .await
            .map_err(|failure| refusal_for(&failure, "apply stream line"))?;
        if let Some(pending) = pending {
            pending.wait().await.map_err(|failure| {
                refusal_for(&weft_sync::SyncError::from(failure), "apply stream line")
            })?;
        }
        progress.updates += 1;
    }
    progress.lines += 1;
    Ok(())
}
