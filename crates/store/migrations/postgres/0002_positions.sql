-- Positions: every message's place in its room (seq, 1, 2, 3, ...) within
-- the room's epoch. Rows stored before positions existed are numbered here,
-- per room in the order history showed them, in the store's first epoch.
CREATE TABLE IF NOT EXISTS positions (
    name    text PRIMARY KEY,
    epoch   text NOT NULL,
    -- true while no node runs on this store, or the last one stopped cleanly.
    clean   boolean NOT NULL
);
INSERT INTO positions (name, epoch, clean)
VALUES ('local', substr(md5(random()::text || clock_timestamp()::text), 1, 12), true);

ALTER TABLE messages ADD COLUMN IF NOT EXISTS seq bigint;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS epoch text;

UPDATE messages
SET epoch = (SELECT epoch FROM positions WHERE name = 'local'), seq = numbered.n
FROM (SELECT id, row_number() OVER (PARTITION BY room ORDER BY sent_at, id) AS n FROM messages) AS numbered
WHERE messages.id = numbered.id;

-- Partial: rows without a position (cluster mode, for now) do not pay for it.
CREATE UNIQUE INDEX IF NOT EXISTS messages_room_epoch_seq ON messages (room, epoch, seq) WHERE seq IS NOT NULL;
