-- Revocations of tokens: see migrations/sqlite/0005_revocations.sql.
CREATE TABLE weft_revocations (
    stored BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    record BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
