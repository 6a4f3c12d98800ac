//! The cluster's settings: REDIS_URL and REDIS_PREFIX.

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
        Ok(())
    }

    /// The bus settings for a node named `node_id`, in cluster mode.
    pub fn redis_options(&self, node_id: &str) -> Option<RedisOptions> {
        self.redis_url.clone().map(|url| RedisOptions {
            url,
            prefix: self.redis_prefix.clone(),
            node_id: node_id.to_owned(),
        })
    }
}
