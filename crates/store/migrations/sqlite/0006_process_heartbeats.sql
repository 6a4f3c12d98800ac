-- The consumer processes' heartbeats (the same table as PostgreSQL's; a
-- single node has none, but the schema is kept the same).
CREATE TABLE IF NOT EXISTS process_heartbeats (
    process     TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    status      TEXT NOT NULL
);
