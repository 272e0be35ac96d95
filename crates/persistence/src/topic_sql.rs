//! The SQL of [`TopicHistory`](crate::TopicHistory), shared by both
//! dialects: a cluster's per-edit rows (`weft_topic_updates`), versions and
//! checkpoints.

/// Rows per `INSERT` of `EditLog::append_edits` (8 parameters each, well
/// under SQLite's 32,766 and PostgreSQL's 65,535).
pub(crate) const EDITS_PER_INSERT: usize = 200;

/// The topic `$1`'s document `$2`: who wrote its records after `$3` up to
/// `$4`, in order of their first record.
pub(crate) const AUTHORS_BETWEEN: &str = "SELECT author FROM weft_topic_updates
     WHERE topic = $1 AND doc = $2 AND seq > $3 AND seq <= $4 AND author IS NOT NULL
     GROUP BY author ORDER BY MIN(seq)";

/// The newest record of the topic `$1`'s document `$2` stored so far.
pub(crate) const STORED_UPTO: &str =
    "SELECT MAX(seq) AS seq FROM weft_topic_updates WHERE topic = $1 AND doc = $2";

/// The newest version of a document (`$1`).
pub(crate) const LATEST_VERSION_COVERS: &str =
    "SELECT covers_seq FROM weft_versions WHERE doc = $1 ORDER BY id DESC LIMIT 1";

/// The position the version before id `$2` of document `$1` covers.
pub(crate) const PREVIOUS_VERSION_COVERS: &str =
    "SELECT covers_seq FROM weft_versions WHERE doc = $1 AND id < $2 ORDER BY id DESC LIMIT 1";

/// Stores a checkpoint unless one at that position is stored.
pub(crate) const INSERT_CHECKPOINT: &str =
    "INSERT INTO weft_checkpoints (doc, covers_seq, state, at_ms) VALUES ($1, $2, $3, $4)
     ON CONFLICT (doc, covers_seq) DO NOTHING";

/// Stores a version (`$7`: 1 if its authors are not all stored yet).
pub(crate) const INSERT_VERSION: &str =
    "INSERT INTO weft_versions (doc, name, kind, at_ms, covers_seq, authors, authors_pending)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

/// Completes a version's authors.
pub(crate) const COMPLETE_AUTHORS: &str =
    "UPDATE weft_versions SET authors = $1, authors_pending = 0 WHERE id = $2";

pub(crate) const VERSION_COLUMNS: &str =
    "id, name, kind, at_ms, covers_seq, authors, authors_pending";

/// The topic `$1`'s document `$2`: its newest record accepted by `$3`
/// (deletions, which are empty, left out).
pub(crate) const POSITION_AT: &str = "SELECT MAX(seq) AS seq FROM weft_topic_updates
     WHERE topic = $1 AND doc = $2 AND (at_ms IS NULL OR at_ms <= $3) AND length(data) > 0";

/// The document `$1`'s newest checkpoint taken by `$2`.
pub(crate) const CHECKPOINT_POSITION_AT: &str =
    "SELECT MAX(covers_seq) AS seq FROM weft_checkpoints
     WHERE doc = $1 AND at_ms <= $2";

/// The topic `$1`'s document `$2`: its newest update before `$3`.
pub(crate) const POSITION_BEFORE: &str = "SELECT MAX(seq) AS seq FROM weft_topic_updates
     WHERE topic = $1 AND doc = $2 AND seq < $3 AND length(data) > 0";

/// The document `$1`'s newest checkpoint before position `$2`.
pub(crate) const CHECKPOINT_POSITION_BEFORE: &str =
    "SELECT MAX(covers_seq) AS seq FROM weft_checkpoints
     WHERE doc = $1 AND covers_seq < $2";

/// The document `$1`'s nearest checkpoint at or before `$2`.
pub(crate) const CHECKPOINT_BEFORE: &str = "SELECT covers_seq, state FROM weft_checkpoints
     WHERE doc = $1 AND covers_seq <= $2 ORDER BY covers_seq DESC LIMIT 1";

/// The topic `$1`'s document `$2`: its updates after `$3` up to `$4`.
pub(crate) const UPDATES_BETWEEN: &str = "SELECT data FROM weft_topic_updates
     WHERE topic = $1 AND doc = $2 AND seq > $3 AND seq <= $4 AND length(data) > 0
     ORDER BY seq";

/// The document's attributed updates in a range of positions.
pub(crate) const ATTRIBUTED_BETWEEN: &str = "SELECT author, data FROM weft_topic_updates
     WHERE topic = $1 AND doc = $2 AND seq > $3 AND seq <= $4 AND length(data) > 0 ORDER BY seq";

/// Per author, the topic `$1`'s document `$2`: records accepted from `$3`
/// to `$4`.
pub(crate) const ACTIVITY: &str = "SELECT author, COUNT(*) AS updates, MIN(at_ms) AS first_ms,
            MAX(at_ms) AS last_ms
     FROM weft_topic_updates WHERE topic = $1 AND doc = $2 AND at_ms >= $3 AND at_ms <= $4
     AND length(data) > 0
     GROUP BY author ORDER BY MIN(at_ms)";

/// Purging: the topic's rows, checkpoints and versions of a document.
pub(crate) const PURGE_EDITS: &str = "DELETE FROM weft_topic_updates WHERE topic = $1 AND doc = $2";
pub(crate) const PURGE_CHECKPOINTS: &str = "DELETE FROM weft_checkpoints WHERE doc = $1";
pub(crate) const PURGE_VERSIONS: &str = "DELETE FROM weft_versions WHERE doc = $1";

/// Takes `$2` numbers of the topic `$1`'s change feed; returns the last.
/// The counter row stays locked until the transaction ends, so feed
/// numbers commit in order (see `migrations/postgres/0007_topic_feed.sql`).
pub(crate) const TAKE_FEED_SEQS: &str = "INSERT INTO weft_topic_feed (topic, last_seq)
     VALUES ($1, $2) ON CONFLICT (topic) DO UPDATE SET last_seq = weft_topic_feed.last_seq + $2
     RETURNING last_seq";

/// The `INSERT` of `rows` edits.
pub(crate) fn insert_edits_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO weft_topic_updates (topic, doc, seq, data, author, at_ms, node, feed_seq) VALUES ",
    );
    for row in 0..rows {
        let first = row * 8;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 1..=8 {
            if column > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(first + column).to_string());
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (topic, doc, seq) DO NOTHING");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_numbers_every_parameter_once() {
        let sql = insert_edits_sql(2);
        assert!(
            sql.contains(
                "($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16)"
            )
        );
        assert!(!sql.contains("$17"));
    }
}
