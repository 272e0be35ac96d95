-- Revocations of tokens (POST /api/revocations) on an embedded node: the
-- gateway's JSON record, kept until it ends (expires_at, Unix seconds).
CREATE TABLE weft_revocations (
    stored INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    record BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
