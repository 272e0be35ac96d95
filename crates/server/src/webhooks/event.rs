//! An event's JSON body:
//! `{"id","event","doc","at","authors":[...],"from","to","update"}`, the
//! update being the event's changes merged into one Yjs v1 update, in
//! standard base64 (empty for a deletion). Positions are decimal strings,
//! as the server-sent events' `id:`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::json;

use super::coalesce::Batch;

/// An event ready to send: its id and its body.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) id: String,
    pub(crate) body: Bytes,
}

/// The delivery id: the positions the event covers, and a generation that
/// a replay raises (a replayed event is a new delivery).
pub(crate) fn delivery_id(batch: &Batch, generation: u64) -> String {
    if generation == 0 {
        format!("{}-{}", batch.from, batch.to)
    } else {
        format!("{}-{}-r{generation}", batch.from, batch.to)
    }
}

/// The body of `batch`.
/// Fails only if the log's updates do not merge (each passed the trial
/// apply when it was accepted, so that is not expected).
pub(crate) fn prepare(
    batch: &Batch,
    generation: u64,
    roots: Option<serde_json::Value>,
) -> anyhow::Result<Prepared> {
    let update = merged_update(&batch.updates)?;
    let id = delivery_id(batch, generation);
    let at = batch
        .at_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    let mut body = json!({
        "id": id,
        "event": batch.kind.event_name(),
        "doc": batch.doc,
        "at": humantime::format_rfc3339_millis(at).to_string(),
        "authors": batch.authors,
        "from": batch.from.to_string(),
        "to": batch.to.to_string(),
        "update": STANDARD.encode(&update),
    });
    if let (Some(roots), Some(fields)) = (roots, body.as_object_mut()) {
        fields.insert("roots".to_owned(), roots);
    }
    Ok(Prepared {
        id,
        body: Bytes::from(body.to_string()),
    })
}

fn merged_update(updates: &[Bytes]) -> anyhow::Result<Vec<u8>> {
    match updates {
        [] => Ok(Vec::new()),
        [only] => Ok(only.to_vec()),
        many => yrs::merge_updates_v1(many).context("merge the event's updates"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;
    use weft_sync::changes::{Change, ChangeKind};
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    use super::super::coalesce::{Coalescer, Timing};
    use super::*;

    fn edit(doc: &Doc, text: &str) -> Bytes {
        let root = doc.get_or_insert_text("content");
        let before = doc.transact().state_vector();
        let mut txn = doc.transact_mut();
        let len = root.len(&txn);
        root.insert(&mut txn, len, text);
        drop(txn);
        Bytes::from(doc.transact().encode_diff_v1(&before))
    }

    #[test]
    fn the_update_is_the_changes_merged() {
        let source = Doc::new();
        let mut events = Coalescer::new(Timing {
            debounce: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
        });
        let now = Instant::now();
        for (position, text) in [(7, "hello"), (8, " "), (9, "world")] {
            events.push(
                Change {
                    position,
                    doc: "notes".to_owned(),
                    kind: ChangeKind::Changed,
                    update: edit(&source, text),
                    author: Some("ann".to_owned()),
                    at_ms: Some(1_700_000_000_000),
                },
                now,
            );
        }
        let batch = events.take_ready(now + Duration::from_secs(1), 1).remove(0);
        let prepared = prepare(&batch, 0, None).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&prepared.body).unwrap();
        assert_eq!(body["id"], "7-9");
        assert_eq!(body["event"], "document.changed");
        assert_eq!(body["doc"], "notes");
        assert_eq!(body["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["authors"], json!(["ann"]));
        assert_eq!(
            (body["from"].as_str(), body["to"].as_str()),
            (Some("7"), Some("9"))
        );
        let update = STANDARD.decode(body["update"].as_str().unwrap()).unwrap();
        let fresh = Doc::new();
        fresh
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        let text = fresh.get_or_insert_text("content");
        assert_eq!(text.get_string(&fresh.transact()), "hello world");
        assert!(body.get("roots").is_none());
        assert_eq!(prepare(&batch, 3, None).unwrap().id, "7-9-r3");
        let with_roots = prepare(
            &batch,
            0,
            Some(json!({ "text": { "content": "hello world" } })),
        )
        .unwrap();
        let with_roots: serde_json::Value = serde_json::from_slice(&with_roots.body).unwrap();
        assert_eq!(with_roots["roots"]["text"]["content"], "hello world");
    }
}
