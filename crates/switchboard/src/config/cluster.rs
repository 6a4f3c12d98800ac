//! The cluster's settings: REDIS_URL, REDIS_PREFIX, RECOVERY_TTL and
//! PRESENCE_TTL.

use std::time::Duration;

use switchboard_bus::RedisOptions;

use super::{ConfigError, invalid};

/// Redis, through which nodes share their rooms' messages.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Redis for cluster fan-out (`redis://` or `rediss://`); unset runs one node.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
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
            match url::Url::parse(redis) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {}
                _ => {
                    return Err(invalid(
                        "REDIS_URL",
                        "a redis://HOST[:PORT][/DB] or rediss:// URL",
                    ));
                }
            }
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
            ..RedisOptions::new(url, self.redis_prefix.clone(), node_id)
        })
    }
}
