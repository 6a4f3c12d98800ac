-- A message may carry a JSON value (`data`) beside or instead of its text,
-- and may be deleted by moderation: its row stays as a tombstone (id and
-- position kept, body and data gone) so that reads by position have no hole.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS data jsonb;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

-- A message is its id in its room: positions and resends are per room, so a
-- client reusing an id in another room sends another message there.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_pkey;
ALTER TABLE messages ADD PRIMARY KEY (room, id);
