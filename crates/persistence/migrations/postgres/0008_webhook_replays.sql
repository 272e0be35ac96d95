-- A cluster's webhook replays: a node cannot reach the `weft persist`
-- worker that delivers a topic's webhooks, so `POST /api/webhooks/replay`
-- stores a request here; the worker holding the topic's delivery lock
-- polls for pending ones, moves every target's delivered position back to
-- after_seq (a feed number), then sets done_at_ms. A request made while no
-- worker delivers is applied by the next one that does.
CREATE TABLE weft_webhook_replays (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    from_ms BIGINT NOT NULL,
    after_seq BIGINT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    done_at_ms BIGINT
);

CREATE INDEX weft_webhook_replays_pending ON weft_webhook_replays (topic, id)
    WHERE done_at_ms IS NULL;
