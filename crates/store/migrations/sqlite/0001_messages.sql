CREATE TABLE IF NOT EXISTS messages (
    id      TEXT PRIMARY KEY NOT NULL,
    room    TEXT NOT NULL,
    sender  TEXT NOT NULL,
    body    TEXT NOT NULL,
    sent_at INTEGER NOT NULL
) WITHOUT ROWID;

-- "latest N of a room before X" walks this index backwards.
CREATE INDEX IF NOT EXISTS messages_room_sent_at ON messages (room, sent_at, id);
