-- The same schema as the embedded SQLite store (see migrations/sqlite), for
-- PostgreSQL. Many nodes and workers share one database: sqlx runs the
-- migrations under an advisory lock, so processes starting at once migrate
-- once.

-- The embedded-mode update log (a PostgreSQL-backed single node). BIGSERIAL
-- never reuses a value, so "everything up to seq S" stays well defined.
CREATE TABLE weft_updates (
    seq  BIGSERIAL PRIMARY KEY,
    doc  TEXT      NOT NULL,
    data BYTEA     NOT NULL
);

CREATE INDEX weft_updates_doc_seq ON weft_updates (doc, seq);

-- At most one embedded snapshot per document, covering the log up to
-- covers_seq.
CREATE TABLE weft_snapshots (
    doc          TEXT   PRIMARY KEY,
    state        BYTEA  NOT NULL,
    state_vector BYTEA  NOT NULL,
    covers_seq   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- Documents folded from a Kafka topic by the persistence worker.
CREATE TABLE weft_topic_snapshots (
    topic         TEXT    NOT NULL,
    doc           TEXT    NOT NULL,
    state         BYTEA   NOT NULL,
    state_vector  BYTEA   NOT NULL,
    partition_id  INTEGER NOT NULL,
    covers_offset BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (topic, doc)
);
