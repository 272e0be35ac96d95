-- Webhooks: see migrations/sqlite/0006_webhooks.sql.
CREATE TABLE weft_webhook_positions (
    target TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);

CREATE TABLE weft_webhook_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    target TEXT NOT NULL,
    delivery TEXT NOT NULL,
    doc TEXT NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq BIGINT NOT NULL,
    body BYTEA NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
