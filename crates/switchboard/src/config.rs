//! The one typed configuration: environment variables (also read from
//! `.env`), overridden by command-line flags. Every default is on its field
//! and in README's configuration table.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use switchboard_gateway::{GatewayConfig, Rate};
use switchboard_protocol::Limits;

mod auth;
mod listener;

pub use auth::{AuthArg, AuthArgs, Secret};
pub use listener::ListenerArgs;

/// `switchboard`: a horizontally scalable real-time messaging server.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about,
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve WebSocket, Socket.IO, HTTP and the chat page (the default).
    Serve,
    /// Apply the store's migrations and exit.
    Migrate,
    /// Archive the journal topic into the store (the consumer service).
    Archive,
    /// Generate load against switchboard or a peer and report what came back.
    Bench(crate::bench::BenchArgs),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, as read from the environment and flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where clients connect, and what crosses the listener.
    #[command(flatten)]
    pub listener: ListenerArgs,
    /// Who may connect, read and publish.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Where messages are stored: unset for the embedded SQLite file
    /// `./switchboard.db`, `sqlite://PATH`, `sqlite::memory:`, or `postgres://`.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// The original system's name for DATABASE_URL; used when that is unset.
    #[arg(long, env = "POSTGRES_URL", hide = true, global = true)]
    pub postgres_url: Option<String>,
    /// Redis for cluster fan-out (`redis://` or `rediss://`); unset runs one node.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Prefix of the Redis channels, so several deployments share one Redis.
    #[arg(
        long,
        env = "REDIS_PREFIX",
        default_value = "switchboard",
        global = true
    )]
    pub redis_prefix: String,
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
    /// This node's name in logs and bus payloads; default hostname:port.
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,
    /// Largest message text, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4096, global = true)]
    pub max_message_bytes: usize,
    /// Largest WebSocket frame, in bytes; a larger one closes the connection (1009).
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 65_536, global = true)]
    pub max_frame_bytes: usize,
    /// Rooms one connection may be in at once.
    #[arg(
        long,
        env = "MAX_ROOMS_PER_CONNECTION",
        default_value_t = 100,
        global = true
    )]
    pub max_rooms_per_connection: usize,
    /// Frames queued for one client before it is dropped as a slow consumer.
    #[arg(
        long,
        env = "CLIENT_QUEUE_FRAMES",
        default_value_t = 1024,
        global = true
    )]
    pub client_queue_frames: usize,
    /// History sent on `join` when the client does not ask for a length.
    #[arg(long, env = "HISTORY_DEFAULT", default_value_t = 50, global = true)]
    pub history_default: u32,
    /// Largest history a `join` or the history API returns.
    #[arg(long, env = "HISTORY_MAX", default_value_t = 500, global = true)]
    pub history_max: u32,
    /// Milliseconds a sender waits for durability before `unavailable`.
    #[arg(long, env = "ACK_TIMEOUT_MS", default_value_t = 5000, global = true)]
    pub ack_timeout_ms: u64,
    /// Do not apply the store's migrations at start (run `switchboard migrate` instead).
    #[arg(long, global = true)]
    pub no_migrate: bool,
    /// Connections one node holds at most (0: no cap).
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        default_value_t = 100_000,
        global = true
    )]
    pub max_connections: usize,
    /// New connections per second from one client address (0: no limit);
    /// bursts of twice this pass.
    #[arg(
        long,
        env = "CONNECT_RATE_PER_IP",
        default_value_t = 100,
        global = true
    )]
    pub connect_rate_per_ip: u32,
    /// Messages per second one connection may send (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 20, global = true)]
    pub rate_limit_per_sec: u32,
    /// Messages one connection may send at once before the rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 40, global = true)]
    pub rate_limit_burst: u32,
    /// Milliseconds of silence after which a connection is pinged.
    #[arg(
        long,
        env = "PING_INTERVAL_MS",
        default_value_t = 25_000,
        global = true
    )]
    pub ping_interval_ms: u64,
    /// Milliseconds of silence (pongs included) after which a connection is closed.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000, global = true)]
    pub idle_timeout_ms: u64,
    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// A setting that parsed but makes no sense; exits 64 naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {expected}")]
pub struct ConfigError {
    /// The environment variable (flags have the same name in kebab case).
    pub var: &'static str,
    /// What was expected instead.
    pub expected: String,
}

fn invalid(var: &'static str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        expected: expected.into(),
    }
}

/// Where messages are stored, resolved from DATABASE_URL / POSTGRES_URL.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://switchboard.db";

