//! The gateway: where clients connect and messages enter and leave a node.
//!
//! One [`Gateway`] per node serves plain WebSocket clients on `/ws`,
//! Socket.IO clients on `/socket.io/`, the HTTP API, and the web chat page.
//! An accepted message is delivered to this node's members at once through
//! the room [`registry`], handed to the [`Bus`] for the other nodes, and
//! appended to the [`Journal`]; the sender is acked when the journal says
//! the message is durable.

mod admin;
mod admit;
mod api;
pub mod auth;
mod broadcast;
pub mod catalog;
mod config;
mod engineio;
mod error;
mod flow;
mod gate;
mod history;
mod http;
mod limits;
mod listen;
mod mailbox;
mod moderation;
mod openapi;
mod origin;
pub mod peer;
pub mod policy;
mod positions;
mod presence;
mod recent;
mod registry;
mod rooms;
mod session;
mod sio;
mod users;
mod ws;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use socketioxide::SocketIo;
use switchboard_bus::{Bus, Inbound, Inbox};
use switchboard_journal::{Journal, JournalError};
use switchboard_protocol::{Message, Payload, RoomName, now_ms};
use switchboard_store::Store;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use crate::auth::{AllowedOrigins, AuthConfig, AuthMode, TokenVerifier};
pub use crate::config::{AdminToken, GatewayConfig};
pub use crate::limits::Rate;
pub use crate::listen::serve_metrics;

use crate::limits::{Admission, HttpConnections};
pub use crate::peer::TrustedProxies;
pub use crate::policy::{Policies, Policy, PolicyError};
use crate::recent::RecentIds;
use crate::registry::Registry;

/// The room every Socket.IO connection is in from the start (the original
/// system's single shared room).
pub const LOBBY: &str = "lobby";

/// How long a join waits for the bus to confirm its subscription.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages from other nodes waiting for local fan-out at most.
const INBOX_CAPACITY: usize = 8_192;

/// One node's shared state.
pub struct Gateway {
    config: GatewayConfig,
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    recent_ids: RecentIds,
    /// Where messages get their positions.
    positions: Positions,
    presence: Arc<presence::Presence>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    io: OnceLock<SocketIo>,
    next_conn: AtomicU64,
    admission: Admission,
    http_connections: HttpConnections,
    metrics: Option<PrometheusHandle>,
    /// Every room's policy, by namespace.
    policies: Policies,
    /// The connections of each name here.
    users: users::Users,
    /// The admin console's counters and live view.
    admin: admin::Admin,
}

/// The ordering point a node uses.
enum Positions {
    /// A single node is its own.
    Local(positions::LocalOrder),
    /// A cluster's is the bus (Redis); each room's flow delivers in seq
    /// order and fills gaps.
    Cluster(Arc<flow::Flows>),
}

/// How long until `unix_secs` (a token's expiry): zero once past.
pub(crate) fn time_until(unix_secs: u64) -> Duration {
    Duration::from_millis((unix_secs * 1000).saturating_sub(now_ms() as u64))
}

/// Why a message was not made durable in time; the client may resend it
/// with the same id.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable(pub String);

