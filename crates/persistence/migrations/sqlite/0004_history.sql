-- History. Every logged update records who wrote it (the token's sub, or
-- 'anonymous' on an open node), when (the accepting node's clock, ms since
-- the Unix epoch) and through which node. NULL in rows logged before.
ALTER TABLE weft_updates ADD COLUMN author TEXT;
ALTER TABLE weft_updates ADD COLUMN at_ms INTEGER;
ALTER TABLE weft_updates ADD COLUMN node TEXT;

-- Versions of a document: automatic, named, or the result of a restore.
-- Each covers the log up to covers_seq; authors is a JSON array of who
-- changed the document since the version before it.
CREATE TABLE weft_versions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    doc        TEXT    NOT NULL,
    name       TEXT,
    kind       TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    covers_seq INTEGER NOT NULL,
    authors    TEXT    NOT NULL
);

CREATE INDEX weft_versions_doc_id ON weft_versions (doc, id);

-- Checkpoints: a document's whole state at a log position, kept while the
-- log after it is kept, so reading the document at a version or instant
-- replays the log from the nearest earlier checkpoint only. A store
-- written before history starts its documents' history at their snapshot.
CREATE TABLE weft_checkpoints (
    doc        TEXT    NOT NULL,
    covers_seq INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (doc, covers_seq)
);

INSERT INTO weft_checkpoints (doc, covers_seq, state, at_ms)
    SELECT doc, covers_seq, state, updated_at FROM weft_snapshots;
