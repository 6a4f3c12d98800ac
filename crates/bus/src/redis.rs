//! Cluster fan-out over Redis Pub/Sub.
//!
//! Each room is one channel, `{prefix:room}:ch`; commands for every node
//! (disconnect a user) go through `{prefix}:control`, which every node
//! subscribes to for its whole life. Every message reaches it
//! through the ordering point ([`crate::sequence`]), which publishes it
//! with its position; a node subscribes to a room's channel only while it
//! has local members there (interest-based), so it receives only the
//! traffic of rooms it hosts.
//!
//! Two tasks per node: the publisher (for [`Bus::publish`], messages
//! positioned elsewhere) drains a bounded queue into a
//! reconnecting multiplexed connection, pipelining what queued up; the
//! subscriber owns one dedicated Pub/Sub connection, applies
//! subscribe/unsubscribe commands in order, and on any disconnect reconnects
//! with backoff and re-subscribes every room still wanted. Neither ever makes
//! a client wait: while Redis is away, publishes fail fast and are counted,
//! local delivery and the journal go on, and `is_ready` turns false.
//!
//! On a Redis Cluster ([`crate::target`]) the same holds per shard: the
//! publisher sends one `SPUBLISH` per message, the subscriber is
//! [`crate::shards`] (sharded subscriptions on each room's master), and a
//! watcher follows the slot map.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use switchboard_protocol::{Message, RoomName};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::presence::RedisPresence;
use crate::sequence::{Keys, RedisSequencer, Settings};
use crate::target::{Conn, Target};
use crate::{Bus, Inbox, Presences, Sequencer, envelope};

/// Messages waiting to be published at most; past it they are dropped and
/// counted (real-time fan-out is best-effort; the journal has them).
const PUBLISH_QUEUE: usize = 16_384;
/// PUBLISH commands sent in one pipeline at most.
const PUBLISH_BATCH: usize = 256;
/// How long one Redis operation may take before it counts as failed.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a [`RedisBus`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Channel prefix, so several deployments (or tests) share one Redis.
    pub prefix: String,
    /// This node's id, carried in every payload so a node skips its own.
    pub node_id: String,
    /// Messages each room's window keeps for recovery and gap filling
    /// (`RECOVERY_WINDOW`).
    pub window: usize,
    /// A room's window and position expire after this long without a
    /// message (`RECOVERY_TTL`).
    pub ttl: Duration,
    /// A node that stops beating loses its members from presence within
    /// this long (`PRESENCE_TTL`).
    pub presence_ttl: Duration,
    /// Replicas that must confirm a message's position before it counts
    /// as given (`REDIS_WAIT_REPLICAS`, `WAIT` on the room's master).
    pub wait_replicas: u32,
}

impl RedisOptions {
    /// Options with the default window (1,000 messages per room) and
    /// expiry (24 h).
    pub fn new(
        url: impl Into<String>,
        prefix: impl Into<String>,
        node_id: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            node_id: node_id.into(),
            window: 1_000,
            ttl: Duration::from_secs(24 * 3600),
            presence_ttl: Duration::from_secs(30),
            wait_replicas: 0,
        }
    }
}

/// The bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid Redis URL: {0}")]
    Url(String),
    #[error("invalid channel prefix `{0}`: 1-64 characters from A-Z a-z 0-9 _ . - (no `:`)")]
    Prefix(String),
}

/// Whether `url` names a Redis server or a Redis Cluster the bus can use.
pub fn valid_url(url: &str) -> bool {
    Target::parse(url).is_ok()
}

/// Whether `prefix` keeps channel names apart: it may not contain `:`, so
/// the first `:` of `{prefix}:room:{room}` always ends the prefix, and two
/// deployments (`chat` and `chat:room`, say) can never name one channel
/// for two rooms (`chat` + `room:lobby` and `chat:room` + `lobby`).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(crate) enum Command {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every command before it has taken effect on a live
    /// connection.
    Settled(oneshot::Sender<()>),
}

/// Takes `first` and every command already queued (up to COMMAND_BATCH
/// channels), applies them to `wanted`, and returns the net change:
/// channels to subscribe, channels to unsubscribe, and the `Settled`
/// waiters among them. Join/leave churn then costs one round trip per
/// batch, not per command.
pub(crate) fn net_change(
    first: Command,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut HashSet<String>,
) -> (Vec<String>, Vec<String>, Vec<oneshot::Sender<()>>) {
    let mut touched: HashMap<String, bool> = HashMap::new();
    let mut done = Vec::new();
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            Command::Subscribe(c) => {
                touched
                    .entry(c.clone())
                    .or_insert_with(|| wanted.contains(&c));
                wanted.insert(c);
            }
            Command::Unsubscribe(c) => {
                touched
                    .entry(c.clone())
                    .or_insert_with(|| wanted.contains(&c));
                wanted.remove(&c);
            }
            Command::Settled(tx) => done.push(tx),
        }
        if touched.len() < COMMAND_BATCH {
            next = commands.try_recv().ok();
        }
    }
    let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
    for (channel, before) in touched {
        match (before, wanted.contains(&channel)) {
            (false, true) => subscribe.push(channel),
            (true, false) => unsubscribe.push(channel),
            _ => {}
        }
    }
    (subscribe, unsubscribe, done)
}

