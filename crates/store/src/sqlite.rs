//! The embedded store: one SQLite file (or memory) through sqlx.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqlitePool};
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

use crate::{Archived, DeadLetter, Store, StoreError};

/// A [`Store`] in SQLite. Writes are `synchronous=FULL` in WAL mode so that a
/// committed batch survives a crash: the journal acks senders after commit.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and migrates it.
    pub async fn open(url: &str, migrate: bool) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // Every connection to `:memory:` is a database of its own, so an
        // in-memory store must live on exactly one connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        if migrate {
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        }
        Ok(Self { pool })
    }
}

/// A message row: the message, its node, and its Kafka partition and offset.
type Row<'a> = (&'a Message, Option<&'a str>, Option<i32>, Option<i64>);

/// Rows per INSERT statement: 8 parameters each, far under SQLite's limit of
/// 32,766, and few statements per batch (each costs a round trip to sqlx's
/// SQLite worker thread).
const ROWS_PER_STATEMENT: usize = 500;

/// Inserts rows with multi-row statements, skipping ids already stored.
async fn insert_rows(tx: &mut sqlx::SqliteConnection, rows: &[Row<'_>]) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO messages (id, room, sender, body, sent_at, node, kafka_partition, kafka_offset) ",
        );
        insert.push_values(chunk, |mut row, (m, node, partition, offset)| {
            row.push_bind(m.id.to_string())
                .push_bind(m.room.as_str())
                .push_bind(m.from.as_str())
                .push_bind(m.text.as_str())
                .push_bind(m.ts)
                .push_bind(*node)
                .push_bind(*partition)
                .push_bind(*offset);
        });
        insert.build().execute(&mut *tx).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, batch: &[Message]) -> Result<(), StoreError> {
        let rows: Vec<Row<'_>> = batch.iter().map(|m| (m, None, None, None)).collect();
        let mut tx = self.pool.begin().await?;
        insert_rows(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn archive(&self, records: &[Archived], dead: &[DeadLetter]) -> Result<(), StoreError> {
        let rows: Vec<Row<'_>> = records
            .iter()
            .map(|r| {
                (
                    &r.message,
                    r.node.as_deref(),
                    Some(r.partition),
                    Some(r.offset),
                )
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        insert_rows(&mut tx, &rows).await?;
        for d in dead {
            sqlx::query(
                "INSERT OR IGNORE INTO dead_letters (topic, kafka_partition, kafka_offset, key, payload, error, received_at) \
                 VALUES (?, ?, ?, ?, ?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
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
             FROM dead_letters ORDER BY id LIMIT ?",
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
                    "SELECT id, room, sender, body, sent_at FROM messages WHERE room = ? \
                     ORDER BY sent_at DESC, id DESC LIMIT ?",
                )
                .bind(room.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(before) => {
                sqlx::query(
                    "SELECT m.id, m.room, m.sender, m.body, m.sent_at FROM messages m, \
                     (SELECT sent_at, id FROM messages WHERE id = ?) b \
                     WHERE m.room = ? AND (m.sent_at, m.id) < (b.sent_at, b.id) \
                     ORDER BY m.sent_at DESC, m.id DESC LIMIT ?",
                )
                .bind(before.to_string())
                .bind(room.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut out = rows
            .into_iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let room: String = row.try_get(1)?;
                Ok(Message {
                    id: Uuid::try_parse(&id)
                        .map_err(|e| StoreError::Corrupt(format!("id {id}: {e}")))?,
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
        "sqlite"
    }
}