impl Gateway {
    /// Builds a node. `make_bus` receives the inbox where the bus must put
    /// messages from other nodes. `shutdown` stops everything when cancelled.
    pub fn new<E>(
        config: GatewayConfig,
        make_bus: impl FnOnce(Inbox) -> Result<Arc<dyn Bus>, E>,
        journal: Arc<dyn Journal>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Arc<Self>, E> {
        if metrics.is_some() {
            catalog::register(catalog::Process::Node);
        }
        let (inbox, mut remote) = mpsc::channel::<Inbound>(INBOX_CAPACITY);
        let bus = make_bus(inbox)?;
        let admission = Admission::new(config.max_connections, config.connect_rate_per_ip);
        let http_connections = HttpConnections::new(
            config.max_http_connections,
            config.http_connections_per_ip,
            config.trusted_proxies.clone(),
        );
        let presence =
            presence::Presence::new(bus.presence(), journal.clone(), config.presence_events_max);
        let on_presence = {
            let presence = presence.clone();
            Arc::new(move |update| presence.changed(update))
        };
        let registry = Arc::new(Registry::new(bus.clone(), on_presence));
        presence.attach(&registry);
        let positions = match bus.sequencer() {
            Some(sequencer) => Positions::Cluster(flow::Flows::new(sequencer, registry.clone())),
            None => {
                let source = if journal.kind() == "embedded" {
                    positions::EpochSource::Store
                } else {
                    positions::EpochSource::Fresh
                };
                Positions::Local(positions::LocalOrder::new(
                    store.clone(),
                    source,
                    config.recovery_window,
                ))
            }
        };
        let policies = config
            .policies
            .clone()
            .unwrap_or_else(|| Policies::uniform(config.policy_bounds()));
        // Frames are decoded against the largest room's limit; each room's
        // own is checked when a message is sent to it.
        let mut config = config;
        config.limits.max_message_bytes = policies.largest_message();
        let gateway = Arc::new(Self {
            policies,
            users: users::Users::default(),
            config,
            registry,
            bus,
            journal,
            store,
            recent_ids: RecentIds::new(65_536),
            positions,
            presence,
            shutdown,
            connections: TaskTracker::new(),
            io: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            admission,
            http_connections,
            metrics,
            admin: admin::Admin::new(),
        });
        admin::Admin::start(&gateway);
        // The per-address connection rate table forgets quiet addresses.
        let weak = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(gateway) = weak.upgrade() else { break };
                gateway.admission.forget_idle_addresses();
            }
        });
        // In a cluster: after the bus lost and regained its subscription,
        // the rooms catch up on what was published meanwhile, and this
        // node states its presence again.
        if let Positions::Cluster(_) = &gateway.positions {
            let weak = Arc::downgrade(&gateway);
            let mut seen = gateway.bus.resubscriptions();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(200));
                let mut ticks = 0u64;
                loop {
                    every.tick().await;
                    let Some(gateway) = weak.upgrade() else { break };
                    ticks += 1;
                    // Once a second: rooms that went quiet check they have
                    // their last messages.
                    if ticks.is_multiple_of(5)
                        && let Positions::Cluster(flows) = &gateway.positions
                    {
                        let flows = flows.clone();
                        tokio::spawn(async move { flows.probe_quiet().await });
                    }
                    let now = gateway.bus.resubscriptions();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    gateway.presence.restate();
                    if let Positions::Cluster(flows) = &gateway.positions {
                        flows.catch_up_all().await;
                    }
                }
            });
        }
        // Messages from other nodes: fan out locally, nothing else (the
        // accepting node already journaled them).
        let weak = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            while let Some(inbound) = remote.recv().await {
                let Some(gateway) = weak.upgrade() else { break };
                let message = match inbound {
                    // A deletion: same id as its message, never deduplicated.
                    Inbound::Message(tombstone) if tombstone.deleted => {
                        gateway.erased(&tombstone);
                        continue;
                    }
                    Inbound::Message(message) => message,
                    Inbound::Presence(change) => {
                        gateway.presence.relay(change);
                        continue;
                    }
                    Inbound::Disconnect(name) => {
                        gateway.users.disconnect(&name);
                        continue;
                    }
                };
                match &gateway.positions {
                    // Ephemeral: no position to order by, delivered once.
                    _ if message.seq == 0 => {
                        if gateway.recent_ids.first_sighting(message.id) {
                            gateway.deliver(&message);
                        }
                    }
                    Positions::Cluster(flows) => flows.arrive(message),
                    // A retry accepted on another node is not delivered twice.
                    Positions::Local(_) => {
                        if gateway.recent_ids.first_sighting(message.id) {
                            gateway.deliver(&message);
                        }
                    }
                }
            }
        });
        Ok(gateway)
    }

    /// The node's settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Short names of the bus, journal and store in use, for the start log.
    pub fn modes(&self) -> (&'static str, &'static str, &'static str) {
        (self.bus.kind(), self.journal.kind(), self.store.kind())
    }

    /// Serves HTTP, WebSocket and Socket.IO on `listener` until the shutdown
    /// token is cancelled, then closes every connection (1001 on `/ws`),
    /// flushes the journal and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let app = http::router(&self);
        if let Ok(address) = listener.local_addr() {
            let _ = self.admin.address.set(address);
        }
        let io = self.io.get().cloned();
        let shutdown = self.shutdown.clone();
        let closer = tokio::spawn(async move {
            shutdown.cancelled().await;
            // Ends long-polling requests too, so the HTTP server can drain.
            if let Some(io) = io {
                io.close().await;
            }
        });
        // One budget for every phase of closing connections, counted from
        // the moment shutdown began, so the journal's flush after them is
        // never cut short by the process's own deadline.
        let deadline = listen::serve_http(
            listener,
            app,
            self.config.handshake_timeout,
            &self.http_connections,
            self.shutdown.clone(),
            self.config.shutdown_grace,
        )
        .await;
        // Socket.IO lets go of its long polls, and `/ws` connections send
        // their 1001, within what is left of it.
        if tokio::time::timeout_at(deadline, closer).await.is_err() {
            tracing::warn!("socket.io clients still open after the shutdown grace period");
        }
        self.connections.close();
        if tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period");
        }
        self.journal.close().await;
        if let Positions::Local(positions) = &self.positions {
            positions.end().await;
        }
        Ok(())
    }

    /// Local fan-out, then the cuts it asks for.
    fn deliver(&self, message: &Message) {
        for cut in self.registry.deliver(message) {
            sio::cut(&self.registry, cut);
        }
    }

    /// Serves the operators' routes (`/metrics`, `/api/stats`, `/healthz`,
    /// `/readyz`) on `listener` without credentials (`METRICS_ADDR`: bind
    /// it to a private address) until shutdown.
    pub async fn serve_operators(self: Arc<Self>, listener: TcpListener) {
        // A private listener, but still bounded: a few scrapers at a time.
        let sockets = HttpConnections::new(256, 0, TrustedProxies::default());
        listen::serve_http(
            listener,
            http::operators_router(&self),
            self.config.handshake_timeout,
            &sockets,
            self.shutdown.clone(),
            self.config.shutdown_grace,
        )
        .await;
    }

    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Accepts a validated message from `from`: gives it its position,
    /// delivers it locally, hands it to the bus, and returns it with a
    /// future that resolves when it is durable. A resend of an id that has
    /// a position keeps it and is journaled again (stored once) but not
    /// delivered twice; so is a retried id seen recently on this node.
    /// `Unavailable` when no position can be given (the store is down
    /// before the room's first message of the run).
    pub(crate) async fn accept(
        &self,
        from: &str,
        room: RoomName,
        payload: Payload,
        id: Option<Uuid>,
    ) -> Result<
        (
            Message,
            impl Future<Output = Result<(), Unavailable>> + Send + 'static,
        ),
        Unavailable,
    > {
        let mut message = Message {
            id: id.unwrap_or_else(Uuid::now_v7),
            room,
            from: from.to_owned(),
            text: payload.text,
            data: payload.data,
            // Stamped when accepted, below.
            ts: 0,
            seq: 0,
            epoch: String::new(),
            deleted: false,
        };
        let mut unstored = None;
        let fresh = match &self.positions {
            Positions::Local(order) => {
                // A room's first message of the run reads the store.
                let counter = self.bounded(order.counter(&message.room)).await;
                let (counter, epoch) = counter.map_err(|e| {
                    tracing::warn!(error = %e, room = %message.room, "no position: the store is unavailable");
                    Unavailable("the message could not be given a position; retry with the same id".into())
                })?;
                // Position and local fan-out under the room's lock: members
                // see the room in seq order.
                let mut counter = positions::lock(&counter);
                // Stamped in seq order too, so history sorted by time
                // agrees with the positions; a resend keeps its first time.
                let assigned = order.assign(&mut counter, message.id, now_ms());
                message.ts = assigned.ts;
                message.seq = assigned.seq;
                message.epoch = epoch.to_owned();
                if assigned.fresh {
                    unstored = Some(order.given());
                    self.fan_out(&message);
                }
                assigned.fresh
            }
            Positions::Cluster(flows) => {
                message.ts = now_ms();
                // The ordering point gives the position and publishes to
                // the other nodes in one step; nothing is accepted without.
                let sequenced = flows.sequencer().sequence(&message).await.map_err(|e| {
                    tracing::warn!(error = %e, room = %message.room, "no position: the ordering point is unavailable");
                    Unavailable("the message could not be given a position; retry with the same id".into())
                })?;
                message.seq = sequenced.seq;
                message.epoch = sequenced.epoch;
                // A resend keeps its first acceptance time.
                if let Some(ts) = sequenced.ts {
                    message.ts = ts;
                }
                // Delivered here in seq order (once: a resend whose first
                // try was delivered is dropped by its seq).
                flows.arrive(message.clone());
                if sequenced.fresh {
                    metrics::counter!("switchboard_messages_accepted_total").increment(1);
                    self.admin.tally.accepted();
                }
                sequenced.fresh
            }
        };
        if !fresh {
            metrics::counter!("switchboard_messages_retried_total").increment(1);
        }
        tracing::debug!(id = %message.id, room = %message.room, seq = message.seq, fresh, "message accepted");
        let journal = self.journal.clone();
        let timeout = self.config.ack_timeout;
        let durable = message.clone();
        let tally = self.admin.tally.clone();
        let wait = async move {
            let id = durable.id;
            let started = std::time::Instant::now();
            let appended = tokio::time::timeout(timeout, journal.append(durable)).await;
            tally.journal_wait(started.elapsed());
            match appended {
                Ok(Ok(())) => {
                    if let Some(unstored) = unstored {
                        unstored.stored();
                    }
                    Ok(())
                }
                Ok(Err(JournalError::Full)) => Err(Unavailable(
                    "the journal is overloaded; retry with the same id".into(),
                )),
                // The cause names brokers, hosts and internals: it goes to
                // the log, the client gets the code.
                Ok(Err(e)) => {
                    tracing::warn!(%id, error = %e, "message not made durable");
                    Err(Unavailable(
                        "the message could not be made durable; retry with the same id".into(),
                    ))
                }
                Err(_) => Err(Unavailable(format!(
                    "not durable within {} ms; retry with the same id",
                    timeout.as_millis()
                ))),
            }
        };
        Ok((message, wait))
    }

    /// Accepts an ephemeral message: delivered to every member here and
    /// handed to the other nodes, never positioned, journaled or kept for
    /// history. A resend of an id this node saw lately is not delivered
    /// again.
    pub(crate) fn accept_ephemeral(
        &self,
        from: &str,
        room: RoomName,
        payload: Payload,
        id: Option<Uuid>,
    ) -> Message {
        let message = Message {
            id: id.unwrap_or_else(Uuid::now_v7),
            room,
            from: from.to_owned(),
            text: payload.text,
            data: payload.data,
            ts: now_ms(),
            // No position: what marks it live only on every node.
            seq: 0,
            epoch: String::new(),
            deleted: false,
        };
        if self.recent_ids.first_sighting(message.id) {
            self.deliver(&message);
            self.bus.publish(&message);
            metrics::counter!("switchboard_messages_ephemeral_total").increment(1);
        }
        message
    }

    /// A new message to every member here and to the other nodes.
    fn fan_out(&self, message: &Message) {
        self.deliver(message);
        self.bus.publish(message);
        metrics::counter!("switchboard_messages_accepted_total").increment(1);
        self.admin.tally.accepted();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal whose writes fail with what a broker would say.
    struct Failing;

    #[async_trait::async_trait]
    impl Journal for Failing {
        async fn append(&self, _: Message) -> Result<(), JournalError> {
            Err(JournalError::Write(
                "broker kafka-internal-7.corp:9093 SASL auth failed for svc-chat".into(),
            ))
        }
        async fn close(&self) {}
        fn kind(&self) -> &'static str {
            "failing"
        }
        fn queued(&self) -> usize {
            0
        }
    }

    #[tokio::test]
    async fn a_failed_write_answers_the_code_not_the_cause() {
        let store = switchboard_store::open_with("sqlite::memory:", true)
            .await
            .unwrap();
        let gateway = Gateway::new(
            GatewayConfig::default(),
            |inbox| Ok::<_, ()>(Arc::new(switchboard_bus::MemoryHub::new().attach(inbox)) as _),
            Arc::new(Failing),
            store,
            CancellationToken::new(),
            None,
        )
        .unwrap();
        let room = RoomName::parse("r").unwrap();
        let (message, durable) = gateway.accept("a", room, "hi".into(), None).await.unwrap();
        let Unavailable(said) = durable.await.unwrap_err();
        assert!(said.contains("retry with the same id"), "{said}");
        for internal in ["kafka-internal", "9093", "SASL", "svc-chat"] {
            assert!(!said.contains(internal), "{said}");
        }
        let answer = switchboard_protocol::ServerFrame::Error {
            code: switchboard_protocol::ErrorCode::Unavailable,
            message: said,
            r#ref: None,
            id: Some(message.id),
        };
        assert!(!answer.encode().contains("kafka-internal"));
    }
}
