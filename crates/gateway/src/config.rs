//! The gateway's settings.

use std::time::Duration;

use switchboard_protocol::Limits;

use crate::policy::{Bounds, Policies};
use crate::{AuthConfig, Rate, TrustedProxies};

/// Gateway settings; the binary builds them from its configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This node's name in logs and bus payloads.
    pub node_id: String,
    /// Message size and history limits.
    pub limits: Limits,
    /// Largest WebSocket frame or message accepted, in bytes; larger closes
    /// the connection with 1009.
    pub max_frame_bytes: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Frames queued for one client before it is dropped as a slow consumer.
    pub client_queue_frames: usize,
    /// How long a sender waits for durability before `unavailable`.
    pub ack_timeout: Duration,
    /// Most messages a `join` with `since` recovers.
    pub recovery_max: u64,
    /// Ids per room whose resend keeps its position.
    pub recovery_window: usize,
    /// Rooms with more names than this get presence counts, not join and
    /// leave events.
    pub presence_events_max: usize,
    /// How long shutdown waits for connections to close, all phases
    /// together (HTTP requests in flight, Socket.IO, `/ws`); the journal's
    /// flush comes after, within the process's 10 s.
    pub shutdown_grace: Duration,
    /// Tokens, the publish API key and allowed origins.
    pub auth: AuthConfig,
    /// Connections this node holds at most (0: no cap).
    pub max_connections: usize,
    /// New connections per second per client address (`None`: no limit).
    pub connect_rate_per_ip: Option<Rate>,
    /// Sends a connection may make (`per_second` 0: no limit); every frame
    /// counts against ten times this, past which the connection is closed.
    pub send_rate: Rate,
    /// How long a client may take to send its request headers (the
    /// WebSocket handshake included).
    pub handshake_timeout: Duration,
    /// A quiet connection is pinged after this long.
    pub ping_interval: Duration,
    /// A connection silent this long (pongs included) is closed.
    pub idle_timeout: Duration,
    /// How long before its token expires a connection is sent
    /// `token_expiring`.
    pub token_warning: Duration,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Sockets open without a WebSocket upgrade (plain HTTP, Socket.IO
    /// polling, handshakes in progress) at most (0: no cap); past it a new
    /// socket is closed at once, so file descriptors stay for everyone else.
    pub max_http_connections: usize,
    /// The same, per client address (0: no cap; trusted proxies exempt).
    pub http_connections_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto`
    /// are believed.
    pub trusted_proxies: TrustedProxies,
    /// Whether `/metrics` and `/api/stats` answer without credentials on
    /// the main listener (else they need the API key).
    pub metrics_public: bool,
    /// Room policies by namespace (`CONFIG_FILE`); `None`: every room
    /// under the node's settings.
    pub policies: Option<Policies>,
    /// The admin console's credential (`ADMIN_TOKEN`); `None`: no console.
    pub admin_token: Option<AdminToken>,
}

/// The admin console's credential; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<set>")
    }
}

impl GatewayConfig {
    /// The node's settings a policy starts from and must keep within.
    pub fn policy_bounds(&self) -> Bounds {
        Bounds {
            history_default: self.limits.history_default,
            history_max: self.limits.history_max,
            recovery_max: self.recovery_max,
            max_message_bytes: self.limits.max_message_bytes,
            max_frame_bytes: self.max_frame_bytes,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            node_id: "switchboard".into(),
            limits: Limits::default(),
            max_frame_bytes: 65_536,
            max_rooms_per_connection: 100,
            client_queue_frames: 1_024,
            ack_timeout: Duration::from_millis(5_000),
            recovery_max: 1_000,
            recovery_window: 1_000,
            presence_events_max: 100,
            shutdown_grace: Duration::from_secs(5),
            auth: AuthConfig::default(),
            max_connections: 0,
            connect_rate_per_ip: None,
            send_rate: Rate {
                per_second: 0,
                burst: 0,
            },
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            token_warning: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            max_http_connections: 0,
            http_connections_per_ip: 0,
            trusted_proxies: TrustedProxies::default(),
            metrics_public: true,
            policies: None,
            admin_token: None,
        }
    }
}
