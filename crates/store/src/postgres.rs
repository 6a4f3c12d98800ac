//! The archive store: PostgreSQL through sqlx.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

use crate::{Archived, DeadLetter, Store, StoreError};

/// A [`Store`] in PostgreSQL. Batches are one multi-row `INSERT ... SELECT
/// FROM UNNEST(...)` each, `ON CONFLICT (id) DO NOTHING`, so a re-read batch
/// adds nothing.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and, when `migrate`, applies the migrations.
    pub async fn open(url: &str, migrate: bool) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        if migrate {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Self { pool })
    }

    async fn insert_rows(
        &self,
        tx: &mut sqlx::PgConnection,
        records: impl Iterator<Item = (&Message, Option<&str>, Option<i32>, Option<i64>)>,
    ) -> Result<(), StoreError> {
        let (mut ids, mut rooms, mut senders, mut bodies, mut ts) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut nodes, mut partitions, mut offsets) = (vec![], vec![], vec![]);
        for (m, node, partition, offset) in records {
            ids.push(m.id);
            rooms.push(m.room.as_str().to_owned());
            senders.push(m.from.clone());
            bodies.push(m.text.clone());
            ts.push(m.ts);
            nodes.push(node.map(str::to_owned));
            partitions.push(partition);
            offsets.push(offset);
        }
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO messages (id, room, sender, body, sent_at, node, kafka_partition, kafka_offset) \
             SELECT id, room, sender, body, TIMESTAMPTZ 'epoch' + ts * INTERVAL '1 millisecond', node, p, o \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::int4[], $8::int8[]) \
               AS t(id, room, sender, body, ts, node, p, o) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(rooms)
        .bind(senders)
        .bind(bodies)
        .bind(ts)
        .bind(nodes)
        .bind(partitions)
        .bind(offsets)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn insert(&self, batch: &[Message]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.insert_rows(&mut tx, batch.iter().map(|m| (m, None, None, None)))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn archive(&self, records: &[Archived], dead: &[DeadLetter]) -> Result<(), StoreError> {
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
                sqlx::query(
                    "SELECT id, room, sender, body, (EXTRACT(EPOCH FROM sent_at) * 1000)::bigint \
                     FROM messages WHERE room = $1 ORDER BY sent_at DESC, id DESC LIMIT $2",
                )
                .bind(room.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(before) => {
                sqlx::query(
                    "SELECT m.id, m.room, m.sender, m.body, (EXTRACT(EPOCH FROM m.sent_at) * 1000)::bigint \
                     FROM messages m, (SELECT sent_at, id FROM messages WHERE id = $1) b \
                     WHERE m.room = $2 AND (m.sent_at, m.id) < (b.sent_at, b.id) \
                     ORDER BY m.sent_at DESC, m.id DESC LIMIT $3",
                )
                .bind(before)
                .bind(room.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut out = rows
            .into_iter()
            .map(|row| {
                let room: String = row.try_get(1)?;
                Ok(Message {
                    id: row.try_get(0)?,
                    room: RoomName::parse(&room)
                        .map_err(|e| StoreError::Corrupt(format!("room {room}: {e}")))?,
                    from: row.try_get(2)?,
                    text: row.try_get(3)?,
                    ts: row.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.reverse();
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
