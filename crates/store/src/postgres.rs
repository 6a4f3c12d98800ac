//! The archive store: PostgreSQL through sqlx.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

use crate::{
    Archived, Beat, DeadLetter, Layout, Maintained, Store, StoreError, data_column, epoch_column,
    seq_column, seq_param,
};

/// A read of message rows: the columns [`decode_rows`] reads, then `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!("SELECT id, room, sender, body, (EXTRACT(EPOCH FROM sent_at) * 1000)::bigint, seq, epoch, data::text, deleted_at IS NOT NULL ", $rest)
    };
}

/// The reads of history and recovery, public so that their plans can be
/// checked (only the partitions that can hold the rows are scanned).
///
/// Reads by position bound the time too, from the time of the position
/// read from, widened by five minutes: messages are stamped by the node
/// that accepts them before the ordering point gives their seq, so a
/// room's times follow its seqs only as closely as the nodes' clocks
/// agree. The bounds are scalar subqueries (init plans), which PostgreSQL
/// prunes partitions with when the query starts. Finding the time of a
/// position or an id probes one index per partition until the row is
/// found, from the end most reads start at (the newest for recovery and
/// paging back, the oldest for a page before an old position).
pub mod queries {
    /// The latest `$2` of room `$1`, newest first.
    pub const LATEST: &str =
        select!("FROM messages WHERE room = $1 ORDER BY sent_at DESC, id DESC LIMIT $2");

    /// The latest `$3` of room `$2` before message `$1`, newest first.
    pub const BEFORE_ID: &str = select!(
        "FROM messages WHERE room = $2 \
         AND (sent_at, id) < (SELECT sent_at, id FROM messages WHERE id = $1 AND room = $2 \
                              ORDER BY sent_at DESC LIMIT 1) \
         AND sent_at <= (SELECT max(sent_at) FROM messages WHERE id = $1 AND room = $2) \
         ORDER BY sent_at DESC, id DESC LIMIT $3"
    );

    /// At most `$4` of room `$1` in epoch `$2` after seq `$3`, in seq order.
    pub const AFTER_SEQ: &str = select!(
        "FROM messages WHERE room = $1 AND epoch = $2 AND seq > $3 \
         AND sent_at >= COALESCE((SELECT max(sent_at) FROM messages \
                                  WHERE room = $1 AND epoch = $2 AND seq = $3), '-infinity') \
                        - INTERVAL '5 minutes' \
         ORDER BY seq LIMIT $4"
    );

    /// At most `$4` of room `$1` in epoch `$2` before seq `$3`, newest first.
    pub const BEFORE_SEQ: &str = select!(
        "FROM messages WHERE room = $1 AND epoch = $2 AND seq < $3 \
         AND sent_at <= COALESCE((SELECT min(sent_at) FROM messages \
                                  WHERE room = $1 AND epoch = $2 AND seq = $3), 'infinity') \
                        + INTERVAL '5 minutes' \
         ORDER BY seq DESC LIMIT $4"
    );
}

/// A [`Store`] in PostgreSQL. Batches are one multi-row `INSERT ... SELECT
/// FROM UNNEST(...)` each, `ON CONFLICT DO NOTHING`, so a re-read batch
/// adds nothing. The messages table is partitioned by time ([`Layout`]).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    layout: Layout,
}

impl PgStore {
    /// Connects to `url`, applies the migrations when `migrate`, and
    /// creates the partitions around now.
    pub async fn open(url: &str, migrate: bool, layout: Layout) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        if migrate {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        let store = Self { pool, layout };
        store.maintain().await?;
        Ok(store)
    }

