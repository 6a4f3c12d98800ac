//! The journal: the durable log every accepted message is appended to.
//!
//! [`Journal::append`] resolves only once the message is durable, and the
//! gateway acks the sender only then. The [`EmbeddedJournal`] writes batches
//! straight into the [`Store`](switchboard_store::Store); the [`KafkaJournal`]
//! produces to a topic that `switchboard archive` drains into PostgreSQL.

mod embedded;
mod kafka;
pub mod record;

use async_trait::async_trait;
use switchboard_protocol::{Message, PresenceChange};

pub use embedded::{EmbeddedJournal, JournalOptions};
pub use kafka::{KafkaJournal, KafkaOptions, ensure_topic};
pub use rdkafka::error::KafkaError;

/// Why a message could not be made durable. Every variant means the same to
/// a client (`unavailable`: retry with the same id).
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The bounded queue in front of the journal is full.
    #[error("journal queue is full")]
    Full,
    /// The journal is shutting down or has stopped.
    #[error("journal is closed")]
    Closed,
    /// The backing store or broker failed the write.
    #[error("journal write failed: {0}")]
    Write(String),
}

/// The durable log behind the acks.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends `message`; resolves when it is durable. Appending an id that
    /// is already in the journal succeeds without storing it twice.
    async fn append(&self, message: Message) -> Result<(), JournalError>;

    /// Stops taking messages, makes everything already accepted durable, and
    /// returns when done (graceful shutdown).
    async fn close(&self);

    /// Whether the journal can currently make messages durable (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// A short name for logs: `embedded`, `kafka`.
    fn kind(&self) -> &'static str;

    /// Messages handed to the journal and not yet durable (the embedded
    /// journal's queue, or the Kafka producer's records in flight).
    fn queued(&self) -> usize;

    /// Records a presence change (a name's first connection in a room
    /// anywhere, or its last) for the webhooks, when this journal keeps
    /// them (Kafka with `KAFKA_EVENTS_TOPIC`). Best effort: it never waits,
    /// and a change the broker does not take is counted and logged.
    fn presence(&self, change: &PresenceChange) {
        let _ = change;
    }
}
