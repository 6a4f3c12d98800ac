//! How far the archive is behind the journal: for each partition of the
//! topic, its high watermark less the group's committed offset. Read every
//! five seconds by a thread of its own, with a consumer that does not join
//! the group (it only asks for the group's offsets), so slow answers from
//! the broker never hold up archiving. Exported as
//! `switchboard_archive_partition_lag_records{partition}` and their sum
//! `switchboard_archive_lag_records`; started only when the archiver serves
//! metrics (`METRICS_ADDR`). `switchboard hooks` reads its group's the same
//! way, over the journal and events topics, as
//! `switchboard_hooks_partition_lag_records{partition="topic:n"}` and
//! `switchboard_hooks_lag_records`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::ArchiveOptions;

/// How often the lag is read.
const EVERY: Duration = Duration::from_secs(5);
/// How long one request may take.
const ASK: Duration = Duration::from_secs(2);

/// Whose lag is read: the archivers' group or the hooks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagOf {
    Archive,
    Hooks,
}

/// The latest reading: each partition's lag (`topic:partition`) and
/// their sum; empty until the first answer.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    pub partitions: BTreeMap<String, i64>,
    pub total: i64,
}

/// Where the thread keeps its latest reading (for the heartbeat).
pub type LagView = Arc<Mutex<Lag>>;

/// Reads the latest reading of `view`.
pub fn latest(view: &LagView) -> Lag {
    view.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Starts the thread that reads the group's lag on every topic of
/// `options` until `shutdown`; its readings go to the gauges and to the
/// returned view.
pub fn watch_lag(
    options: &ArchiveOptions,
    of: LagOf,
    shutdown: CancellationToken,
) -> std::io::Result<LagView> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false");
    for (key, value) in &options.overrides {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().map_err(std::io::Error::other)?;
    let topics = options.topics();
    let view = LagView::default();
    let latest = view.clone();
    std::thread::Builder::new()
        .name("consumer-lag".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                let mut reading = Lag::default();
                for topic in &topics {
                    if report(&consumer, topic, of, &mut reading).is_none() {
                        break;
                    }
                }
                let total = reading.total;
                *latest.lock().unwrap_or_else(PoisonError::into_inner) = reading;
                match of {
                    LagOf::Archive => {
                        metrics::gauge!("switchboard_archive_lag_records").set(total as f64)
                    }
                    LagOf::Hooks => {
                        metrics::gauge!("switchboard_hooks_lag_records").set(total as f64)
                    }
                }
                std::thread::sleep(EVERY);
            }
        })?;
    Ok(view)
}

/// Sets the partitions' gauges of `topic` from one reading and adds them
/// to `reading`; `None` (the gauges left as they were) when the broker
/// does not answer.
fn report(consumer: &BaseConsumer, topic: &str, of: LagOf, reading: &mut Lag) -> Option<()> {
    let metadata = consumer.fetch_metadata(Some(topic), ASK).ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    let mut list = TopicPartitionList::new();
    for p in t.partitions() {
        list.add_partition(topic, p.id());
    }
    let committed = consumer.committed_offsets(list, ASK).ok()?;
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, e.partition(), ASK).ok()?;
        let next = match e.offset() {
            Offset::Offset(n) => n.max(low),
            _ => low,
        };
        let lag = (high - next).max(0);
        reading.total += lag;
        reading
            .partitions
            .insert(format!("{topic}:{}", e.partition()), lag);
        let partition = match of {
            LagOf::Archive => e.partition().to_string(),
            LagOf::Hooks => format!("{topic}:{}", e.partition()),
        };
        match of {
            LagOf::Archive => metrics::gauge!("switchboard_archive_partition_lag_records", "partition" => partition)
                .set(lag as f64),
            LagOf::Hooks => metrics::gauge!("switchboard_hooks_partition_lag_records", "partition" => partition)
                .set(lag as f64),
        }
    }
    Some(())
}
