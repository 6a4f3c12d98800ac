//! The one typed configuration: environment variables (also read from
//! `.env`), overridden by command-line flags. Every default is on its field
//! and in README's configuration table.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use switchboard_gateway::{GatewayConfig, Policies, Rate};
use switchboard_protocol::Limits;
use switchboard_store::{Layout, PartitionUnit};

mod auth;
mod cluster;
mod hooks;
mod kafka;
mod limits;
mod listener;

pub use auth::{AuthArg, AuthArgs, Secret};
pub use cluster::ClusterArgs;
pub use hooks::HooksArgs;
pub use kafka::KafkaArgs;
pub use limits::LimitsArgs;
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
    /// POST the journal's events to webhooks (WEBHOOK_URL), signed, at least once.
    Hooks,
    /// Generate load against switchboard or a peer and report what came back.
    Bench(Box<crate::bench::BenchArgs>),
    /// Check the configuration (the policy file included) and exit: 0 when
    /// it is usable, 64 with what is wrong.
    CheckConfig {
        /// The policy file to check; CONFIG_FILE when omitted.
        file: Option<std::path::PathBuf>,
    },
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
    /// Redis, for several nodes.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The Kafka journal and the archiver.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Webhooks from the journal (`switchboard hooks`).
    #[command(flatten)]
    pub hooks: HooksArgs,
    /// What one client may take.
    #[command(flatten)]
    pub limits: LimitsArgs,
    /// Where messages are stored: unset for the embedded SQLite file
    /// `./switchboard.db`, `sqlite://PATH`, `sqlite::memory:`, or `postgres://`.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// The original system's name for DATABASE_URL; used when that is unset.
    #[arg(long, env = "POSTGRES_URL", hide = true, global = true)]
    pub postgres_url: Option<String>,
    /// PostgreSQL's archive: one partition of the messages table per
    /// `day`, `week` or `month`.
    #[arg(long, env = "ARCHIVE_PARTITION", default_value = "day", global = true)]
    pub archive_partition: String,
    /// PostgreSQL's archive: drop the partitions older than this many days;
    /// unset keeps every message.
    #[arg(long, env = "RETENTION_DAYS", global = true)]
    pub retention_days: Option<u32>,
    /// Room policies by namespace: a TOML file (see deploy/switchboard.toml).
    #[arg(long, env = "CONFIG_FILE", global = true)]
    pub config_file: Option<std::path::PathBuf>,
    /// This node's name in logs and bus payloads; default hostname:port.
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,
    /// Do not apply the store's migrations at start (run `switchboard migrate` instead).
    #[arg(long, global = true)]
    pub no_migrate: bool,
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
        if PartitionUnit::parse(&self.archive_partition).is_none() {
            return Err(invalid("ARCHIVE_PARTITION", "day, week or month"));
        }
        if self
            .retention_days
            .is_some_and(|d| !(1..=36_500).contains(&d))
        {
            return Err(invalid(
                "RETENTION_DAYS",
                "1 to 36500 days (unset keeps every message)",
            ));
        }
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
        if let Some(node) = &self.node_id
            && (node.is_empty() || node.len() > 128)
        {
            return Err(invalid("NODE_ID", "1-128 characters"));
        }
        self.limits.validate()?;
        self.cluster.validate()?;
        self.kafka.validate()?;
        self.hooks.validate()?;
        self.listener.validate()?;
        self.policies()?;
        self.auth_config().map(|_| ())
    }

    /// The room policies of CONFIG_FILE, or `None` without one.
    pub fn policies(&self) -> Result<Option<Policies>, ConfigError> {
        let Some(path) = &self.config_file else {
            return Ok(None);
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("CONFIG_FILE", format!("{name}: cannot read it: {e}")))?;
        let bounds = GatewayConfig {
            limits: self.limits(),
            max_frame_bytes: self.limits.max_frame_bytes,
            recovery_max: self.limits.recovery_max,
            ..GatewayConfig::default()
        }
        .policy_bounds();
        Policies::parse(&name, &text, bounds)
            .map(Some)
            .map_err(|e| invalid("CONFIG_FILE", e.to_string()))
    }

    /// The message and history limits.
    fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.limits.max_message_bytes,
            history_default: self.limits.history_default,
            history_max: self.limits.history_max,
        }
    }

    /// How PostgreSQL's archive is partitioned and how long it keeps
    /// messages (ARCHIVE_PARTITION, RETENTION_DAYS).
    pub fn layout(&self) -> Layout {
        Layout {
            unit: PartitionUnit::parse(&self.archive_partition).unwrap_or(PartitionUnit::Day),
            retention_days: self.retention_days,
            ..Layout::default()
        }
    }

    /// DATABASE_URL, else POSTGRES_URL, else the embedded file.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| self.postgres_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
    }

    /// NODE_ID, else hostname:port.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), self.listener.port))
    }

    /// A consumer process's id (`archive`, `hooks`): NODE_ID, else
    /// hostname/pid.
    pub fn process_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("{}/{}", hostname(), std::process::id()))
    }

    /// The gateway's part of the configuration.
    pub fn gateway(&self) -> Result<GatewayConfig, ConfigError> {
        Ok(GatewayConfig {
            node_id: self.node_id(),
            limits: self.limits(),
            max_frame_bytes: self.limits.max_frame_bytes,
            max_rooms_per_connection: self.limits.max_rooms_per_connection,
            client_queue_frames: self.limits.client_queue_frames,
            ack_timeout: Duration::from_millis(self.limits.ack_timeout_ms),
            recovery_max: self.limits.recovery_max,
            recovery_window: self.limits.recovery_window,
            presence_events_max: self.limits.presence_events_max,
            auth: self.auth_config()?,
            max_connections: self.limits.max_connections,
            connect_rate_per_ip: (self.limits.connect_rate_per_ip > 0).then(|| Rate {
                per_second: self.limits.connect_rate_per_ip,
                burst: self.limits.connect_rate_per_ip.saturating_mul(2),
            }),
            send_rate: Rate {
                per_second: self.limits.rate_limit_per_sec,
                burst: self.limits.rate_limit_burst,
            },
            handshake_timeout: Duration::from_millis(self.listener.handshake_timeout_ms),
            ping_interval: Duration::from_millis(self.limits.ping_interval_ms),
            idle_timeout: Duration::from_millis(self.limits.idle_timeout_ms),
            token_warning: Duration::from_millis(self.auth.token_warning_ms),
            max_body_bytes: self.listener.max_body_bytes,
            max_http_connections: self.listener.max_http_connections,
            http_connections_per_ip: self.listener.http_connections_per_ip,
            trusted_proxies: self.listener.trusted_proxies()?,
            metrics_public: self.metrics_public(),
            policies: self.policies()?,
            admin_token: self.admin_token(),
            ..GatewayConfig::default()
        })
    }
}

#[cfg(test)]
mod tests;

/// This machine's name, or `switchboard`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchboard".into())
}
