//! How far the archive is behind the journal, per partition this archiver
//! holds: the partition's high watermark less the next offset committed,
//! read at most once a second (a watermark is a request to the broker,
//! made off the async workers). Exported as
//! `switchboard_archive_partition_lag_records{partition}` and their sum
//! `switchboard_archive_lag_records`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use crate::ArchiveConsumer;

#[derive(Default)]
pub(crate) struct Lag {
    /// The next offset committed, per partition.
    committed: HashMap<i32, i64>,
    /// The partitions whose gauge was last set.
    reported: Vec<i32>,
    last: Option<Instant>,
}

/// How often the lag is read at most.
const EVERY: Duration = Duration::from_secs(1);
/// How long one watermark request may take.
const ASK: Duration = Duration::from_millis(500);

impl Lag {
    /// Records the offsets a batch committed.
    pub fn committed(&mut self, next: impl IntoIterator<Item = (i32, i64)>) {
        self.committed.extend(next);
    }

    /// Sets the gauges for the partitions the consumer holds now (at most
    /// once a second).
    pub fn report(&mut self, consumer: &ArchiveConsumer, topic: &str) {
        if self.last.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let held: Vec<i32> = assignment
            .elements_for_topic(topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        self.committed.retain(|p, _| held.contains(p));
        let unknown: Vec<i32> = held
            .iter()
            .filter(|p| !self.committed.contains_key(p))
            .copied()
            .collect();
        if !unknown.is_empty() {
            // Partitions just assigned: their group's committed offsets,
            // asked once (a short blocking request, off the async workers).
            let mut list = TopicPartitionList::new();
            for p in &unknown {
                list.add_partition(topic, *p);
            }
            let committed = blocking(|| consumer.committed_offsets(list, ASK));
            if let Ok(committed) = committed {
                for e in committed.elements() {
                    let next = match e.offset() {
                        Offset::Offset(n) => n,
                        _ => 0,
                    };
                    self.committed.insert(e.partition(), next);
                }
            }
        }
        let mut total = 0;
        for p in &held {
            let watermarks = blocking(|| consumer.fetch_watermarks(topic, *p, ASK));
            let Ok((low, high)) = watermarks else {
                continue;
            };
            let next = self.committed.get(p).copied().unwrap_or(low).max(low);
            let lag = (high - next).max(0);
            total += lag;
            metrics::gauge!("switchboard_archive_partition_lag_records", "partition" => p.to_string())
                .set(lag as f64);
        }
        for gone in self.reported.iter().filter(|p| !held.contains(p)) {
            metrics::gauge!("switchboard_archive_partition_lag_records", "partition" => gone.to_string())
                .set(0.0);
        }
        self.reported = held;
        metrics::gauge!("switchboard_archive_lag_records").set(total as f64);
    }
}

/// Runs a short blocking request off the async workers where the runtime
/// allows it (a multi-threaded one), else in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
