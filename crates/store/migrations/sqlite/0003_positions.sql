-- Positions: every message's place in its room (seq, 1, 2, 3, ...) within
-- the room's epoch. Rows stored before positions existed are numbered here,
-- per room in the order history showed them, in the store's first epoch.
CREATE TABLE IF NOT EXISTS positions (
    name    TEXT PRIMARY KEY NOT NULL,
    epoch   TEXT NOT NULL,
    -- 1 while no node runs on this store, or the last one stopped cleanly.
    clean   INTEGER NOT NULL
);
INSERT INTO positions (name, epoch, clean) VALUES ('local', lower(hex(randomblob(6))), 1);

ALTER TABLE messages ADD COLUMN seq INTEGER;
ALTER TABLE messages ADD COLUMN epoch TEXT;

UPDATE messages
SET epoch = (SELECT epoch FROM positions WHERE name = 'local'), seq = numbered.n
FROM (SELECT id, row_number() OVER (PARTITION BY room ORDER BY sent_at, id) AS n FROM messages) AS numbered
WHERE messages.id = numbered.id;

-- Partial: rows without a position (cluster mode, for now) do not pay for it.
CREATE UNIQUE INDEX IF NOT EXISTS messages_room_epoch_seq ON messages (room, epoch, seq) WHERE seq IS NOT NULL;
