-- A message may carry a JSON value (`data`, its text) beside or instead of
-- its text, and may be deleted by moderation: its row stays as a tombstone
-- (id and position kept, body and data gone).
ALTER TABLE messages ADD COLUMN data TEXT;
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
