//! The cluster's settings: REDIS_URL, REDIS_PREFIX, REDIS_WAIT_REPLICAS,
//! RECOVERY_TTL and PRESENCE_TTL.

use std::time::Duration;

use switchboard_bus::RedisOptions;

use super::{ConfigError, invalid};

/// Redis, through which nodes share their rooms' messages.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Redis for cluster fan-out: one server (`redis://` or `rediss://`)
    /// or a Redis Cluster by its seeds (`redis+cluster://host:port,host:port`);
    /// unset runs one node.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Replicas that must have each message's position before it is acked
    /// (`WAIT`): 1 keeps acked positions through a failover; 0 acks as soon
    /// as the master has it.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0, global = true)]
    pub redis_wait_replicas: u32,
    /// Prefix of the Redis channels, so several deployments share one Redis.
    #[arg(
        long,
        env = "REDIS_PREFIX",
        default_value = "switchboard",
        global = true
    )]
    pub redis_prefix: String,
    /// Seconds a room's position and recovery window stay in Redis after
    /// its last message.
    #[arg(long, env = "RECOVERY_TTL", default_value_t = 86_400, global = true)]
    pub recovery_ttl: u64,
    /// Seconds within which the members of a node that died are removed
    /// from presence by the others.
    #[arg(long, env = "PRESENCE_TTL", default_value_t = 30, global = true)]
    pub presence_ttl: u64,
}

impl ClusterArgs {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(redis) = &self.redis_url {
            let valid = if redis.starts_with("redis+cluster://")
                || redis.starts_with("rediss+cluster://")
            {
                switchboard_bus::valid_url(redis)
            } else {
                matches!(url::Url::parse(redis), Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some())
            };
            if !valid {
                return Err(invalid(
                    "REDIS_URL",
                    "a redis://HOST[:PORT][/DB] or rediss:// URL, or redis+cluster://HOST:PORT,HOST:PORT for a Redis Cluster",
                ));
            }
        }
        if self.redis_wait_replicas > 16 {
            return Err(invalid("REDIS_WAIT_REPLICAS", "0 to 16 replicas"));
        }
        if !switchboard_bus::valid_prefix(&self.redis_prefix) {
            return Err(invalid(
                "REDIS_PREFIX",
                "1-64 characters from A-Z a-z 0-9 _ . - (no `:`, so channel names of two deployments cannot collide)",
            ));
        }
        if !(1..=30 * 86_400).contains(&self.recovery_ttl) {
            return Err(invalid("RECOVERY_TTL", "1 to 2592000 seconds"));
        }
        if !(1..=3_600).contains(&self.presence_ttl) {
            return Err(invalid("PRESENCE_TTL", "1 to 3600 seconds"));
        }
        Ok(())
    }

    /// The bus settings for a node named `node_id`, in cluster mode, with
    /// `window` messages per room kept for recovery.
    pub fn redis_options(&self, node_id: &str, window: usize) -> Option<RedisOptions> {
        self.redis_url.clone().map(|url| RedisOptions {
            window,
            ttl: Duration::from_secs(self.recovery_ttl),
            presence_ttl: Duration::from_secs(self.presence_ttl),
            wait_replicas: self.redis_wait_replicas,
            ..RedisOptions::new(url, self.redis_prefix.clone(), node_id)
        })
    }
}
