//! What one client may take: message and frame sizes, rooms, queues,
//! history, rates, connections and keepalive.

use super::{ConfigError, invalid};

/// The limits of a node.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
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
    /// Most messages a `join` with `since` recovers; further behind, the
    /// client gets `recovered: false` and the latest history.
    #[arg(long, env = "RECOVERY_MAX", default_value_t = 1000, global = true)]
    pub recovery_max: u64,
    /// Ids per room whose resend keeps the position it was given.
    #[arg(long, env = "RECOVERY_WINDOW", default_value_t = 1000, global = true)]
    pub recovery_window: usize,
    /// Rooms with more names than this get presence counts (at most once a
    /// second) instead of join and leave events.
    #[arg(
        long,
        env = "PRESENCE_EVENTS_MAX",
        default_value_t = 100,
        global = true
    )]
    pub presence_events_max: usize,
    /// Milliseconds a sender waits for durability before `unavailable`.
    #[arg(long, env = "ACK_TIMEOUT_MS", default_value_t = 5000, global = true)]
    pub ack_timeout_ms: u64,
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
}

impl LimitsArgs {
    /// Checks every value and its relation to the others.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if !(1..=100_000).contains(&self.recovery_max) {
            return Err(invalid("RECOVERY_MAX", "1 to 100000 messages"));
        }
        if !(1..=1_000_000).contains(&self.recovery_window) {
            return Err(invalid("RECOVERY_WINDOW", "1 to 1000000 ids"));
        }
        if self.presence_events_max > 100_000 {
            return Err(invalid("PRESENCE_EVENTS_MAX", "0 to 100000 names"));
        }
        if self.ack_timeout_ms == 0 {
            return Err(invalid(
                "ACK_TIMEOUT_MS",
                "a positive number of milliseconds",
            ));
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
        Ok(())
    }
}
