-- The update log: every accepted Yjs update, appended in group-committed
-- batches. AUTOINCREMENT so a sequence number is never reused after the
-- newest rows are pruned: "everything up to seq S" stays well defined.
CREATE TABLE weft_updates (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    doc  TEXT    NOT NULL,
    data BLOB    NOT NULL
);

CREATE INDEX weft_updates_doc_seq ON weft_updates (doc, seq);

-- At most one snapshot per document: the whole document as one Yjs v1
-- update, its v1 state vector, and the log position it covers. Log rows of
-- the document up to covers_seq are deleted in the transaction that writes
-- the snapshot.
CREATE TABLE weft_snapshots (
    doc          TEXT    PRIMARY KEY,
    state        BLOB    NOT NULL,
    state_vector BLOB    NOT NULL,
    covers_seq   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
