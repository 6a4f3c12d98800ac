//! The embedded store: one SQLite file (or memory) through sqlx.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
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

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, batch: &[Message]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for m in batch {
            sqlx::query("INSERT OR IGNORE INTO messages (id, room, sender, body, sent_at) VALUES (?, ?, ?, ?, ?)")
                .bind(m.id.to_string())
                .bind(m.room.as_str())
                .bind(&m.from)
                .bind(&m.text)
                .bind(m.ts)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn archive(&self, records: &[Archived], dead: &[DeadLetter]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            let m = &r.message;
            sqlx::query(
                "INSERT OR IGNORE INTO messages (id, room, sender, body, sent_at, node, kafka_partition, kafka_offset) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(m.id.to_string())
            .bind(m.room.as_str())
            .bind(&m.from)
            .bind(&m.text)
            .bind(m.ts)
            .bind(r.node.as_deref())
            .bind(r.partition)
            .bind(r.offset)
            .execute(&mut *tx)
            .await?;
        }
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
        let rows = sqlx::query(
            "SELECT topic, kafka_partition, kafka_offset, key, payload, error FROM dead_letters ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadLetter {
                    topic: row.try_get(0)?,
                    partition: row.try_get(1)?,
                    offset: row.try_get(2)?,
                    key: row.try_get(3)?,
                    payload: row.try_get(4)?,
                    error: row.try_get(5)?,
                })
            })
            .collect()
    }

    async fn history(&self, room: &RoomName, limit: u32, before: Option<Uuid>) -> Result<Vec<Message>, StoreError> {
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
                    id: Uuid::try_parse(&id).map_err(|e| StoreError::Corrupt(format!("id {id}: {e}")))?,
                    room: RoomName::parse(&room).map_err(|e| StoreError::Corrupt(format!("room {room}: {e}")))?,
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
