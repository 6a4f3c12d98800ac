CREATE TABLE IF NOT EXISTS messages (
    id              uuid PRIMARY KEY,
    room            text NOT NULL,
    sender          text NOT NULL,
    body            text NOT NULL,
    sent_at         timestamptz NOT NULL,
    node            text,
    kafka_partition integer,
    kafka_offset    bigint
);

-- "latest N of a room before X" is one backward index range scan.
CREATE INDEX IF NOT EXISTS messages_room_sent_at ON messages (room, sent_at, id);

-- Records the archiver could not decode, kept with their bytes and never
-- silently dropped. One row per Kafka record, so a re-read batch adds none.
CREATE TABLE IF NOT EXISTS dead_letters (
    id              bigserial PRIMARY KEY,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    key             bytea,
    payload         bytea,
    error           text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
