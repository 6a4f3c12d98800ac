-- The archive becomes a table partitioned by time (range on sent_at): one
-- partition per day, week or month (ARCHIVE_PARTITION), created ahead by
-- whoever writes (switchboard_ensure_partitions), and dropped whole past
-- the retention (switchboard_drop_partitions), so old messages leave
-- without a DELETE and a read by time touches only the partitions it needs.
--
-- A partitioned table's keys include the partition key: the primary key is
-- (room, id, sent_at). A message keeps its first acceptance time when it is
-- resent, so a resend still meets its row and adds none.
--
-- An existing table with rows is kept as it is, renamed, and attached as the
-- partition of everything before the day after its newest row: no row is
-- copied. ATTACH checks its rows against that bound and builds the parent's
-- indexes on it, under a lock, once.

-- Every partition of `messages` and the range it holds, [starts, ends).
CREATE TABLE IF NOT EXISTS archive_partitions (
    name    text PRIMARY KEY,
    starts  timestamptz NOT NULL,
    ends    timestamptz NOT NULL
);

DO $migrate$
DECLARE
    bound timestamptz;
BEGIN
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = 'messages'::regclass) = 'p' THEN
        RETURN;
    END IF;
    SELECT COALESCE(date_trunc('day', max(sent_at), 'UTC') + interval '1 day',
                    date_trunc('day', now(), 'UTC'))
      INTO bound FROM messages;

    ALTER TABLE messages RENAME TO messages_before_partitioning;
    -- Its key becomes the parent's (the rows are unique on less already).
    ALTER TABLE messages_before_partitioning DROP CONSTRAINT messages_pkey;
    ALTER TABLE messages_before_partitioning
        ADD CONSTRAINT messages_before_partitioning_pkey PRIMARY KEY (room, id, sent_at);
    ALTER INDEX messages_room_sent_at RENAME TO messages_before_partitioning_room_sent_at;
    ALTER INDEX messages_room_epoch_seq RENAME TO messages_before_partitioning_room_epoch_seq;

    CREATE TABLE messages (LIKE messages_before_partitioning INCLUDING DEFAULTS)
        PARTITION BY RANGE (sent_at);
    ALTER TABLE messages ADD PRIMARY KEY (room, id, sent_at);
    -- "latest N of a room before X" is one backward index range scan per
    -- partition, newest partition first.
    CREATE INDEX messages_room_sent_at ON messages (room, sent_at, id);
    CREATE UNIQUE INDEX messages_room_epoch_seq ON messages (room, epoch, seq, sent_at)
        WHERE seq IS NOT NULL;

    -- An empty table is simply replaced.
    IF NOT EXISTS (SELECT 1 FROM messages_before_partitioning) THEN
        DROP TABLE messages_before_partitioning;
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE messages ATTACH PARTITION messages_before_partitioning '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    INSERT INTO archive_partitions (name, starts, ends)
    VALUES ('messages_before_partitioning', '-infinity', bound);
END
$migrate$;

-- Creates the partition of messages holding [starts, ends), named by its
-- unit and start (messages_day_20261128_000000), and records it.
CREATE OR REPLACE FUNCTION switchboard_create_partition(unit text, starts timestamptz, ends timestamptz)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    name text := 'messages_' || unit || '_' || to_char(starts AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS');
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
                   name, starts, ends);
    INSERT INTO archive_partitions (name, starts, ends) VALUES (name, starts, ends);
END
$fn$;

-- Creates the partitions that hold [from_ts, to_ts), one per `unit` (day,
-- week or month, in UTC), each clipped to the gaps between the partitions
-- that exist (so a change of unit never overlaps an older partition).
-- Returns how many it created. Serialized by an advisory lock, so writers
-- may all call it.
CREATE OR REPLACE FUNCTION switchboard_ensure_partitions(from_ts timestamptz, to_ts timestamptz, unit text)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    step interval := ('1 ' || unit)::interval;
    s timestamptz;
    e timestamptz;
    cursor_ts timestamptz;
    p record;
    created integer := 0;
BEGIN
    IF unit NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'unknown partition unit %', unit;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('switchboard_partitions'));
    s := date_trunc(unit, from_ts, 'UTC');
    WHILE s < to_ts LOOP
        e := (s AT TIME ZONE 'UTC' + step) AT TIME ZONE 'UTC';
        cursor_ts := s;
        FOR p IN SELECT starts, ends FROM archive_partitions
                 WHERE starts < e AND ends > s ORDER BY starts LOOP
            IF p.starts > cursor_ts THEN
                PERFORM switchboard_create_partition(unit, cursor_ts, p.starts);
                created := created + 1;
            END IF;
            cursor_ts := greatest(cursor_ts, p.ends);
        END LOOP;
        IF cursor_ts < e THEN
            PERFORM switchboard_create_partition(unit, cursor_ts, e);
            created := created + 1;
        END IF;
        s := e;
    END LOOP;
    RETURN created;
END
$fn$;

-- Detaches and drops every partition that ends at or before `cutoff`.
-- Returns the names dropped.
CREATE OR REPLACE FUNCTION switchboard_drop_partitions(cutoff timestamptz)
RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
    p record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('switchboard_partitions'));
    FOR p IN SELECT name FROM archive_partitions WHERE ends <= cutoff ORDER BY starts LOOP
        EXECUTE format('ALTER TABLE messages DETACH PARTITION %I', p.name);
        EXECUTE format('DROP TABLE %I', p.name);
        DELETE FROM archive_partitions WHERE name = p.name;
        RETURN NEXT p.name;
    END LOOP;
END
$fn$;