/// Waits `backoff` while no connection is up, keeping track of interest
/// changes meanwhile (applied to `wanted`; `Settled` waiters kept for the
/// next connection). False when the bus stops.
pub(crate) async fn wait_tracking(
    backoff: Duration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut HashSet<String>,
    waiting: &mut Vec<oneshot::Sender<()>>,
    stop: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(backoff);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = &mut sleep => return true,
            cmd = commands.recv() => match cmd {
                None => return false,
                Some(Command::Subscribe(c)) => { wanted.insert(c); }
                Some(Command::Unsubscribe(c)) => { wanted.remove(&c); }
                Some(Command::Settled(done)) => waiting.push(done),
            },
        }
    }
}

/// Interest changes applied in one pass at most.
const COMMAND_BATCH: usize = 1_000;

#[derive(Default)]
pub(crate) struct Health {
    pub subscriber_up: AtomicBool,
    /// Reconnects of the subscriber after a loss.
    pub resubscribed: AtomicU64,
    publisher_failing: AtomicBool,
}

/// A node's handle on Redis Pub/Sub. Dropping it (or cancelling the token
/// it was started with) stops its tasks.
pub struct RedisBus {
    target: Target,
    prefix: String,
    node_id: String,
    publish_tx: mpsc::Sender<(String, Vec<u8>)>,
    commands: mpsc::UnboundedSender<Command>,
    health: Arc<Health>,
    sequencer: RedisSequencer,
    presence: RedisPresence,
    _stop: tokio_util::sync::DropGuard,
}

impl RedisBus {
    /// Starts the publisher and subscriber tasks. It does not wait for
    /// Redis: a node may start while Redis is down and becomes ready when it
    /// is up.
    pub fn start(
        options: RedisOptions,
        inbox: Inbox,
        shutdown: &CancellationToken,
    ) -> Result<Self, RedisSetupError> {
        if !valid_prefix(&options.prefix) {
            return Err(RedisSetupError::Prefix(options.prefix));
        }
        let target = Target::parse(&options.url)?;
        let stop = shutdown.child_token();
        let health = Arc::new(Health::default());
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (commands, command_rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(
            target.clone(),
            publish_rx,
            health.clone(),
            stop.clone(),
        ));
        let sequencer = RedisSequencer::new(
            target.clone(),
            Settings {
                prefix: options.prefix.clone(),
                node_id: options.node_id.clone(),
                window: options.window,
                ttl: options.ttl,
                wait_replicas: options.wait_replicas,
            },
        );
        let presence = RedisPresence::start(
            target.clone(),
            options.prefix.clone(),
            options.node_id.clone(),
            options.presence_ttl,
            stop.clone(),
        );
        let _ = commands.send(Command::Subscribe(control_channel(&options.prefix)));
        match &target {
            Target::Single(client) => {
                tokio::spawn(crate::subscriber::subscribe_loop(
                    client.clone(),
                    command_rx,
                    inbox,
                    options.node_id.clone(),
                    health.clone(),
                    stop.clone(),
                ));
            }
            Target::Cluster(cluster) => {
                tokio::spawn(cluster.clone().watch(stop.clone()));
                tokio::spawn(crate::shards::subscribe_loop(
                    cluster.clone(),
                    command_rx,
                    inbox,
                    options.node_id.clone(),
                    health.clone(),
                    stop.clone(),
                ));
            }
        }
        Ok(Self {
            target,
            prefix: options.prefix,
            node_id: options.node_id,
            publish_tx,
            commands,
            health,
            sequencer,
            presence,
            _stop: stop.drop_guard(),
        })
    }

    fn channel(&self, room: &RoomName) -> String {
        Keys::new(&self.prefix, room).channel
    }
}

impl Bus for RedisBus {
    fn publish(&self, message: &Message) {
        let payload = envelope::frame(
            message.seq,
            &message.epoch,
            &envelope::encode(&self.node_id, message),
        );
        if self
            .publish_tx
            .try_send((self.channel(&message.room), payload))
            .is_err()
        {
            metrics::counter!("switchboard_bus_dropped_total", "reason" => "publish_queue_full")
                .increment(1);
            static DROPS: AtomicU64 = AtomicU64::new(0);
            if let Some(n) = crate::sampled(&DROPS) {
                tracing::warn!(
                    dropped_so_far = n,
                    "redis publish queue full: messages not sent to other nodes"
                );
            }
        }
    }

    fn disconnect(&self, name: &str) {
        let payload = control::encode_disconnect(&self.node_id, name);
        if self
            .publish_tx
            .try_send((control_channel(&self.prefix), payload))
            .is_err()
        {
            metrics::counter!("switchboard_bus_dropped_total", "reason" => "publish_queue_full")
                .increment(1);
            tracing::warn!(%name, "redis publish queue full: a disconnect was not sent to other nodes");
        }
    }

