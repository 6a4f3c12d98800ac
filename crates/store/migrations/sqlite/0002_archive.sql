ALTER TABLE messages ADD COLUMN node TEXT;
ALTER TABLE messages ADD COLUMN kafka_partition INTEGER;
ALTER TABLE messages ADD COLUMN kafka_offset INTEGER;

CREATE TABLE IF NOT EXISTS dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    key             BLOB,
    payload         BLOB,
    error           TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
