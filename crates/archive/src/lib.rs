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

pub mod beat;
pub mod hooks;
mod lag;

pub use lag::{Lag, LagOf, LagView, watch_lag};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_journal::record::{self, PresenceRecord};
use switchboard_store::{Archived, DeadLetter, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait between two attempts at a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How long a group member may go without its heartbeat before the
/// coordinator drops it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle archiver looks at its group membership.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long past the session timeout a member waits for an assignment
/// before it leaves and joins again (see [`Membership`]).
const REJOIN_MARGIN: Duration = Duration::from_secs(3);
/// The longest wait between two rejoins of a member without partitions.
const MAX_REJOIN_WAIT: Duration = Duration::from_secs(300);

/// Records the sink of this process took (for its heartbeat).
static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Settings of the archiver.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The journal topic.
    pub topic: String,
    /// The presence changes' topic, read as well (`switchboard hooks`
    /// with `KAFKA_EVENTS_TOPIC`).
    pub events_topic: Option<String>,
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

impl ArchiveOptions {
    /// The topics read: the journal's, and the events topic when set.
    pub fn topics(&self) -> Vec<String> {
        std::iter::once(self.topic.clone())
            .chain(self.events_topic.clone())
            .collect()
    }
}

/// Why the archiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The consumer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// One batch read from the topic, decoded, in each partition's order.
#[derive(Default)]
pub struct Batch {
    /// The records that decoded.
    pub records: Vec<Archived>,
    /// The presence changes read from the events topic, in order.
    pub presence: Vec<PresenceRecord>,
    /// The records that did not.
    pub dead: Vec<DeadLetter>,
    /// The next offset to commit, per partition.
    next: HashMap<(String, i32), i64>,
}

/// Where a consumer of the journal puts each batch: the store (the
/// archiver), webhooks (`switchboard hooks`). The batch's offsets are
/// committed once the sink has taken it.
pub trait Sink: Send + Sync {
    /// What the consumer is called in logs.
    fn name(&self) -> &'static str;

    /// Takes `batch` for good: true once it is done with it; false only
    /// when `shutdown` came first (the batch is then left uncommitted, to be
    /// read again).
    fn take(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> impl std::future::Future<Output = bool> + Send;
}

/// The archiver's sink: the store, retried until it takes the batch.
struct StoreSink(Arc<dyn Store>);

impl Sink for StoreSink {
    fn name(&self) -> &'static str {
        "archiver"
    }

    async fn take(&self, batch: &Batch, shutdown: &CancellationToken) -> bool {
        let started = Instant::now();
        let taken = write_with_retry(self.0.as_ref(), batch, shutdown).await;
        if taken {
            metrics::counter!("switchboard_archive_records_total").increment(batch.len() as u64);
            metrics::histogram!("switchboard_archive_batch_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        taken
    }
}

impl Batch {
    /// Records in the batch, decoded or not.
    pub fn len(&self) -> usize {
        self.records.len() + self.presence.len() + self.dead.len()
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one record: a presence change when it comes from
    /// `events_topic`, else a message.
    fn add(&mut self, msg: &BorrowedMessage<'_>, events_topic: Option<&str>) {
        let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
        self.next.insert((topic.clone(), partition), offset + 1);
        let Some(payload) = msg.payload() else {
            return self.add_dead(msg, topic, "record has no value".to_owned());
        };
        if events_topic == Some(topic.as_str()) {
            match PresenceRecord::decode(payload) {
                Ok(change) => self.presence.push(change),
                Err(error) => self.add_dead(msg, topic, error),
            }
            return;
        }
        match record::decode(payload) {
            Ok((message, node)) => self.records.push(Archived {
                message,
                node,
                partition,
                offset,
            }),
            Err(error) => self.add_dead(msg, topic, error),
        }
    }

    fn add_dead(&mut self, msg: &BorrowedMessage<'_>, topic: String, error: String) {
        let (partition, offset) = (msg.partition(), msg.offset());
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

    fn offsets(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &self.next {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        Ok(list)
    }
}

/// The archiver's group consumer.
pub type ArchiveConsumer = StreamConsumer;

/// Watches whether the consumer holds partitions, and says when to leave
/// the group and join it again.
///
/// A member restarted right after a crash joins a group that still lists
/// its dead predecessor. Kafka's coordinator expires the dead member on a
/// timer and rebalances. The bundled broker (tansu 0.6) expires members
/// only when a request arrives, and when that request is the new member's
/// SyncGroup it settles the group with an empty assignment: the restarted
/// archiver held no partition, for good (docs/reliability.md). So a member
/// without partitions for the session timeout plus a margin leaves and
/// joins again; that JoinGroup comes after the dead member's session
/// ended, and the group rebalances. An archiver that has no partition
/// because the group has more members than the topic has partitions would
/// rejoin in vain; the wait doubles each time (up to five minutes) so such
/// a member disturbs the group rarely.
struct Membership {
    unassigned_since: Option<Instant>,
    patience: Duration,
    first_patience: Duration,
}

impl Membership {
    fn new(session_timeout: Duration) -> Self {
        let first_patience = session_timeout + REJOIN_MARGIN;
        Self {
            unassigned_since: Some(Instant::now()),
            patience: first_patience,
            first_patience,
        }
    }

    /// Whether to rejoin now, given how many partitions the consumer holds.
    fn should_rejoin(&mut self, partitions: usize) -> bool {
        if partitions > 0 {
            self.unassigned_since = None;
            self.patience = self.first_patience;
            return false;
        }
        let since = *self.unassigned_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.patience {
            return false;
        }
        self.unassigned_since = Some(Instant::now());
        self.patience = (self.patience * 2).min(MAX_REJOIN_WAIT);
        true
    }
}

/// Creates the group consumer for `options`.
pub fn consumer(options: &ArchiveOptions) -> Result<ArchiveConsumer, ArchiveError> {
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
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set("socket.keepalive.enable", "true");
    for (key, value) in &options.overrides {
        config.set(key, value);
    }
    let consumer: ArchiveConsumer = config.create()?;
    let topics = options.topics();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(consumer)
}

/// Runs the archiver until `shutdown` is cancelled: it then finishes and
/// commits the batch in hand (if the store takes it) and leaves the group.
pub async fn run(
    options: ArchiveOptions,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), ArchiveError> {
    consume(options, StoreSink(store), shutdown).await
}

/// Reads the journal topic in `options.group` and hands each batch to
/// `sink`, committing its offsets once the sink has taken it, until
/// `shutdown`.
pub async fn consume(
    options: ArchiveOptions,
    sink: impl Sink,
    shutdown: CancellationToken,
) -> Result<(), ArchiveError> {
    // A group consumer subscribed to a topic that does not exist yet only
    // notices it at the next metadata refresh (minutes): make sure it exists.
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut ensured = Ok(());
        for topic in options.topics() {
            ensured = switchboard_journal::ensure_topic(
                &options.brokers,
                &topic,
                options.partitions,
                options.replication,
            )
            .await;
            if ensured.is_err() {
                break;
            }
        }
        match ensured {
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
    let mut consumer = consumer(&options)?;
    tracing::info!(topic = %options.topic, group = %options.group, batch = options.batch, consumer = sink.name(), "started");
    let mut membership = Membership::new(session_timeout(&options));
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = read_batch(&consumer, &options) => batch,
        };
        if batch.is_empty() {
            // Idle for a second (never in the middle of a batch: records
            // read are always written): does the consumer hold partitions?
            let partitions = consumer.assignment().map_or(0, |a| a.count());
            if membership.should_rejoin(partitions) {
                tracing::warn!(
                    "no partitions assigned for longer than the session timeout; leaving and joining the group again"
                );
                consumer.unsubscribe();
                drop(consumer);
                consumer = self::consumer(&options)?;
            }
            continue;
        }
        if !sink.take(&batch, &shutdown).await {
            break;
        }
        TAKEN.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        match batch
            .offsets()
            .and_then(|offsets| consumer.commit(&offsets, CommitMode::Sync))
        {
            Ok(()) => {
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
    tracing::info!(consumer = sink.name(), "stopped");
    Ok(())
}

/// `session.timeout.ms` as configured (KAFKA_CONFIG may override ours).
fn session_timeout(options: &ArchiveOptions) -> Duration {
    options
        .overrides
        .iter()
        .rev()
        .find(|(key, _)| key == "session.timeout.ms")
        .and_then(|(_, value)| value.parse().ok())
        .map_or(SESSION_TIMEOUT, Duration::from_millis)
}

/// Reads up to `options.batch` records, waiting at most `options.linger`
/// after the first one; empty after a second without any.
async fn read_batch(consumer: &ArchiveConsumer, options: &ArchiveOptions) -> Batch {
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    while batch.len() < options.batch {
        let next = async {
            let until = deadline.unwrap_or_else(|| Instant::now() + IDLE_CHECK);
            tokio::time::timeout_at(until, consumer.recv()).await.ok()
        };
        match next.await {
            None => break,
            Some(Ok(msg)) => {
                batch.add(&msg, options.events_topic.as_deref());
                deadline.get_or_insert_with(|| Instant::now() + options.linger);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                if !batch.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_member_without_partitions_rejoins_after_the_session_timeout_then_less_often() {
        let mut m = Membership::new(Duration::from_secs(10));
        assert!(!m.should_rejoin(0));
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(!m.should_rejoin(0), "within the session timeout and margin");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(m.should_rejoin(0), "13 s without partitions");
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!m.should_rejoin(0), "the second wait is twice as long");
        tokio::time::advance(Duration::from_secs(13)).await;
        assert!(m.should_rejoin(0));
        // Partitions reset it.
        assert!(!m.should_rejoin(6));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!m.should_rejoin(3));
        assert!(!m.should_rejoin(0), "the clock starts again when they go");
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(m.should_rejoin(0));
    }
}
