//! Scenario 6's clients: one editor's life through the storm (its edit,
//! the wait for its document's every edit, the kill, the reconnects with
//! its replica) and the checks of an edits array (every edit exactly once).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::sync::{mpsc, watch};
use weft_protocol::SyncMessage;
use yrs::{Array, Doc, Out, Transact};

use crate::client::{Client, Endpoint};

/// The root array every client of a document appends its edit to (one
/// array shared by all, so a duplicated edit would show as a second entry).
pub(crate) const EDITS_ARRAY: &str = "storm";
/// How long the edits may take to reach every client before the kill.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);
/// One reconnect attempt: connect, upgrade, the server's SyncStep2.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect attempts per client, and all of them together from the kill.
const MAX_ATTEMPTS: u32 = 20;
const RECONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// Backoff between failed attempts: doubling from the first, capped (the
/// first attempt is immediate, as a client whose socket just closed would).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Client `client`'s unique edit of document `doc`.
pub(crate) fn edit_text(doc: usize, client: usize) -> String {
    format!("doc{doc}-client{client}")
}

/// The strings in `doc`'s edits array, in document order.
pub(crate) fn edits_of(doc: &Doc) -> Vec<String> {
    let array = doc.get_or_insert_array(EDITS_ARRAY);
    let txn = doc.transact();
    array
        .iter(&txn)
        .map(|value| match value {
            Out::Any(yrs::Any::String(text)) => text.to_string(),
            other => format!("<not a string: {other:?}>"),
        })
        .collect()
}

/// Whether `found` holds every one of `expected` (at least once).
pub(crate) fn holds_all(found: &[String], expected: &[String]) -> bool {
    expected.iter().all(|edit| found.contains(edit))
}

/// Why `found` is not `expected` with each edit exactly once: the missing,
/// duplicated and unexpected entries; `None` if it is.
pub(crate) fn edit_mismatch(expected: &[String], found: &[String]) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for edit in found {
        *counts.entry(edit.as_str()).or_default() += 1;
    }
    let missing: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|edit| !counts.contains_key(edit))
        .collect();
    let duplicated: Vec<String> = counts
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(edit, count)| format!("{edit} x{count}"))
        .collect();
    let unexpected: Vec<&str> = counts
        .keys()
        .copied()
        .filter(|edit| !expected.iter().any(|wanted| wanted == edit))
        .collect();
    if missing.is_empty() && duplicated.is_empty() && unexpected.is_empty() {
        return None;
    }
    Some(format!(
        "missing {missing:?}, duplicated {duplicated:?}, unexpected {unexpected:?}"
    ))
}

/// What one client saw.
#[derive(Debug)]
pub(crate) struct Resynced {
    /// From the kill to re-synced.
    pub(crate) after: Duration,
    /// Connection attempts it took (1: the first).
    pub(crate) attempts: u32,
}

/// One client's document and its part of the storm.
#[derive(Debug)]
pub(crate) struct Editor {
    pub(crate) client: Client,
    pub(crate) own_edit: String,
    /// Every edit of its document.
    pub(crate) expected: Arc<[String]>,
    pub(crate) source: IpAddr,
    /// Where it reconnects.
    pub(crate) target: Endpoint,
}

/// The signals the driver gives every client.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// The kill's instant, set just before the kill.
    pub(crate) killed: watch::Receiver<Option<Instant>>,
    /// Close and report the replica's edits.
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) ready: mpsc::Sender<()>,
    pub(crate) resynced: mpsc::Sender<Resynced>,
}

