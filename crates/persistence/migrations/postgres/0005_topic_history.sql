-- A cluster's per-edit history: every update record of a topic's document,
-- as the persistence worker (the single folder of its partition) read it,
-- keyed by the record's offset (seq). data is the Yjs update (empty for a
-- deletion); author, at_ms and node come from the record's headers and
-- envelope (NULL for a record from before attribution). Keyed by (topic,
-- doc, seq) so a compaction per (log, document) deletes old rows by range.
CREATE TABLE weft_topic_updates (
    topic  TEXT    NOT NULL,
    doc    TEXT    NOT NULL,
    seq    BIGINT  NOT NULL,
    data   BYTEA   NOT NULL,
    author TEXT,
    at_ms  BIGINT,
    node   TEXT,
    PRIMARY KEY (topic, doc, seq)
);

-- A version a node took in a cluster before the worker had stored the
-- rows up to it: its authors are completed on a later read.
ALTER TABLE weft_versions ADD COLUMN authors_pending INTEGER NOT NULL DEFAULT 0;
