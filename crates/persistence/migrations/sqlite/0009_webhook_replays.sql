-- A cluster's webhook replays: see migrations/postgres/0008_webhook_replays.sql.
CREATE TABLE weft_webhook_replays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    from_ms BIGINT NOT NULL,
    after_seq BIGINT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    done_at_ms BIGINT
);

CREATE INDEX weft_webhook_replays_pending ON weft_webhook_replays (topic, id)
    WHERE done_at_ms IS NULL;
