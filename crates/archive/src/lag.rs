//! How far the archive is behind the journal: for each partition of the
//! topic, its high watermark less the group's committed offset. Read every
//! five seconds by a thread of its own, with a consumer that does not join
//! the group (it only asks for the group's offsets), so slow answers from
//! the broker never hold up archiving. Exported as
//! `switchboard_archive_partition_lag_records{partition}` and their sum
//! `switchboard_archive_lag_records`; started only when the archiver serves
//! metrics (`METRICS_ADDR`).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::ArchiveOptions;

/// How often the lag is read.
const EVERY: Duration = Duration::from_secs(5);
/// How long one request may take.
const ASK: Duration = Duration::from_secs(2);

/// Starts the thread that reads the group's lag until `shutdown`.
pub fn watch_lag(options: &ArchiveOptions, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false");
    for (key, value) in &options.overrides {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().map_err(std::io::Error::other)?;
    let topic = options.topic.clone();
    std::thread::Builder::new()
        .name("archive-lag".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                report(&consumer, &topic);
                std::thread::sleep(EVERY);
            }
        })?;
    Ok(())
}

/// Sets the gauges from one reading; leaves them as they were when the
/// broker does not answer.
fn report(consumer: &BaseConsumer, topic: &str) {
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), ASK) else {
        return;
    };
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return;
    };
    let mut list = TopicPartitionList::new();
    for p in t.partitions() {
        list.add_partition(topic, p.id());
    }
    let Ok(committed) = consumer.committed_offsets(list, ASK) else {
        return;
    };
    let mut total = 0;
    for e in committed.elements() {
        let Ok((low, high)) = consumer.fetch_watermarks(topic, e.partition(), ASK) else {
            return;
        };
        let next = match e.offset() {
            Offset::Offset(n) => n.max(low),
            _ => low,
        };
        let lag = (high - next).max(0);
        total += lag;
        metrics::gauge!("switchboard_archive_partition_lag_records", "partition" => e.partition().to_string())
            .set(lag as f64);
    }
    metrics::gauge!("switchboard_archive_lag_records").set(total as f64);
}