    fn subscribe(&self, room: &RoomName) {
        let _ = self.commands.send(Command::Subscribe(self.channel(room)));
    }

    fn unsubscribe(&self, room: &RoomName) {
        let _ = self.commands.send(Command::Unsubscribe(self.channel(room)));
    }

    fn settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Settled(tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }

    fn is_ready(&self) -> bool {
        self.unavailable().is_empty()
    }

    fn unavailable(&self) -> Vec<String> {
        let mut down = match self.target.cluster() {
            Some(cluster) => cluster.topology().borrow().unreachable.clone(),
            None => Vec::new(),
        };
        if down.is_empty()
            && (!self.health.subscriber_up.load(Ordering::Relaxed)
                || self.health.publisher_failing.load(Ordering::Relaxed))
        {
            down.push("redis".to_owned());
        }
        down
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn resubscriptions(&self) -> u64 {
        self.health.resubscribed.load(Ordering::Relaxed)
    }

    fn sequencer(&self) -> Option<Arc<dyn Sequencer>> {
        Some(Arc::new(self.sequencer.clone()))
    }

    fn presence(&self) -> Option<Arc<dyn Presences>> {
        Some(Arc::new(self.presence.clone()))
    }
}

/// The channel of commands to every node of the deployment.
pub(crate) fn control_channel(prefix: &str) -> String {
    format!("{{{prefix}}}:control")
}

pub(crate) mod control {
    //! Payloads of the control channel: `D {"node":..,"name":..}`.

    use serde::{Deserialize, Serialize};

    #[derive(Serialize)]
    struct Disconnect<'a> {
        node: &'a str,
        name: &'a str,
    }

    #[derive(Deserialize)]
    struct Read {
        node: String,
        name: String,
    }

    pub(crate) fn encode_disconnect(node: &str, name: &str) -> Vec<u8> {
        let mut out = b"D ".to_vec();
        serde_json::to_writer(&mut out, &Disconnect { node, name })
            .unwrap_or_else(|_| unreachable!("strings serialize"));
        out
    }

    /// The node that asked and the name to disconnect.
    pub(crate) fn decode_disconnect(payload: &[u8]) -> Option<(String, String)> {
        let d: Read = serde_json::from_slice(payload.strip_prefix(b"D ")?).ok()?;
        Some((d.node, d.name))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_any_name() {
            let payload = super::encode_disconnect("n 1", "ann \"the\" admin");
            assert_eq!(
                super::decode_disconnect(&payload),
                Some(("n 1".into(), "ann \"the\" admin".into()))
            );
            assert_eq!(super::decode_disconnect(b"D {"), None);
            assert_eq!(super::decode_disconnect(b"P join"), None);
        }
    }
}

async fn publish_loop(
    target: Target,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut conn: Option<Conn> = None;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut probe = tokio::time::interval(Duration::from_millis(500));
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => {
                if n == 0 {
                    return;
                }
            }
            // While failing, check now and then whether Redis is back, so
            // readiness recovers even when nothing is being published.
            _ = probe.tick(), if health.publisher_failing.load(Ordering::Relaxed) => {}
        }
        let result = async {
            if conn.is_none() {
                conn = Some(target.connect().await?);
            }
            let Some(c) = conn.as_mut() else {
                unreachable!("connected above")
            };
            if let Target::Cluster(_) = &target {
                // Each room's channel may be on another shard: one command
                // each, all in flight at once.
                let sent =
                    futures_util::future::join_all(batch.iter().map(|(channel, payload)| {
                        let mut c = c.clone();
                        async move {
                            redis::cmd("SPUBLISH")
                                .arg(channel)
                                .arg(payload.as_slice())
                                .query_async::<()>(&mut c)
                                .await
                        }
                    }))
                    .await;
                if batch.is_empty() {
                    redis::cmd("PING").query_async::<()>(c).await?;
                }
                return sent.into_iter().collect::<redis::RedisResult<()>>();
            }
            let mut pipe = redis::pipe();
            if batch.is_empty() {
                pipe.cmd("PING");
            }
            for (channel, payload) in &batch {
                pipe.publish(channel, payload.as_slice()).ignore();
            }
            pipe.query_async::<()>(c).await
        };
        match tokio::time::timeout(OP_TIMEOUT, result).await {
            Ok(Ok(())) => {
                if health.publisher_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis publisher recovered");
                }
                metrics::counter!("switchboard_bus_published_total").increment(batch.len() as u64);
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                if !batch.is_empty() {
                    metrics::counter!("switchboard_bus_publish_failed_total")
                        .increment(batch.len() as u64);
                }
                if !health.publisher_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %error, dropped = batch.len(), "redis publish failed; other nodes miss these messages until Redis is back");
                }
            }
        }
        batch.clear();
    }
}
