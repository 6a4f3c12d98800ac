-- The consumer processes' heartbeats (`switchboard archive`, `switchboard
-- hooks`): each writes its state every few seconds, and the admin console
-- of any node reads them. One row per process; rows a day old are dropped.
CREATE TABLE IF NOT EXISTS process_heartbeats (
    process     text PRIMARY KEY,
    kind        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL
);
