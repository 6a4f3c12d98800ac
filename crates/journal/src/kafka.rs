//! The Kafka journal: every node produces each accepted message once to the
//! journal topic (key = room, so a room's messages keep their order within a
//! partition); the sender is acked when Kafka acknowledged the record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use switchboard_protocol::Message;
use tokio_util::sync::CancellationToken;

use crate::{Journal, JournalError, record};

/// How often the journal checks that Kafka is reachable and the topic exists.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Settings of a [`KafkaJournal`].
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// The journal topic.
    pub topic: String,
    /// Partitions of the topic when this node creates it.
    pub partitions: i32,
    /// Replication factor of the topic when this node creates it.
    pub replication: i32,
    /// This node's id, stored with each record.
    pub node_id: String,
    /// librdkafka producer settings; the defaults (idempotence, `acks=all`,
    /// linger, compression, a bounded queue) are set by [`KafkaOptions::producer_config`]
    /// and can be overridden here.
    pub overrides: Vec<(String, String)>,
}

impl KafkaOptions {
    /// The producer configuration: durable and ordered defaults, then the overrides.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // The in-flight bound: past it a send fails at once (QueueFull).
            .set("queue.buffering.max.messages", "100000")
            .set("message.timeout.ms", "30000")
            .set("socket.keepalive.enable", "true");
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }
}

/// A [`Journal`] that produces to Kafka.
pub struct KafkaJournal {
    producer: FutureProducer,
    topic: String,
    node_id: String,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl KafkaJournal {
    /// Creates the producer and starts the probe that creates the topic when
    /// missing and tracks readiness. It does not wait for Kafka: a node may
    /// start while Kafka is down.
    pub fn start(options: KafkaOptions, shutdown: &CancellationToken) -> Result<Self, KafkaError> {
        let producer: FutureProducer = options.producer_config().create()?;
        let admin: AdminClient<DefaultClientContext> = options.producer_config().create()?;
        let ready = Arc::new(AtomicBool::new(false));
        let stop = shutdown.child_token();
        tokio::spawn(probe(
            producer.clone(),
            admin,
            options.clone(),
            ready.clone(),
            stop.clone(),
        ));
        Ok(Self {
            producer,
            topic: options.topic,
            node_id: options.node_id,
            ready,
            stop,
        })
    }
}

/// Keeps `ready` true while the brokers answer and the topic exists, and
/// creates the topic when it does not.
async fn probe(
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    options: KafkaOptions,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut announced = None;
    loop {
        let client = producer.clone();
        let topic = options.topic.clone();
        let found = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(Duration::from_millis(1500)))
                .map(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
        .await
        .unwrap_or(Ok(false));
        let state = match found {
            Ok(true) => Ok(()),
            Ok(false) => create_topic(&admin, &options).await,
            Err(e) => Err(e.to_string()),
        };
        ready.store(state.is_ok(), Ordering::Relaxed);
        if announced.as_ref() != Some(&state) {
            match &state {
                Ok(()) => tracing::info!(topic = %options.topic, "kafka journal ready"),
                Err(e) => {
                    tracing::warn!(error = %e, topic = %options.topic, "kafka journal unavailable; sends are answered `unavailable`")
                }
            }
            announced = Some(state);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// Creates the journal topic when it does not exist (the archiver calls this
/// before subscribing, so it never waits on a topic no node has created yet).
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let options = KafkaOptions {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        partitions,
        replication,
        node_id: String::new(),
        overrides: Vec::new(),
    };
    create_topic(&admin, &options).await
}

async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    options: &KafkaOptions,
) -> Result<(), String> {
    let topic = NewTopic::new(
        &options.topic,
        options.partitions,
        TopicReplication::Fixed(options.replication),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) => {
                tracing::info!(topic = %options.topic, partitions = options.partitions, "created the journal topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("cannot create topic {name}: {code}")),
        }
    }
    Ok(())
}

#[async_trait]
impl Journal for KafkaJournal {
    async fn append(&self, message: Message) -> Result<(), JournalError> {
        if self.stop.is_cancelled() {
            return Err(JournalError::Closed);
        }
        let payload = record::encode(&self.node_id, &message);
        let record = FutureRecord::to(&self.topic)
            .key(message.room.as_str())
            .payload(&payload);
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(JournalError::Full);
            }
            Err((e, _)) => return Err(JournalError::Write(e.to_string())),
        };
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(JournalError::Write(e.to_string())),
            Err(_) => Err(JournalError::Closed),
        }
    }

    async fn close(&self) {
        self.stop.cancel();
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            producer.flush(Timeout::After(Duration::from_secs(5)))
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("kafka journal: not every message was acknowledged before shutdown");
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }
}
