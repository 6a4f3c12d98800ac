//! `switchboard hooks`'s settings: HOOKS_GROUP and WEBHOOK_*.

use std::time::Duration;

use switchboard_archive::hooks::{Endpoint, HooksOptions};

use super::{ConfigError, invalid};

/// Where the journal's events are POSTed, and how.
#[derive(Clone, clap::Args)]
pub struct HooksArgs {
    /// Consumer group of the `switchboard hooks` processes.
    #[arg(
        long,
        env = "HOOKS_GROUP",
        default_value = "switchboard-hooks",
        global = true
    )]
    pub hooks_group: String,
    /// Receivers, separated by spaces: `URL` (every event) or
    /// `URL;events=message,member_joined,...` (message, message_deleted,
    /// room_occupied, room_vacated, member_joined, member_left).
    #[arg(long, env = "WEBHOOK_URL", global = true)]
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key of the signatures (at least 16 characters).
    #[arg(long, env = "WEBHOOK_SECRET", global = true)]
    pub webhook_secret: Option<String>,
    /// Events per POST at most.
    #[arg(long, env = "WEBHOOK_BATCH", default_value_t = 100, global = true)]
    pub webhook_batch: usize,
    /// How long a batch waits to fill, in milliseconds.
    #[arg(long, env = "WEBHOOK_LINGER_MS", default_value_t = 100, global = true)]
    pub webhook_linger_ms: u64,
    /// How long one POST may take, in milliseconds.
    #[arg(
        long,
        env = "WEBHOOK_TIMEOUT_MS",
        default_value_t = 5_000,
        global = true
    )]
    pub webhook_timeout_ms: u64,
    /// Attempts before a batch goes to webhook_dead_letters (0: never).
    #[arg(
        long,
        env = "WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 10,
        global = true
    )]
    pub webhook_max_attempts: u32,
}

impl std::fmt::Debug for HooksArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HooksArgs")
            .field("hooks_group", &self.hooks_group)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_batch", &self.webhook_batch)
            .finish_non_exhaustive()
    }
}

impl HooksArgs {
    /// Checks every value that is set (the URL and secret are required by
    /// `switchboard hooks` only).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(urls) = &self.webhook_url {
            self.endpoints(urls)?;
        }
        if self.webhook_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(invalid("WEBHOOK_SECRET", "at least 16 characters"));
        }
        if !(1..=10_000).contains(&self.webhook_batch) {
            return Err(invalid("WEBHOOK_BATCH", "1 to 10000 events"));
        }
        if !(100..=120_000).contains(&self.webhook_timeout_ms) {
            return Err(invalid("WEBHOOK_TIMEOUT_MS", "100 to 120000 milliseconds"));
        }
        if self.webhook_linger_ms > 60_000 {
            return Err(invalid("WEBHOOK_LINGER_MS", "0 to 60000 milliseconds"));
        }
        Ok(())
    }

    fn endpoints(&self, urls: &str) -> Result<Vec<Endpoint>, ConfigError> {
        let endpoints = urls
            .split_whitespace()
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                invalid(
                    "WEBHOOK_URL",
                    format!("URLs separated by spaces, each `URL` or `URL;events=message,message_deleted` ({e})"),
                )
            })?;
        if endpoints.is_empty() {
            return Err(invalid(
                "WEBHOOK_URL",
                "at least one http:// or https:// URL",
            ));
        }
        Ok(endpoints)
    }

    /// The options of `switchboard hooks`, or what is missing; an endpoint
    /// that names presence events needs `events_topic` (KAFKA_EVENTS_TOPIC).
    pub fn hooks_options(&self, events_topic: Option<&str>) -> Result<HooksOptions, ConfigError> {
        let Some(urls) = &self.webhook_url else {
            return Err(invalid(
                "WEBHOOK_URL",
                "the receivers' URLs (switchboard hooks needs them)",
            ));
        };
        let Some(secret) = &self.webhook_secret else {
            return Err(invalid(
                "WEBHOOK_SECRET",
                "a key of at least 16 characters to sign the webhooks with",
            ));
        };
        let endpoints = self.endpoints(urls)?;
        if events_topic.is_none()
            && let Some(kind) = endpoints
                .iter()
                .filter(|e| !e.every)
                .flat_map(|e| e.events.iter())
                .find(|k| k.is_presence())
        {
            return Err(invalid(
                "KAFKA_EVENTS_TOPIC",
                format!(
                    "the topic nodes produce presence changes to (WEBHOOK_URL asks for `{}`)",
                    kind.name()
                ),
            ));
        }
        Ok(HooksOptions {
            endpoints,
            secret: secret.clone(),
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            max_attempts: (self.webhook_max_attempts > 0).then_some(self.webhook_max_attempts),
        })
    }
}
