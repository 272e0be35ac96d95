//! The SQL text both dialects share (`$n` placeholders: PostgreSQL's, and
//! numbered parameters in SQLite).
//!
//! The schema is the same in both (see `migrations/`): `weft_updates` (the
//! embedded update log), `weft_snapshots` (at most one per document,
//! covering the log up to `covers_seq`) and `weft_topic_snapshots` (the
//! persistence worker's, per topic and document). A deleted document is the
//! empty document's snapshot carrying a tombstone (`tombstone_sv`,
//! `deleted_position`, `deleted_at`; all `NULL`: never deleted).

/// A document's snapshot (`$1`: the document).
pub(crate) const READ_SNAPSHOT: &str =
    "SELECT state, state_vector, covers_seq, tombstone_sv, deleted_position, deleted_at
     FROM weft_snapshots WHERE doc = $1";

/// A document's snapshot if it covers more than a position (`$1`: the
/// document, `$2` the position): a replay from there needs it.
pub(crate) const READ_SNAPSHOT_AFTER: &str =
    "SELECT state, state_vector, covers_seq, tombstone_sv, deleted_position, deleted_at
     FROM weft_snapshots WHERE doc = $1 AND covers_seq > $2";

/// A document's logged updates after a position (`$1` document, `$2` seq).
pub(crate) const READ_LOG: &str =
    "SELECT seq, data FROM weft_updates WHERE doc = $1 AND seq > $2 ORDER BY seq";

/// Appends one update and returns its sequence number (`$1` document, `$2`
/// update). The sequence never hands a number out twice, even once its row
/// is gone (SQLite `AUTOINCREMENT`, PostgreSQL `BIGSERIAL`).
pub(crate) const APPEND_ONE: &str =
    "INSERT INTO weft_updates (doc, data) VALUES ($1, $2) RETURNING seq";

/// Appends `rows` updates in one statement (each row's document, bytes,
/// author, time and node, in order). SQLite's form of the batch append: the sequence numbers are
/// read from the last inserted row id.
///
/// The parameters are anonymous (`?`), bound in order. With numbered ones
/// (`$1`, `$2`, ...) sqlx asks SQLite the name of every parameter when it
/// binds them, and SQLite finds a name by scanning its list of names: a
/// cost quadratic in the statement's parameters (1.4% of a trace replay's
/// instructions with 512 of them).
pub(crate) fn append_many(rows: usize) -> String {
    let mut statement =
        String::from("INSERT INTO weft_updates (doc, data, author, at_ms, node) VALUES ");
    for row in 0..rows {
        if row > 0 {
            statement.push_str(", ");
        }
        statement.push_str("(?, ?, ?, ?, ?)");
    }
    statement
}

/// [`append_many`] of one update.
pub(crate) const APPEND_ONE_ROW: &str =
    "INSERT INTO weft_updates (doc, data, author, at_ms, node) VALUES (?, ?, ?, ?, ?)";

/// Drops a document's log up to a position (`$1` document, `$2` seq).
pub(crate) const PRUNE_LOG: &str = "DELETE FROM weft_updates WHERE doc = $1 AND seq <= $2";

/// Writes a document's snapshot unless one covering the same or a later
/// position is stored: the `WHERE` clause is the fence. `$1` document, `$2`
/// state, `$3` state vector, `$4` covers, `$5` now, `$6..$8` tombstone.
pub(crate) const WRITE_SNAPSHOT: &str =
    "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at,
         tombstone_sv, deleted_position, deleted_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (doc) DO UPDATE SET
         state = excluded.state,
         state_vector = excluded.state_vector,
         covers_seq = excluded.covers_seq,
         updated_at = excluded.updated_at,
         tombstone_sv = excluded.tombstone_sv,
         deleted_position = excluded.deleted_position,
         deleted_at = excluded.deleted_at
     WHERE excluded.covers_seq > weft_snapshots.covers_seq";

/// Writes a deletion: the empty document covering, and deleted at, the
/// newest position there is, so unconditionally. `$1` document, `$2` empty
/// state, `$3` empty state vector, `$4` the position, `$5` now, `$6` the
/// deleted state vector, `$7` when.
pub(crate) const WRITE_TOMBSTONE: &str =
    "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at,
         tombstone_sv, deleted_position, deleted_at)
     VALUES ($1, $2, $3, $4, $5, $6, $4, $7)
     ON CONFLICT (doc) DO UPDATE SET
         state = excluded.state,
         state_vector = excluded.state_vector,
         covers_seq = excluded.covers_seq,
         updated_at = excluded.updated_at,
         tombstone_sv = excluded.tombstone_sv,
         deleted_position = excluded.deleted_position,
         deleted_at = excluded.deleted_at";

/// A topic snapshot (`$1` topic, `$2` document).
pub(crate) const READ_TOPIC_SNAPSHOT: &str =
    "SELECT state, state_vector, partition_id, covers_offset,
            tombstone_sv, deleted_position, deleted_at
     FROM weft_topic_snapshots WHERE topic = $1 AND doc = $2";

