//! The Kafka journal: every node produces each accepted message once to the
//! journal topic (key = room, so a room's messages keep their order within a
//! partition); the sender is acked when Kafka acknowledged the record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use switchboard_protocol::{Message, PresenceChange, PresenceEvent, now_ms};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::record::PresenceRecord;
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
    /// Where presence changes go (`KAFKA_EVENTS_TOPIC`); none when unset.
    pub events_topic: Option<String>,
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
    events_topic: Option<String>,
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
            events_topic: options.events_topic,
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
    let mut events_ready = false;
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
        let mut state = match found {
            Ok(true) => Ok(()),
            Ok(false) => create_topic(&admin, &options, &options.topic).await,
            Err(e) => Err(e.to_string()),
        };
        if state.is_ok()
            && !events_ready
            && let Some(events) = &options.events_topic
        {
            state = create_topic(&admin, &options, events).await;
            events_ready = state.is_ok();
        }
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
        events_topic: None,
        partitions,
        replication,
        node_id: String::new(),
        overrides: Vec::new(),
    };
    create_topic(&admin, &options, topic).await
}

/// Creates `name` with the partitions and replication of `options` unless
/// it exists.
async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    options: &KafkaOptions,
    name: &str,
) -> Result<(), String> {
    let topic = NewTopic::new(
        name,
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
                tracing::info!(topic = %name, partitions = options.partitions, "created the topic")
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

    fn queued(&self) -> usize {
        usize::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    fn presence(&self, change: &PresenceChange) {
        let Some(topic) = &self.events_topic else {
            return;
        };
        if change.event == PresenceEvent::Count || self.stop.is_cancelled() {
            return;
        }
        let record = PresenceRecord {
            key: Uuid::now_v7().to_string(),
            event: change.event,
            room: change.room.clone(),
            name: change.name.clone().unwrap_or_default(),
            count: change.count,
            ts: now_ms(),
            node: self.node_id.clone(),
        };
        let payload = record.encode();
        let sent = self.producer.send_result(
            FutureRecord::to(topic)
                .key(change.room.as_str())
                .payload(&payload),
        );
        let failed = |error: String| {
            metrics::counter!("switchboard_presence_events_total", "result" => "failed")
                .increment(1);
            // Logged at the 1st, 2nd, 4th, 8th... failure.
            let n = PRESENCE_FAILURES.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(%error, failures = n, "a presence change could not be produced to the events topic");
            }
        };
        match sent {
            Ok(delivery) => {
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => {
                            metrics::counter!("switchboard_presence_events_total", "result" => "produced")
                                .increment(1);
                        }
                        Ok(Err((e, _))) => failed(e.to_string()),
                        Err(_) => failed("the producer closed".into()),
                    }
                });
            }
            Err((e, _)) => failed(e.to_string()),
        }
    }
}

/// Presence changes the broker did not take (for sampled logging).
static PRESENCE_FAILURES: AtomicU64 = AtomicU64::new(0);
