-- A message may carry a JSON value (`data`, its text) beside or instead of
-- its text, and may be deleted by moderation: its row stays as a tombstone
-- (id and position kept, body and data gone).
--
-- A message is its id in its room: positions and resends are per room, so a
-- client reusing an id in another room sends another message there. SQLite
-- cannot change a primary key: the table is rebuilt.
CREATE TABLE messages_by_room (
    id              TEXT NOT NULL,
    room            TEXT NOT NULL,
    sender          TEXT NOT NULL,
    body            TEXT NOT NULL,
    sent_at         INTEGER NOT NULL,
    node            TEXT,
    kafka_partition INTEGER,
    kafka_offset    INTEGER,
    seq             INTEGER,
    epoch           TEXT,
    data            TEXT,
    deleted_at      INTEGER,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;

INSERT INTO messages_by_room (id, room, sender, body, sent_at, node, kafka_partition, kafka_offset, seq, epoch)
SELECT id, room, sender, body, sent_at, node, kafka_partition, kafka_offset, seq, epoch FROM messages;

DROP TABLE messages;
ALTER TABLE messages_by_room RENAME TO messages;

CREATE INDEX messages_room_sent_at ON messages (room, sent_at, id);
CREATE UNIQUE INDEX messages_room_epoch_seq ON messages (room, epoch, seq) WHERE seq IS NOT NULL;
