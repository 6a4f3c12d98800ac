-- Webhook batches an endpoint did not take within WEBHOOK_MAX_ATTEMPTS: the
-- body as it was signed and sent, kept for an operator to replay.
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint    TEXT NOT NULL,
    body        BLOB NOT NULL,
    error       TEXT NOT NULL,
    failed_at   INTEGER NOT NULL
);
