//! The message store: the end of the message path, read for history.
//!
//! A [`Store`] keeps every message once, keyed by its id, and answers "the
//! latest N messages of a room, before a given message". The implementation
//! is picked from the URL scheme by [`open`]: `sqlite://` (embedded, the
//! default) now, `postgres://` with the durable pipeline.

mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

pub use sqlite::SqliteStore;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names a scheme this build does not serve.
    #[error("unsupported store URL `{0}`: expected sqlite://PATH or sqlite::memory:")]
    UnsupportedUrl(String),
    /// The URL names a backend that is planned but not built yet.
    #[error("{0}")]
    NotSupportedYet(String),
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
    /// which makes a retried message land once.
    async fn insert(&self, batch: &[Message]) -> Result<(), StoreError>;

    /// The latest `limit` messages of `room`, oldest first; with `before`,
    /// only those older than that message (none when it is unknown).
    async fn history(&self, room: &RoomName, limit: u32, before: Option<Uuid>) -> Result<Vec<Message>, StoreError>;

    /// A short name for logs: `sqlite`, `postgres`.
    fn kind(&self) -> &'static str;
}

/// Opens the store named by `url` and applies its migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Err(StoreError::NotSupportedYet(
            "postgres:// stores are not supported yet (they come with the durable pipeline); \
             use sqlite://PATH or leave DATABASE_URL unset"
                .into(),
        ))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}