    /// Creates the partitions holding the times `ts` (Unix ms), one
    /// each, without filling the span between them.
    async fn cover(&self, ts: Vec<i64>) -> Result<i64, StoreError> {
        let created: Option<i64> = sqlx::query_scalar(
            "SELECT sum(switchboard_ensure_partitions(t, t + INTERVAL '1 millisecond', $2)) \
             FROM (SELECT DISTINCT date_trunc($2, TIMESTAMPTZ 'epoch' + ts * INTERVAL '1 millisecond', 'UTC') AS t \
                   FROM unnest($1::int8[]) AS ts) AS d",
        )
        .bind(ts)
        .bind(self.layout.unit.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(created.unwrap_or(0))
    }

    /// Whether a failed write should run once more: when a row had no
    /// partition to go to (a message older or newer than the partitions
    /// made ahead), the partitions for the batch's times are created first.
    async fn cover_missing(
        &self,
        result: Result<(), StoreError>,
        attempt: u32,
        times: impl Iterator<Item = i64>,
    ) -> Result<bool, StoreError> {
        match result {
            Ok(()) => Ok(false),
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if attempt == 0 && e.code().as_deref() == Some("23514") =>
            {
                self.cover(times.collect()).await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    async fn archive_once(
        &self,
        records: &[Archived],
        dead: &[DeadLetter],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.insert_rows(
            &mut tx,
            records.iter().map(|r| {
                (
                    &r.message,
                    r.node.as_deref(),
                    Some(r.partition),
                    Some(r.offset),
                )
            }),
        )
        .await?;
        for d in dead {
            sqlx::query(
                "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, key, payload, error) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING",
            )
            .bind(&d.topic)
            .bind(d.partition)
            .bind(d.offset)
            .bind(d.key.as_deref())
            .bind(d.payload.as_deref())
            .bind(&d.error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_rows(
        &self,
        tx: &mut sqlx::PgConnection,
        records: impl Iterator<Item = (&Message, Option<&str>, Option<i32>, Option<i64>)>,
    ) -> Result<(), StoreError> {
        let mut rows = Columns::default();
        let mut tombstones = vec![];
        for (m, node, partition, offset) in records {
            if m.deleted {
                tombstones.push(m);
            } else {
                rows.push(m, node, partition, offset);
            }
        }
        if !rows.ids.is_empty() {
            rows.insert(&mut *tx).await?;
        }
        // After the inserts: a message and its deletion may share a batch.
        for m in tombstones {
            sqlx::query(
                "UPDATE messages SET body = '', data = NULL, \
                 deleted_at = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 millisecond' \
                 WHERE id = $1 AND room = $2 AND deleted_at IS NULL",
            )
            .bind(m.id)
            .bind(m.room.as_str())
            .bind(m.ts)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// New rows as one array per column, for one `INSERT ... FROM UNNEST`.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    rooms: Vec<String>,
    senders: Vec<String>,
    bodies: Vec<String>,
    ts: Vec<i64>,
    nodes: Vec<Option<String>>,
    partitions: Vec<Option<i32>>,
    offsets: Vec<Option<i64>>,
    seqs: Vec<Option<i64>>,
    epochs: Vec<Option<String>>,
    data: Vec<Option<String>>,
}

impl Columns {
    fn push(
        &mut self,
        m: &Message,
        node: Option<&str>,
        partition: Option<i32>,
        offset: Option<i64>,
    ) {
        self.ids.push(m.id);
        self.rooms.push(m.room.as_str().to_owned());
        self.senders.push(m.from.clone());
        self.bodies.push(m.text.clone());
        self.ts.push(m.ts);
        self.nodes.push(node.map(str::to_owned));
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.seqs.push(seq_column(m));
        self.epochs.push(epoch_column(m).map(str::to_owned));
        self.data.push(data_column(m).map(str::to_owned));
    }

    async fn insert(self, tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO messages (id, room, sender, body, sent_at, node, kafka_partition, kafka_offset, seq, epoch, data) \
             SELECT id, room, sender, body, TIMESTAMPTZ 'epoch' + ts * INTERVAL '1 millisecond', node, p, o, seq, e, d::jsonb \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::int4[], $8::int8[], \
                         $9::int8[], $10::text[], $11::text[]) \
               AS t(id, room, sender, body, ts, node, p, o, seq, e, d) \
             ON CONFLICT DO NOTHING",
        )
        .bind(self.ids)
        .bind(self.rooms)
        .bind(self.senders)
        .bind(self.bodies)
        .bind(self.ts)
        .bind(self.nodes)
        .bind(self.partitions)
        .bind(self.offsets)
        .bind(self.seqs)
        .bind(self.epochs)
        .bind(self.data)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn insert(&self, batch: &[Message]) -> Result<(), StoreError> {
        for attempt in 0.. {
            let result = async {
                let mut tx = self.pool.begin().await?;
                self.insert_rows(&mut tx, batch.iter().map(|m| (m, None, None, None)))
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            .await;
            if !self
                .cover_missing(result, attempt, batch.iter().map(|m| m.ts))
                .await?
            {
                break;
            }
        }
        Ok(())
    }

    async fn archive(&self, records: &[Archived], dead: &[DeadLetter]) -> Result<(), StoreError> {
        for attempt in 0.. {
            let result = self.archive_once(records, dead).await;
            if !self
                .cover_missing(result, attempt, records.iter().map(|r| r.message.ts))
                .await?
            {
                break;
            }
        }
        Ok(())
    }

    async fn maintain(&self) -> Result<Maintained, StoreError> {
        let unit = self.layout.unit.as_str();
        // The previous partition, the current one and `ahead` after it.
        let created: i32 = sqlx::query_scalar(
            "SELECT switchboard_ensure_partitions(now() - ('1 ' || $2)::interval, \
             date_trunc($2, now(), 'UTC') + ($1 + 1) * ('1 ' || $2)::interval, $2)",
        )
        .bind(i32::try_from(self.layout.ahead).unwrap_or(i32::MAX))
        .bind(unit)
        .fetch_one(&self.pool)
        .await?;
        let dropped = match self.layout.retention_days {
            Some(days) => {
                sqlx::query_scalar(
                    "SELECT switchboard_drop_partitions(now() - $1 * INTERVAL '1 day')",
                )
                .bind(i32::try_from(days).unwrap_or(i32::MAX))
                .fetch_all(&self.pool)
                .await?
            }
            None => Vec::new(),
        };
        Ok(Maintained {
            created: created.max(0) as u32,
            dropped,
        })
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT topic, kafka_partition AS partition, kafka_offset AS \"offset\", key, payload, error \
             FROM dead_letters ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn history(
        &self,
        room: &RoomName,
        limit: u32,
        before: Option<Uuid>,
    ) -> Result<Vec<Message>, StoreError> {
        let rows = match before {
            None => {
                sqlx::query(queries::LATEST)
                    .bind(room.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(before) => {
                sqlx::query(queries::BEFORE_ID)
                    .bind(before)
                    .bind(room.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut out = decode_rows(rows)?;
        out.reverse();
        Ok(out)
    }

    async fn after_seq(
        &self,
        room: &RoomName,
        epoch: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query(queries::AFTER_SEQ)
            .bind(room.as_str())
            .bind(epoch)
            .bind(seq_param(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        decode_rows(rows)
    }

    async fn before_seq(
        &self,
        room: &RoomName,
        epoch: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query(queries::BEFORE_SEQ)
            .bind(room.as_str())
            .bind(epoch)
            .bind(seq_param(before))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = decode_rows(rows)?;
        out.reverse();
        Ok(out)
    }

    async fn last_seq(&self, room: &RoomName, epoch: &str) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT max(seq) FROM messages WHERE room = $1 AND epoch = $2 AND seq IS NOT NULL",
        )
        .bind(room.as_str())
        .bind(epoch)
        .fetch_one(&self.pool)
        .await?;
        Ok(last.map_or(0, |n| n.max(0) as u64))
    }

    async fn begin_epoch(&self) -> Result<String, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (epoch, clean): (String, bool) =
            sqlx::query_as("SELECT epoch, clean FROM positions WHERE name = 'local' FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let epoch = if clean { epoch } else { crate::new_epoch() };
        sqlx::query("UPDATE positions SET epoch = $1, clean = false WHERE name = 'local'")
            .bind(&epoch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    async fn end_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE positions SET clean = true WHERE name = 'local' AND epoch = $1")
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get(&self, room: &RoomName, id: Uuid) -> Result<Option<Message>, StoreError> {
        let rows = sqlx::query(select!("FROM messages WHERE id = $1 AND room = $2"))
            .bind(id)
            .bind(room.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(decode_rows(rows)?.pop())
    }

    async fn webhook_dead_letter(
        &self,
        endpoint: &str,
        body: &[u8],
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO webhook_dead_letters (endpoint, body, error) VALUES ($1, $2, $3)")
            .bind(endpoint)
            .bind(body)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn beat(&self, kind: &str, process: &str, status: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO process_heartbeats (process, kind, at, status) VALUES ($1, $2, now(), $3) \
             ON CONFLICT (process) DO UPDATE SET kind = $2, at = now(), status = $3",
        )
        .bind(process)
        .bind(kind)
        .bind(status)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM process_heartbeats WHERE at < now() - interval '1 day'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn beats(&self, within_ms: u64) -> Result<Vec<Beat>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT kind, process, (extract(epoch FROM at) * 1000)::bigint, status \
             FROM process_heartbeats WHERE at > now() - make_interval(secs => $1) \
             ORDER BY kind, process",
        )
        .bind(within_ms as f64 / 1000.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Beat::from).collect())
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

fn decode_rows(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<Message>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let room: String = row.try_get(1)?;
            let seq: Option<i64> = row.try_get(5)?;
            let epoch: Option<String> = row.try_get(6)?;
            let data: Option<String> = row.try_get(7)?;
            Ok(Message {
                id: row.try_get(0)?,
                room: RoomName::parse(&room)
                    .map_err(|e| StoreError::Corrupt(format!("room {room}: {e}")))?,
                from: row.try_get(2)?,
                text: row.try_get(3)?,
                ts: row.try_get(4)?,
                seq: seq.map_or(0, |n| n.max(0) as u64),
                epoch: epoch.unwrap_or_default(),
                data: crate::decode_data(data)?,
                deleted: row.try_get(8)?,
            })
        })
        .collect()
}