/// Writes a topic snapshot unless one of the same partition covering the
/// same or a later offset is stored (see `SnapshotStore::save_snapshot`);
/// the row lock of the upsert serialises two writers of one document.
/// `$1` topic, `$2` document, `$3` state, `$4` state vector, `$5`
/// partition, `$6` covers, `$7` now, `$8..$10` tombstone.
pub(crate) const WRITE_TOPIC_SNAPSHOT: &str = "INSERT INTO weft_topic_snapshots
         (topic, doc, state, state_vector, partition_id, covers_offset, updated_at,
          tombstone_sv, deleted_position, deleted_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (topic, doc) DO UPDATE SET
         state = excluded.state,
         state_vector = excluded.state_vector,
         partition_id = excluded.partition_id,
         covers_offset = excluded.covers_offset,
         updated_at = excluded.updated_at,
         tombstone_sv = excluded.tombstone_sv,
         deleted_position = excluded.deleted_position,
         deleted_at = excluded.deleted_at
     WHERE excluded.partition_id <> weft_topic_snapshots.partition_id
        OR excluded.covers_offset > weft_topic_snapshots.covers_offset";

/// A trivial statement: the database answers.
pub(crate) const CHECK: &str = "SELECT 1";

/// The embedded documents after `$1`, `$2` at most, with their snapshot's
/// size and time; `$order` is what follows `doc` to compare it byte-wise.
/// A document whose snapshot is its deletion is listed only once something
/// was logged after it.
macro_rules! list_documents {
    ($order:literal) => {
        concat!(
            "SELECT doc, MAX(snapshot_bytes) AS snapshot_bytes, MAX(snapshot_at) AS snapshot_at
             FROM (
                 SELECT doc, CAST(length(state) AS BIGINT) AS snapshot_bytes, updated_at AS snapshot_at
                 FROM weft_snapshots
                 WHERE deleted_position IS NULL OR covers_seq > deleted_position
                 UNION ALL
                 SELECT DISTINCT doc, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM weft_updates
                 WHERE seq > COALESCE((SELECT deleted_position FROM weft_snapshots
                                       WHERE weft_snapshots.doc = weft_updates.doc), 0)
             ) AS documents
             WHERE doc",
            $order,
            " > $1
             GROUP BY doc
             ORDER BY doc",
            $order,
            "
             LIMIT $2"
        )
    };
}

/// The topic `$1`'s documents after `$2`, `$3` at most; `$order` as in
/// [`list_documents!`].
macro_rules! list_topic_documents {
    ($order:literal) => {
        concat!(
            "SELECT doc, CAST(length(state) AS BIGINT) AS snapshot_bytes, updated_at AS snapshot_at
             FROM weft_topic_snapshots
             WHERE topic = $1 AND doc",
            $order,
            " > $2
               AND (deleted_position IS NULL OR covers_offset > deleted_position)
             ORDER BY doc",
            $order,
            "
             LIMIT $3"
        )
    };
}

/// The documents with embedded history (checkpoints, or a snapshot and
/// so possibly a log) after `$1`, `$2` at most; `$order` as in
/// [`list_documents!`]. History compaction walks them.
macro_rules! history_documents {
    ($order:literal) => {
        concat!(
            "SELECT doc FROM (
                 SELECT doc FROM weft_checkpoints UNION SELECT doc FROM weft_snapshots
             ) AS documents
             WHERE doc",
            $order,
            " > $1 ORDER BY doc",
            $order,
            " LIMIT $2"
        )
    };
}

/// The documents with checkpoints or the topic `$3`'s per-edit rows after
/// `$1`, `$2` at most; `$order` as in [`list_documents!`]. History
/// compaction walks them for a topic's log.
macro_rules! checkpoint_documents {
    ($order:literal) => {
        concat!(
            "SELECT doc FROM (
                 SELECT doc FROM weft_checkpoints
                 UNION SELECT doc FROM weft_topic_updates WHERE topic = $3
             ) AS documents
             WHERE doc",
            $order,
            " > $1 ORDER BY doc",
            $order,
            " LIMIT $2"
        )
    };
}

pub(crate) use {checkpoint_documents, history_documents, list_documents, list_topic_documents};

/// Stores a revocation record once (`$1` id, `$2` record, `$3` expiry in
/// Unix seconds).
pub(crate) const SAVE_REVOCATION: &str =
    "INSERT INTO weft_revocations (id, record, expires_at) VALUES ($1, $2, $3)
     ON CONFLICT (id) DO NOTHING";

/// Drops the revocations that ended (`$1`: now, Unix seconds).
pub(crate) const DROP_ENDED_REVOCATIONS: &str =
    "DELETE FROM weft_revocations WHERE expires_at <= $1";

/// Every stored revocation record, in the order stored.
pub(crate) const READ_REVOCATIONS: &str = "SELECT record FROM weft_revocations ORDER BY stored";
