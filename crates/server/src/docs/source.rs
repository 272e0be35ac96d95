//! Reading documents out of a store: the names of a log's documents (with
//! a `--docs` glob) and one document's current state.

use anyhow::Context;
use weft_sync::{EMBEDDED_LOG, EmbeddedLog};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::format::{DocEntry, LinePosition};

/// Names read per `list_documents` call.
const LIST_PAGE: u32 = 1000;

/// The documents of `log` whose name matches `glob` (all without one),
/// by name, after `after`.
pub async fn names(
    store: &dyn EmbeddedLog,
    log: &str,
    glob: Option<&str>,
    after: &str,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let page = store
            .list_documents(log, &cursor, LIST_PAGE)
            .await
            .context("list documents")?;
        let Some(last) = page.last() else {
            return Ok(names);
        };
        cursor = last.name.clone();
        let full = page.len() == LIST_PAGE as usize;
        for listed in page {
            if glob.is_none_or(|pattern| glob_matches(pattern, &listed.name)) {
                names.push(listed.name);
            }
        }
        if !full {
            return Ok(names);
        }
    }
}

/// A document's current state in `log`: the embedded log's snapshot and
/// the updates after it folded; a topic's stored snapshot. `None` for a
/// document with nothing stored (deleted since it was listed).
pub async fn current(
    store: &dyn EmbeddedLog,
    log: &str,
    doc: &str,
) -> anyhow::Result<Option<DocEntry>> {
    if log == EMBEDDED_LOG {
        let stored = store.load(doc).await.context("load document")?;
        let mut updates = Vec::with_capacity(stored.updates.len() + 1);
        let mut position = None;
        if let Some(snapshot) = &stored.snapshot {
            updates.push(snapshot.state.as_slice());
            position = Some(snapshot.covers);
        }
        for logged in &stored.updates {
            updates.push(logged.update.as_slice());
            position = Some(weft_sync::Position::embedded(logged.seq));
        }
        if updates.is_empty() {
            return Ok(None);
        }
        let (state, state_vector) =
            fold(&updates).with_context(|| format!("fold document {doc:?}"))?;
        return Ok(Some(DocEntry {
            doc: doc.to_owned(),
            state,
            state_vector,
            log: log.to_owned(),
            position: position.map(|covers| LinePosition {
                partition: covers.partition,
                offset: covers.offset,
            }),
        }));
    }
    let Some(snapshot) = store
        .load_snapshot(log, doc)
        .await
        .context("load snapshot")?
    else {
        return Ok(None);
    };
    Ok(Some(DocEntry {
        doc: doc.to_owned(),
        state: snapshot.state,
        state_vector: snapshot.state_vector,
        log: log.to_owned(),
        position: Some(LinePosition {
            partition: snapshot.covers.partition,
            offset: snapshot.covers.offset,
        }),
    }))
}

/// Folds Yjs v1 updates into one state update and its state vector.
pub fn fold(updates: &[&[u8]]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    for update in updates {
        let decoded = Update::decode_v1(update).context("decode update")?;
        txn.apply_update(decoded).context("apply update")?;
    }
    let state = txn.encode_state_as_update_v1(&StateVector::default());
    let state_vector = txn.state_vector().encode_v1();
    Ok((state, state_vector))
}

/// Shell-style match: `*` any run of characters, `?` one character,
/// everything else itself. Linear in the name (no backtracking blow-up).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == '*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_matches("*", "anything/at all"));
        assert!(glob_matches("team-*", "team-a"));
        assert!(!glob_matches("team-*", "other"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("*b*d", "abcd"));
        assert!(!glob_matches("*b*d", "abce"));
        assert!(glob_matches("exact", "exact"));
    }
}
