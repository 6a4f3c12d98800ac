//! The archiver (`switchboard archive`): the consumer service between the
//! journal topic and the store.
//!
//! It reads the topic in a consumer group, in batches (up to `batch`
//! records or `linger`), writes each batch in one transaction (messages
//! `ON CONFLICT (id) DO NOTHING`, undecodable records into `dead_letters`),
//! and commits the Kafka offsets only after the database commit. A crash at
//! any point re-reads at most the uncommitted batch, which the table
//! absorbs: one row per message id, whatever crashes or rebalances.
//!
//! When the store fails, the archiver stops fetching and retries the same
//! batch with exponential backoff (capped at 30 s), forever: it never skips
//! a batch and never exits for a database error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_journal::record;
use switchboard_store::{Archived, DeadLetter, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait between two attempts at a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Settings of the archiver.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The journal topic.
    pub topic: String,
    /// Partitions and replication of the topic if the archiver creates it.
    pub partitions: i32,
    pub replication: i32,
    /// Consumer group shared by every archiver process.
    pub group: String,
    /// Records per batch at most.
    pub batch: usize,
    /// How long a batch waits to fill after its first record.
    pub linger: Duration,
    /// librdkafka consumer settings overriding the defaults.
    pub overrides: Vec<(String, String)>,
}

/// Why the archiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The consumer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// One batch read from the topic, decoded.
#[derive(Default)]
struct Batch {
    records: Vec<Archived>,
    dead: Vec<DeadLetter>,
    /// The next offset to commit, per partition.
    next: HashMap<(String, i32), i64>,
}

impl Batch {
    fn len(&self) -> usize {
        self.records.len() + self.dead.len()
    }

    fn add(&mut self, msg: &BorrowedMessage<'_>) {
        let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
        self.next.insert((topic.clone(), partition), offset + 1);
        let decoded = match msg.payload() {
            Some(payload) => record::decode(payload),
            None => Err("record has no value".to_owned()),
        };
        match decoded {
            Ok((message, node)) => self.records.push(Archived {
                message,
                node,
                partition,
                offset,
            }),
            Err(error) => {
                metrics::counter!("switchboard_archive_dead_letters_total").increment(1);
                tracing::warn!(%topic, partition, offset, %error, "undecodable record goes to dead_letters");
                self.dead.push(DeadLetter {
                    topic,
                    partition,
                    offset,
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec),
                    error,
                });
            }
        }
    }

    fn offsets(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &self.next {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        Ok(list)
    }
}

/// Creates the group consumer for `options`.
pub fn consumer(options: &ArchiveOptions) -> Result<StreamConsumer, ArchiveError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A database outage holds the loop away from the consumer; stay in
        // the group through one of reasonable length.
        .set("max.poll.interval.ms", "600000")
        .set("session.timeout.ms", "10000")
        .set("socket.keepalive.enable", "true");
    for (key, value) in &options.overrides {
        config.set(key, value);
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&options.topic])?;
    Ok(consumer)
}

/// Runs the archiver until `shutdown` is cancelled: it then finishes and
/// commits the batch in hand (if the store takes it) and leaves the group.
pub async fn run(
    options: ArchiveOptions,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), ArchiveError> {
    // A group consumer subscribed to a topic that does not exist yet only
    // notices it at the next metadata refresh (minutes): make sure it exists.
    let mut backoff = FIRST_BACKOFF;
    loop {
        match switchboard_journal::ensure_topic(
            &options.brokers,
            &options.topic,
            options.partitions,
            options.replication,
        )
        .await
        {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, topic = %options.topic, "cannot reach Kafka to check the topic; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    let consumer = consumer(&options)?;
    tracing::info!(topic = %options.topic, group = %options.group, batch = options.batch, "archiver started");
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = read_batch(&consumer, &options) => batch,
        };
        if batch.len() == 0 {
            continue;
        }
        if !write_with_retry(store.as_ref(), &batch, &shutdown).await {
            break;
        }
        match batch
            .offsets()
            .and_then(|offsets| consumer.commit(&offsets, CommitMode::Sync))
        {
            Ok(()) => {
                metrics::counter!("switchboard_archive_records_total")
                    .increment(batch.len() as u64);
                tracing::debug!(
                    records = batch.records.len(),
                    dead = batch.dead.len(),
                    "batch archived and committed"
                );
            }
            // Typically a rebalance took the partitions away: the new owner
            // re-reads from the last commit, and the table absorbs it.
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; the batch will be re-read and skipped as duplicates")
            }
        }
    }
    consumer.unsubscribe();
    tracing::info!("archiver stopped");
    Ok(())
}

/// Reads up to `options.batch` records, waiting at most `options.linger`
/// after the first one.
async fn read_batch(consumer: &StreamConsumer, options: &ArchiveOptions) -> Batch {
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    while batch.len() < options.batch {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, consumer.recv())
                    .await
                    .ok(),
                None => Some(consumer.recv().await),
            }
        };
        match next.await {
            None => break,
            Some(Ok(msg)) => {
                batch.add(&msg);
                deadline.get_or_insert_with(|| Instant::now() + options.linger);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                if batch.len() > 0 {
                    break;
                }
                tokio::time::sleep(FIRST_BACKOFF).await;
            }
        }
    }
    batch
}

/// Writes `batch` until the store takes it; false only when shutdown came
/// first (the batch is then left uncommitted, to be re-read).
async fn write_with_retry(store: &dyn Store, batch: &Batch, shutdown: &CancellationToken) -> bool {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        match store.archive(&batch.records, &batch.dead).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(attempt, "store is back; batch archived");
                }
                return true;
            }
            Err(e) => {
                metrics::counter!("switchboard_archive_retries_total").increment(1);
                tracing::warn!(error = %e, attempt, retry_in_ms = backoff.as_millis() as u64, records = batch.len(), "archiving a batch failed; retrying the same batch");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        }
    }
}
