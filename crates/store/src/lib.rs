//! The message store: the end of the message path, read for history.
//!
//! A [`Store`] keeps every message once, keyed by its id, and answers "the
//! latest N messages of a room, before a given message". The implementation
//! is picked from the URL scheme by [`open`]: `sqlite://` (embedded, the
//! default) and `postgres://` (the archive of the durable pipeline).

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_protocol::{Data, Message, RoomName};
use uuid::Uuid;

pub use postgres::{PgStore, queries as pg_queries};
pub use sqlite::SqliteStore;

/// A message as read from the journal's Kafka topic, with where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The message.
    pub message: Message,
    /// The node that accepted it.
    pub node: Option<String>,
    /// Kafka partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// A journal record that could not be decoded, kept with its bytes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetter {
    /// Topic it was read from.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The record value, if any.
    pub payload: Option<Vec<u8>>,
    /// Why it could not be decoded.
    pub error: String,
}

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names a scheme this build does not serve.
    #[error("unsupported store URL `{0}`: expected postgres://, sqlite://PATH or sqlite::memory:")]
    UnsupportedUrl(String),
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store did not answer in time.
    #[error("the store did not answer in time")]
    Timeout,
    /// A stored row no longer decodes into a message.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Durable message storage, shared by the journal (writes) and the gateway
/// (history reads).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a batch in one transaction. Ids already present are skipped,
    /// which makes a retried message land once. A tombstone (`deleted`)
    /// empties the stored message of that id and room, keeping its id and
    /// position, after the batch's new messages are in.
    async fn insert(&self, batch: &[Message]) -> Result<(), StoreError>;

    /// Stores an archiver batch in one transaction: the messages (ids already
    /// present are skipped) and the records that could not be decoded (one
    /// row per topic/partition/offset). Either all of it commits or none.
    async fn archive(&self, records: &[Archived], dead: &[DeadLetter]) -> Result<(), StoreError>;

    /// The dead letters stored, oldest first (for operators and tests).
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError>;

    /// The latest `limit` messages of `room`, oldest first; with `before`,
    /// only those older than that message (none when it is unknown).
    async fn history(
        &self,
        room: &RoomName,
        limit: u32,
        before: Option<Uuid>,
    ) -> Result<Vec<Message>, StoreError>;

    /// The messages of `room` in `epoch` after `after`, in seq order, at
    /// most `limit` (recovery, and history paged forwards).
    async fn after_seq(
        &self,
        room: &RoomName,
        epoch: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    /// The latest `limit` messages of `room` in `epoch` before `before`,
    /// oldest first (history paged backwards).
    async fn before_seq(
        &self,
        room: &RoomName,
        epoch: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    /// The highest seq of `room` in `epoch`; 0 when it has none.
    async fn last_seq(&self, room: &RoomName, epoch: &str) -> Result<u64, StoreError>;

    /// Starts a run of a single node's ordering point on this store: the
    /// epoch it numbers in. The last one when that run ended with
    /// [`Store::end_epoch`], otherwise (a crash: positions given to
    /// messages that never became durable may be given again) a new one.
    async fn begin_epoch(&self) -> Result<String, StoreError>;

    /// Ends the run of `epoch` cleanly: every position given is stored.
    async fn end_epoch(&self, epoch: &str) -> Result<(), StoreError>;

    /// The message `id` of `room` as stored (a tombstone when deleted),
    /// or `None`.
    async fn get(&self, room: &RoomName, id: Uuid) -> Result<Option<Message>, StoreError>;

    /// Keeps the archive's layout: creates the partitions ahead and drops
    /// those past the retention. Idempotent, and safe for several writers
    /// at once; run at open and then periodically by writers.
    async fn maintain(&self) -> Result<Maintained, StoreError> {
        Ok(Maintained::default())
    }

    /// Keeps a webhook batch that `endpoint` did not take (`error`), as it
    /// was sent.
    async fn webhook_dead_letter(
        &self,
        endpoint: &str,
        body: &[u8],
        error: &str,
    ) -> Result<(), StoreError>;

    /// Records that `process` (of `kind`: `archive`, `hooks`) is alive now,
    /// with its `status` (a JSON document); drops the rows of processes
    /// silent for a day.
    async fn beat(&self, kind: &str, process: &str, status: &str) -> Result<(), StoreError>;

    /// The processes that beat within the last `within_ms`, by kind and id.
    async fn beats(&self, within_ms: u64) -> Result<Vec<Beat>, StoreError>;

    /// A short name for logs: `sqlite`, `postgres`.
    fn kind(&self) -> &'static str;
}

/// A consumer process's latest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub kind: String,
    pub process: String,
    /// When it beat (Unix ms).
    pub at: i64,
    /// Its state, a JSON document as it wrote it.
    pub status: String,
}

impl From<(String, String, i64, String)> for Beat {
    /// A row of `process_heartbeats` read as (kind, process, at, status).
    fn from((kind, process, at, status): (String, String, i64, String)) -> Self {
        Self {
            kind,
            process,
            at,
            status,
        }
    }
}

/// A new epoch: 12 random hex digits.
pub fn new_epoch() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A message's seq as stored: NULL when it has none.
pub(crate) fn seq_column(m: &Message) -> Option<i64> {
    (m.seq > 0).then(|| seq_param(m.seq))
}

/// Its epoch as stored: NULL when it has no seq.
pub(crate) fn epoch_column(m: &Message) -> Option<&str> {
    (m.seq > 0).then_some(m.epoch.as_str())
}

/// Its data as stored: the JSON text, or NULL.
pub(crate) fn data_column(m: &Message) -> Option<&str> {
    m.data.as_ref().map(Data::get)
}

/// A stored data column back as the message's data.
pub(crate) fn decode_data(column: Option<String>) -> Result<Option<Data>, StoreError> {
    column
        .map(|json| Data::parse(json).map_err(|e| StoreError::Corrupt(format!("data: {e}"))))
        .transpose()
}

/// A seq as an SQL integer (seqs never come near `i64::MAX`).
pub(crate) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Opens the store named by `url` and applies its migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, true).await
}

/// Opens the store named by `url`, applying migrations only when `migrate`.
pub async fn open_with(url: &str, migrate: bool) -> Result<Arc<dyn Store>, StoreError> {
    open_with_layout(url, migrate, Layout::default()).await
}

/// Opens the store named by `url` with the archive's `layout` (used by
/// PostgreSQL, whose messages table is partitioned by time).
pub async fn open_with_layout(
    url: &str,
    migrate: bool,
    layout: Layout,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, migrate).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url, migrate, layout).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// How the archive's table is partitioned and how long it keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// One partition per day, week or month (`ARCHIVE_PARTITION`).
    pub unit: PartitionUnit,
    /// Partitions older than this many days are dropped
    /// (`RETENTION_DAYS`); `None` keeps every message.
    pub retention_days: Option<u32>,
    /// Partitions created ahead of the current one.
    pub ahead: u32,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            unit: PartitionUnit::Day,
            retention_days: None,
            ahead: 3,
        }
    }
}

/// The span of one archive partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionUnit {
    Day,
    Week,
    Month,
}

impl PartitionUnit {
    /// `day`, `week` or `month`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// What one round of [`Store::maintain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Partitions created.
    pub created: u32,
    /// Partitions dropped past the retention, by name.
    pub dropped: Vec<String>,
}
