-- Webhook batches an endpoint did not take within WEBHOOK_MAX_ATTEMPTS: the
-- body as it was signed and sent, kept for an operator to replay.
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id          bigserial PRIMARY KEY,
    endpoint    text NOT NULL,
    body        bytea NOT NULL,
    error       text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
