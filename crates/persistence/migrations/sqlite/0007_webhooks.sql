-- Webhooks (the change feed). Per target URL, the log position up to which
-- every change was delivered (a 2xx) or given up on: a restarted node
-- delivers from there, so a crash re-delivers and never skips.
CREATE TABLE weft_webhook_positions (
    target   TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
);

-- Events given up on after --webhook-retry-for: the body as sent, the
-- positions it covers and the last failure.
CREATE TABLE weft_webhook_dead_letters (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    target   TEXT    NOT NULL,
    delivery TEXT    NOT NULL,
    doc      TEXT    NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER NOT NULL,
    body     BLOB    NOT NULL,
    reason   TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL
);