impl Editor {
    /// The whole life of one client; returns its edits array at the end.
    pub(crate) async fn run(mut self, mut signals: Signals) -> anyhow::Result<Vec<String>> {
        let update = {
            let array = self.client.doc.get_or_insert_array(EDITS_ARRAY);
            let mut txn = self.client.doc.transact_mut();
            array.push_back(&mut txn, self.own_edit.clone());
            txn.encode_update_v1()
        };
        let frame = SyncMessage::Update(update).encode_frame();
        self.client.send_yjs(&frame).await?;
        tokio::time::timeout(VISIBLE_TIMEOUT, async {
            while !holds_all(&edits_of(&self.client.doc), &self.expected) {
                let frame = self.client.next_frame().await?;
                self.client.handle_frame(&frame).await?;
            }
            anyhow::Ok(())
        })
        .await
        .with_context(|| format!("not every edit arrived within {VISIBLE_TIMEOUT:?}"))??;
        signals
            .ready
            .send(())
            .await
            .context("the driver stopped before the kill")?;

        // Serve the session (answering what the server sends) until the
        // kill closes it.
        loop {
            let Ok(frame) = self.client.next_frame().await else {
                break;
            };
            self.client.handle_frame(&frame).await?;
        }
        let killed_at =
            (*signals.killed.borrow()).context("the server closed the session before the kill")?;

        let (mut client, attempts) = self.reconnect(killed_at).await?;
        let resynced_after = killed_at.elapsed();
        let found = edits_of(&client.doc);
        ensure!(
            holds_all(&found, &self.expected),
            "re-synced without every edit: {}",
            edit_mismatch(&self.expected, &found).unwrap_or_default()
        );
        signals
            .resynced
            .send(Resynced {
                after: resynced_after,
                attempts,
            })
            .await
            .context("the driver stopped during the storm")?;

        loop {
            tokio::select! {
                changed = signals.stop.changed() => {
                    let _driver_gone = changed;
                    break;
                }
                frame = client.next_frame() => {
                    let frame = frame.context("the new server closed a re-synced session")?;
                    client.handle_frame(&frame).await?;
                }
            }
        }
        let found = edits_of(&client.doc);
        client.close().await;
        Ok(found)
    }

    /// Connects to the target with the replica, bounded in attempts and
    /// time; returns the synced client and the attempts it took.
    async fn reconnect(&self, killed_at: Instant) -> anyhow::Result<(Client, u32)> {
        let deadline = killed_at + RECONNECT_DEADLINE;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = Client::connect_with_doc(
                &self.target,
                &self.client.doc_name,
                Some(self.source),
                ATTEMPT_TIMEOUT.min(left),
                self.client.doc.clone(),
            )
            .await;
            let error = match outcome {
                Ok(client) => return Ok((client, attempt)),
                Err(error) => error,
            };
            if attempt >= MAX_ATTEMPTS || Instant::now() + backoff >= deadline {
                return Err(error.context(format!(
                    "no re-sync with {} after {attempt} attempts in {:?}",
                    self.target.addr,
                    killed_at.elapsed()
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn exactly_once_passes_in_any_order() {
        let expected = strings(&["a", "b", "c"]);
        assert_eq!(edit_mismatch(&expected, &strings(&["c", "a", "b"])), None);
    }

    #[test]
    fn duplicated_missing_and_unexpected_edits_are_named() {
        let expected = strings(&["a", "b", "c"]);
        let mismatch =
            edit_mismatch(&expected, &strings(&["a", "a", "c", "z"])).expect("not exactly once");
        assert!(mismatch.contains("missing [\"b\"]"), "{mismatch}");
        assert!(mismatch.contains("a x2"), "{mismatch}");
        assert!(mismatch.contains("unexpected [\"z\"]"), "{mismatch}");
        assert!(holds_all(&strings(&["a", "a", "b", "c"]), &expected));
        assert!(!holds_all(&strings(&["a", "c"]), &expected));
    }

    #[test]
    fn edits_read_back_from_a_replica() {
        let doc = Doc::new();
        let array = doc.get_or_insert_array(EDITS_ARRAY);
        {
            let mut txn = doc.transact_mut();
            array.push_back(&mut txn, edit_text(0, 0));
            array.push_back(&mut txn, edit_text(0, 1));
        }
        assert_eq!(edits_of(&doc), vec![edit_text(0, 0), edit_text(0, 1)]);
        assert_ne!(edit_text(1, 0), edit_text(0, 1));
    }
}
