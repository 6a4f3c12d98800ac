//! The listener's settings: where clients connect, how long a request may
//! take, how many sockets it holds, which proxies are believed, and where
//! operators scrape metrics.

use std::net::{IpAddr, SocketAddr};

use switchboard_gateway::TrustedProxies;

use super::{ConfigError, invalid};

/// PORT, HOST and what bounds the HTTP listener.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenerArgs {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000, global = true)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0", global = true)]
    pub host: IpAddr,
    /// Milliseconds a client may take to send a request's head (from its
    /// first byte, and between keep-alive requests), and again its body.
    #[arg(
        long,
        env = "HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub handshake_timeout_ms: u64,
    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 65_536, global = true)]
    pub max_body_bytes: usize,
    /// Sockets held without a WebSocket upgrade (plain HTTP, Socket.IO
    /// polling, handshakes in progress) at most (0: no cap).
    #[arg(
        long,
        env = "MAX_HTTP_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub max_http_connections: usize,
    /// The same, per client address (0: no cap; trusted proxies exempt).
    #[arg(
        long,
        env = "HTTP_CONNECTIONS_PER_IP",
        default_value_t = 256,
        global = true
    )]
    pub http_connections_per_ip: usize,
    /// Proxies whose X-Forwarded-For / Forwarded / X-Forwarded-Proto are
    /// believed: comma-separated addresses and CIDRs (10.0.0.0/8).
    #[arg(long, env = "TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// A second listener for operators (`127.0.0.1:9100`): /metrics,
    /// /api/stats, /healthz and /readyz without credentials.
    #[arg(long, env = "METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,
}

impl ListenerArgs {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.handshake_timeout_ms == 0 {
            return Err(invalid(
                "HANDSHAKE_TIMEOUT_MS",
                "a positive number of milliseconds",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("MAX_BODY_BYTES", "at least 1024"));
        }
        self.trusted_proxies().map(|_| ())
    }

    /// TRUSTED_PROXIES, parsed.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or(""))
            .map_err(|e| invalid("TRUSTED_PROXIES", e.to_string()))
    }

    /// Where the node listens.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}
