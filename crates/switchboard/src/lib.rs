//! switchboard's composition root: turns a [`Config`] into running
//! components (store, journal, bus, gateway) and serves until shutdown.
//!
//! `run` takes its listener and shutdown token from the caller, so tests
//! start a node in-process on `127.0.0.1:0`.

pub mod bench;
pub mod config;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_bus::{Bus, MemoryHub, RedisBus, RedisOptions};
use switchboard_gateway::{Gateway, GatewayConfig};
use switchboard_journal::{EmbeddedJournal, Journal, JournalOptions, KafkaJournal, KafkaOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, Command, Config, ConfigError, LogFormat};

/// What a node needs beyond its gateway settings.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The gateway's settings.
    pub gateway: GatewayConfig,
    /// The store URL (`postgres://`, `sqlite://PATH`, `sqlite::memory:`).
    pub database_url: String,
    /// Apply the store's migrations at start.
    pub migrate: bool,
    /// Cluster mode over Redis; `None` runs a single node.
    pub redis: Option<RedisOptions>,
    /// The Kafka journal; `None` keeps the embedded journal.
    pub kafka: Option<KafkaOptions>,
    /// PostgreSQL's archive layout (partitions, retention).
    pub layout: switchboard_store::Layout,
}

impl NodeOptions {
    /// The node options a validated configuration describes.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let gateway = config.gateway()?;
        let redis = config
            .cluster
            .redis_options(&gateway.node_id, gateway.recovery_window);
        let kafka = config.kafka.kafka_bootstrap().map(|brokers| KafkaOptions {
            brokers,
            topic: config.kafka.kafka_topic.clone(),
            events_topic: config.kafka.kafka_events_topic.clone(),
            partitions: config.kafka.kafka_partitions,
            replication: config.kafka.kafka_replication,
            node_id: gateway.node_id.clone(),
            overrides: config.kafka.kafka_overrides(),
        });
        Ok(Self {
            gateway,
            database_url: config.database_url(),
            migrate: !config.no_migrate,
            redis,
            kafka,
            layout: config.layout(),
        })
    }
}

/// Keeps the store's archive layout (partitions ahead, retention) every
/// hour until `shutdown`; the first round ran when the store opened.
pub fn keep_archive(store: Arc<dyn switchboard_store::Store>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3_600));
        every.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            match store.maintain().await {
                Ok(done) if done.created > 0 || !done.dropped.is_empty() => {
                    tracing::info!(created = done.created, dropped = ?done.dropped, "archive partitions kept");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "archive partitions could not be kept; retrying in an hour")
                }
            }
        }
    });
}

/// Runs one node on `listener` until `shutdown` is cancelled, then closes
/// every connection, flushes the journal and returns.
pub async fn run(
    listener: TcpListener,
    options: NodeOptions,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    run_with(listener, None, options, shutdown, metrics).await
}

/// [`run`], with the operators' routes (metrics, stats, health) also on
/// `operators` when given (`METRICS_ADDR`).
pub async fn run_with(
    listener: TcpListener,
    operators: Option<TcpListener>,
    options: NodeOptions,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let store =
        switchboard_store::open_with_layout(&options.database_url, options.migrate, options.layout)
            .await?;
    keep_archive(store.clone(), shutdown.clone());
    let journal: Arc<dyn Journal> = match options.kafka {
        Some(kafka) => Arc::new(KafkaJournal::start(kafka, &shutdown)?),
        None => Arc::new(EmbeddedJournal::start(
            store.clone(),
            JournalOptions::default(),
        )),
    };
    let redis = options.redis;
    let bus_shutdown = shutdown.clone();
    let make_bus = move |inbox| -> anyhow::Result<Arc<dyn Bus>> {
        Ok(match redis {
            Some(redis) => Arc::new(RedisBus::start(redis, inbox, &bus_shutdown)?),
            None => Arc::new(MemoryHub::new().attach(inbox)),
        })
    };
    let gateway = Gateway::new(options.gateway, make_bus, journal, store, shutdown, metrics)?;
    let (bus, journal, store) = gateway.modes();
    tracing::info!(
        address = %listener.local_addr()?,
        node = %gateway.config().node_id,
        bus, journal, store,
        "switchboard listening"
    );
    if let Some(operators) = operators {
        tracing::info!(address = %operators.local_addr()?, "operators' routes listening");
        tokio::spawn(gateway.clone().serve_operators(operators));
    }
    gateway.serve(listener).await?;
    tracing::info!("switchboard stopped");
    Ok(())
}