impl Config {
    /// Checks every value and its relation to the others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database_url();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "DATABASE_URL",
                "a postgres://, sqlite://PATH or sqlite::memory: URL",
            ));
        }
        if db.starts_with("postgres") && url::Url::parse(&db).map_or(true, |u| u.host().is_none()) {
            return Err(invalid(
                "DATABASE_URL",
                "a postgres://USER@HOST[:PORT]/DB URL",
            ));
        }
        if let Some(redis) = &self.redis_url {
            match url::Url::parse(redis) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {}
                _ => {
                    return Err(invalid(
                        "REDIS_URL",
                        "a redis://HOST[:PORT][/DB] or rediss:// URL",
                    ));
                }
            }
        }
        if !switchboard_bus::valid_prefix(&self.redis_prefix) {
            return Err(invalid(
                "REDIS_PREFIX",
                "1-64 characters from A-Z a-z 0-9 _ . - (no `:`, so channel names of two deployments cannot collide)",
            ));
        }
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
        let topic_ok = !self.kafka_topic.is_empty()
            && self.kafka_topic.len() <= 249
            && self
                .kafka_topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !topic_ok {
            return Err(invalid(
                "KAFKA_TOPIC",
                "1-249 characters from A-Z a-z 0-9 . _ -",
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(invalid("MAX_MESSAGE_BYTES", "a positive number of bytes"));
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes < self.max_message_bytes {
            return Err(invalid(
                "MAX_FRAME_BYTES",
                "at least 1024 and at least MAX_MESSAGE_BYTES",
            ));
        }
        if self.max_rooms_per_connection == 0 {
            return Err(invalid("MAX_ROOMS_PER_CONNECTION", "at least 1"));
        }
        if self.client_queue_frames == 0 {
            return Err(invalid("CLIENT_QUEUE_FRAMES", "at least 1"));
        }
        if self.history_default > self.history_max {
            return Err(invalid("HISTORY_DEFAULT", "at most HISTORY_MAX"));
        }
        if self.ack_timeout_ms == 0 {
            return Err(invalid(
                "ACK_TIMEOUT_MS",
                "a positive number of milliseconds",
            ));
        }
        if let Some(node) = &self.node_id
            && (node.is_empty() || node.len() > 128)
        {
            return Err(invalid("NODE_ID", "1-128 characters"));
        }
        if self.ping_interval_ms == 0 {
            return Err(invalid(
                "PING_INTERVAL_MS",
                "a positive number of milliseconds",
            ));
        }
        if self.idle_timeout_ms <= self.ping_interval_ms {
            return Err(invalid("IDLE_TIMEOUT_MS", "more than PING_INTERVAL_MS"));
        }
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst == 0 {
            return Err(invalid(
                "RATE_LIMIT_BURST",
                "at least 1 when RATE_LIMIT_PER_SEC is set",
            ));
        }
        self.listener.validate()?;
        self.auth_config().map(|_| ())
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

    /// DATABASE_URL, else POSTGRES_URL, else the embedded file.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| self.postgres_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
    }

    /// KAFKA_BROKERS, else KAFKA_BROKER_URL.
    pub fn kafka_brokers(&self) -> Option<String> {
        self.kafka_brokers
            .clone()
            .or_else(|| self.kafka_broker_url.clone())
    }

    /// NODE_ID, else hostname:port.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "switchboard".into());
            format!("{host}:{}", self.listener.port)
        })
    }

    /// The gateway's part of the configuration.
    pub fn gateway(&self) -> Result<GatewayConfig, ConfigError> {
        Ok(GatewayConfig {
            node_id: self.node_id(),
            limits: Limits {
                max_message_bytes: self.max_message_bytes,
                history_default: self.history_default,
                history_max: self.history_max,
            },
            max_frame_bytes: self.max_frame_bytes,
            max_rooms_per_connection: self.max_rooms_per_connection,
            client_queue_frames: self.client_queue_frames,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            auth: self.auth_config()?,
            max_connections: self.max_connections,
            connect_rate_per_ip: (self.connect_rate_per_ip > 0).then(|| Rate {
                per_second: self.connect_rate_per_ip,
                burst: self.connect_rate_per_ip.saturating_mul(2),
            }),
            send_rate: Rate {
                per_second: self.rate_limit_per_sec,
                burst: self.rate_limit_burst,
            },
            handshake_timeout: Duration::from_millis(self.listener.handshake_timeout_ms),
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_body_bytes: self.listener.max_body_bytes,
            max_http_connections: self.listener.max_http_connections,
            http_connections_per_ip: self.listener.http_connections_per_ip,
            trusted_proxies: self.listener.trusted_proxies()?,
            metrics_public: self.metrics_public(),
            ..GatewayConfig::default()
        })
    }
}

#[cfg(test)]
mod tests;
