//! The embedded store: one SQLite file (or memory) through sqlx.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqlitePool};
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

use crate::{
    Archived, Beat, DeadLetter, Store, StoreError, data_column, epoch_column, seq_column, seq_param,
};

/// Now in Unix milliseconds, as SQL (for `concat!`).
macro_rules! now_ms {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

/// A read of message rows: the columns [`decode_rows`] reads, then `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, room, sender, body, sent_at, seq, epoch, data, deleted_at IS NOT NULL ",
            $rest
        )
    };
}

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

/// Rows per INSERT statement: 11 parameters each, far under SQLite's limit of
/// 32,766, and few statements per batch (each costs a round trip to sqlx's
/// SQLite worker thread).
const ROWS_PER_STATEMENT: usize = 500;

/// Inserts rows with multi-row statements, skipping ids already stored,
/// then applies the tombstones among them (a message and its deletion may
/// share a batch).
async fn insert_rows(tx: &mut sqlx::SqliteConnection, rows: &[Row<'_>]) -> Result<(), StoreError> {
    let (tombstones, rows): (Vec<&Row<'_>>, Vec<&Row<'_>>) = rows.iter().partition(|r| r.0.deleted);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO messages (id, room, sender, body, sent_at, node, kafka_partition, kafka_offset, seq, epoch, data) ",
        );
        insert.push_values(chunk, |mut row, (m, node, partition, offset)| {
            row.push_bind(m.id.to_string())
                .push_bind(m.room.as_str())
                .push_bind(m.from.as_str())
                .push_bind(m.text.as_str())
                .push_bind(m.ts)
                .push_bind(*node)
                .push_bind(*partition)
                .push_bind(*offset)
                .push_bind(seq_column(m))
                .push_bind(epoch_column(m))
                .push_bind(data_column(m));
        });
        insert.build().execute(&mut *tx).await?;
    }
    for (m, ..) in tombstones {
        sqlx::query(
            "UPDATE messages SET body = '', data = NULL, deleted_at = ? \
             WHERE id = ? AND room = ? AND deleted_at IS NULL",
        )
        .bind(m.ts)
        .bind(m.id.to_string())
        .bind(m.room.as_str())
        .execute(&mut *tx)
        .await?;
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
            sqlx::query(concat!(
                "INSERT OR IGNORE INTO dead_letters (topic, kafka_partition, kafka_offset, key, payload, error, received_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ",
                now_ms!(),
                ")"
            ))
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
                sqlx::query(select!(
                    "FROM messages WHERE room = ? \
                     ORDER BY sent_at DESC, id DESC LIMIT ?"
                ))
                .bind(room.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(before) => {
                sqlx::query(select!(
                    "FROM messages m, \
                     (SELECT sent_at AS b_sent_at, id AS b_id FROM messages WHERE id = ?1 AND room = ?2) b \
                     WHERE room = ?2 AND (sent_at, id) < (b_sent_at, b_id) \
                     ORDER BY sent_at DESC, id DESC LIMIT ?3"
                ))
                .bind(before.to_string())
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
        let rows = sqlx::query(select!(
            "FROM messages WHERE room = ? AND epoch = ? AND seq > ? \
             ORDER BY seq LIMIT ?"
        ))
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
        let rows = sqlx::query(select!(
            "FROM messages WHERE room = ? AND epoch = ? AND seq < ? \
             ORDER BY seq DESC LIMIT ?"
        ))
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
            "SELECT max(seq) FROM messages WHERE room = ? AND epoch = ? AND seq IS NOT NULL",
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
            sqlx::query_as("SELECT epoch, clean FROM positions WHERE name = 'local'")
                .fetch_one(&mut *tx)
                .await?;
        let epoch = if clean { epoch } else { crate::new_epoch() };
        sqlx::query("UPDATE positions SET epoch = ?, clean = 0 WHERE name = 'local'")
            .bind(&epoch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    async fn end_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE positions SET clean = 1 WHERE name = 'local' AND epoch = ?")
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get(&self, room: &RoomName, id: Uuid) -> Result<Option<Message>, StoreError> {
        let rows = sqlx::query(select!("FROM messages WHERE id = ? AND room = ?"))
            .bind(id.to_string())
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
        sqlx::query(concat!(
            "INSERT INTO webhook_dead_letters (endpoint, body, error, failed_at) VALUES (?, ?, ?, ",
            now_ms!(),
            ")"
        ))
        .bind(endpoint)
        .bind(body)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn beat(&self, kind: &str, process: &str, status: &str) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO process_heartbeats (process, kind, at, status) VALUES (?1, ?2, ",
            now_ms!(),
            ", ?3) ON CONFLICT (process) DO UPDATE SET kind = ?2, at = ",
            now_ms!(),
            ", status = ?3"
        ))
        .bind(process)
        .bind(kind)
        .bind(status)
        .execute(&self.pool)
        .await?;
        sqlx::query(concat!(
            "DELETE FROM process_heartbeats WHERE at < ",
            now_ms!(),
            " - 86400000"
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn beats(&self, within_ms: u64) -> Result<Vec<Beat>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(concat!(
            "SELECT kind, process, at, status FROM process_heartbeats WHERE at > ",
            now_ms!(),
            " - ? ORDER BY kind, process"
        ))
        .bind(within_ms as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Beat::from).collect())
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

fn decode_rows(rows: Vec<sqlx::sqlite::SqliteRow>) -> Result<Vec<Message>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let id: String = row.try_get(0)?;
            let room: String = row.try_get(1)?;
            let seq: Option<i64> = row.try_get(5)?;
            let epoch: Option<String> = row.try_get(6)?;
            let data: Option<String> = row.try_get(7)?;
            Ok(Message {
                id: Uuid::try_parse(&id)
                    .map_err(|e| StoreError::Corrupt(format!("id {id}: {e}")))?,
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
