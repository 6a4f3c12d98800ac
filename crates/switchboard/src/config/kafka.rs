//! The Kafka journal's and the archiver's settings: KAFKA_* and ARCHIVE_*.

use std::time::Duration;

use switchboard_archive::ArchiveOptions;

use super::{ConfigError, invalid};

/// Where every message is produced, and how the archiver reads it back.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port...]`; unset keeps the
    /// embedded journal.
    #[arg(long, env = "KAFKA_BROKERS", global = true)]
    pub kafka_brokers: Option<String>,
    /// The original system's name for KAFKA_BROKERS; used when that is unset.
    #[arg(long, env = "KAFKA_BROKER_URL", hide = true, global = true)]
    pub kafka_broker_url: Option<String>,
    /// Kafka topic messages are produced to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "messages", global = true)]
    pub kafka_topic: String,
    /// Kafka topic presence changes are produced to, for `switchboard
    /// hooks`; unset: none are produced.
    #[arg(long, env = "KAFKA_EVENTS_TOPIC", global = true)]
    pub kafka_events_topic: Option<String>,
    /// Partitions of the journal topic when a node creates it.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6, global = true)]
    pub kafka_partitions: i32,
    /// Replication factor of the journal topic when a node creates it.
    #[arg(long, env = "KAFKA_REPLICATION", default_value_t = 1, global = true)]
    pub kafka_replication: i32,
    /// Producer linger: how long a record may wait to share a request.
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = 5, global = true)]
    pub kafka_linger_ms: u64,
    /// Producer compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, env = "KAFKA_COMPRESSION", default_value = "lz4", global = true)]
    pub kafka_compression: String,
    /// Further librdkafka settings, `key=value[,key=value...]`, applied last.
    #[arg(long, env = "KAFKA_CONFIG", global = true)]
    pub kafka_config: Option<String>,
    /// Consumer group of the archivers.
    #[arg(
        long,
        env = "ARCHIVE_GROUP",
        default_value = "switchboard-archive",
        global = true
    )]
    pub archive_group: String,
    /// Records per archive batch at most.
    #[arg(long, env = "ARCHIVE_BATCH", default_value_t = 1000, global = true)]
    pub archive_batch: usize,
    /// How long an archive batch waits to fill, in milliseconds.
    #[arg(long, env = "ARCHIVE_LINGER_MS", default_value_t = 50, global = true)]
    pub archive_linger_ms: u64,
}

/// Whether `name` is a valid Kafka topic name.
fn topic_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl KafkaArgs {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(brokers) = self.kafka_brokers() {
            let ok = brokers.split(',').all(|b| {
                let b = b.trim();
                let b = b.strip_prefix("kafka://").unwrap_or(b);
                matches!(b.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
            });
            if !ok {
                return Err(invalid(
                    "KAFKA_BROKERS",
                    "a comma-separated list of host:port",
                ));
            }
        }
        if self.kafka_partitions < 1 {
            return Err(invalid("KAFKA_PARTITIONS", "at least 1"));
        }
        if self.kafka_replication < 1 {
            return Err(invalid("KAFKA_REPLICATION", "at least 1"));
        }
        if !matches!(
            self.kafka_compression.as_str(),
            "none" | "gzip" | "snappy" | "lz4" | "zstd"
        ) {
            return Err(invalid(
                "KAFKA_COMPRESSION",
                "one of none, gzip, snappy, lz4, zstd",
            ));
        }
        if let Some(extra) = &self.kafka_config
            && self.kafka_overrides_from(extra).is_none()
        {
            return Err(invalid(
                "KAFKA_CONFIG",
                "key=value pairs separated by commas",
            ));
        }
        if self.archive_group.is_empty() {
            return Err(invalid("ARCHIVE_GROUP", "a non-empty consumer group name"));
        }
        if self.archive_batch == 0 || self.archive_batch > 100_000 {
            return Err(invalid("ARCHIVE_BATCH", "1 to 100000"));
        }
        if !topic_ok(&self.kafka_topic) {
            return Err(invalid(
                "KAFKA_TOPIC",
                "1-249 characters from A-Z a-z 0-9 . _ -",
            ));
        }
        if let Some(events) = &self.kafka_events_topic {
            if !topic_ok(events) {
                return Err(invalid(
                    "KAFKA_EVENTS_TOPIC",
                    "1-249 characters from A-Z a-z 0-9 . _ -",
                ));
            }
            if *events == self.kafka_topic {
                return Err(invalid(
                    "KAFKA_EVENTS_TOPIC",
                    "a topic other than KAFKA_TOPIC",
                ));
            }
        }
        Ok(())
    }

    fn kafka_overrides_from(&self, extra: &str) -> Option<Vec<(String, String)>> {
        extra
            .split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=')?;
                let k = k.trim();
                (!k.is_empty()).then(|| (k.to_owned(), v.trim().to_owned()))
            })
            .collect()
    }

    /// librdkafka producer settings from KAFKA_LINGER_MS, KAFKA_COMPRESSION
    /// and KAFKA_CONFIG.
    pub fn kafka_overrides(&self) -> Vec<(String, String)> {
        let mut all = vec![
            ("linger.ms".to_owned(), self.kafka_linger_ms.to_string()),
            (
                "compression.type".to_owned(),
                self.kafka_compression.clone(),
            ),
        ];
        all.extend(self.kafka_extra());
        all
    }

    /// The settings of KAFKA_CONFIG alone (for the archiver's consumer).
    pub fn kafka_extra(&self) -> Vec<(String, String)> {
        self.kafka_config
            .as_deref()
            .and_then(|extra| self.kafka_overrides_from(extra))
            .unwrap_or_default()
    }

    /// Bootstrap brokers without a `kafka://` scheme.
    pub fn kafka_bootstrap(&self) -> Option<String> {
        self.kafka_brokers().map(|b| {
            b.split(',')
                .map(|s| s.trim().trim_start_matches("kafka://"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// KAFKA_BROKERS, else KAFKA_BROKER_URL.
    pub fn kafka_brokers(&self) -> Option<String> {
        self.kafka_brokers
            .clone()
            .or_else(|| self.kafka_broker_url.clone())
    }

    /// The archiver's settings, when KAFKA_BROKERS names the topic's brokers.
    pub fn archive_options(&self) -> Option<ArchiveOptions> {
        Some(ArchiveOptions {
            brokers: self.kafka_bootstrap()?,
            topic: self.kafka_topic.clone(),
            events_topic: None,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            group: self.archive_group.clone(),
            batch: self.archive_batch,
            linger: Duration::from_millis(self.archive_linger_ms),
            overrides: self.kafka_extra(),
        })
    }
}
