//! Durable webhooks (`switchboard hooks`): the journal topic (messages and
//! deletions) and, with `KAFKA_EVENTS_TOPIC`, the presence changes' topic
//! (members joining and leaving, rooms occupied and vacated), read in a
//! consumer group of its own, POSTed to each endpoint in batches, signed,
//! at least once. Offsets are committed only after every endpoint answered
//! 2xx for the batch (or the batch went to `webhook_dead_letters` after
//! `max_attempts`), so a crash re-sends at most the batch in hand; each event
//! carries a stable idempotency key for the receiver to drop repeats.
//! Batches go out one after the other, in each partition's order, so each
//! room's events of one topic arrive in order (among first deliveries); a
//! message and a presence change of one room are not ordered between them.
//!
//! The body is `{"events":[...]}`; the headers `X-Switchboard-Timestamp`
//! (Unix seconds) and `X-Switchboard-Signature: sha256=<hex>`, the
//! HMAC-SHA256 with the shared secret of `{timestamp}.{body}`, so a receiver
//! can check both who sent it and that it is fresh.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use switchboard_journal::record::PresenceRecord;
use switchboard_protocol::{Message, PresenceEvent, RoomName};
use switchboard_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{Batch, Sink};

/// The first wait after a failed attempt; it doubles up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What an endpoint may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A message was accepted.
    Message,
    /// A message was deleted through the server API.
    MessageDeleted,
    /// A room's first name came (from the events topic).
    RoomOccupied,
    /// A room's last name left.
    RoomVacated,
    /// A name's first connection in a room, anywhere in the cluster.
    MemberJoined,
    /// A name's last connection in a room went.
    MemberLeft,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Message,
        EventKind::MessageDeleted,
        EventKind::RoomOccupied,
        EventKind::RoomVacated,
        EventKind::MemberJoined,
        EventKind::MemberLeft,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::MessageDeleted => "message_deleted",
            Self::RoomOccupied => "room_occupied",
            Self::RoomVacated => "room_vacated",
            Self::MemberJoined => "member_joined",
            Self::MemberLeft => "member_left",
        }
    }

    /// Whether the event comes from the presence changes' topic.
    pub fn is_presence(self) -> bool {
        !matches!(self, Self::Message | Self::MessageDeleted)
    }
}

/// One receiver and the events it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub events: Vec<EventKind>,
    /// No `;events=`: every event there is.
    pub every: bool,
}

impl Endpoint {
    /// `URL` (every event) or `URL;events=message,message_deleted`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (url, events) = match text.split_once(";events=") {
            Some((url, events)) => {
                let kinds = events
                    .split(',')
                    .map(|e| {
                        EventKind::parse(e.trim()).ok_or_else(|| format!("unknown event `{e}`"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (url, kinds)
            }
            None => (text, EventKind::ALL.to_vec()),
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        }
        Ok(Self {
            url: url.to_owned(),
            every: !text.contains(";events="),
            events,
        })
    }
}

/// Settings of `switchboard hooks` beside the consumer's.
#[derive(Debug, Clone)]
pub struct HooksOptions {
    pub endpoints: Vec<Endpoint>,
    /// The HMAC key of the signatures.
    pub secret: String,
    /// How long one POST may take.
    pub timeout: Duration,
    /// Attempts before a batch goes to `webhook_dead_letters`; `None`:
    /// never give up.
    pub max_attempts: Option<u32>,
}

/// One event as the receiver gets it.
#[derive(Debug, Serialize)]
struct Event<'a> {
    /// Stable across re-sends: the receiver's idempotency key.
    key: String,
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(flatten)]
    body: Body<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Message(&'a Message),
    Presence {
        room: &'a RoomName,
        name: &'a str,
        /// Names in the room after the change.
        count: u64,
        ts: i64,
    },
}

/// The events of one presence change: `member_joined`, and
/// `room_occupied` when it was the room's first name (`member_left`, and
/// `room_vacated` for its last).
fn presence_events(change: &PresenceRecord) -> Vec<Event<'_>> {
    let (member, room, edge) = match change.event {
        PresenceEvent::Join => (
            EventKind::MemberJoined,
            EventKind::RoomOccupied,
            change.count == 1,
        ),
        PresenceEvent::Leave => (
            EventKind::MemberLeft,
            EventKind::RoomVacated,
            change.count == 0,
        ),
        PresenceEvent::Count => return Vec::new(),
    };
    let event = |kind, key| Event {
        key,
        kind,
        body: Body::Presence {
            room: &change.room,
            name: &change.name,
            count: change.count,
            ts: change.ts,
        },
    };
    let mut events = vec![event(member, change.key.clone())];
    if edge {
        // Occupied before its first member's join; vacated after its last's leave.
        let at = if change.event == PresenceEvent::Join {
            0
        } else {
            1
        };
        events.insert(at, event(room, format!("{}:{}", change.key, room.name())));
    }
    events
}

/// The webhooks' sink.
pub struct HookSink {
    client: reqwest::Client,
    options: HooksOptions,
    store: Arc<dyn Store>,
}

impl HookSink {
    pub fn new(options: HooksOptions, store: Arc<dyn Store>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            options,
            store,
        })
    }

    /// POSTs `body` to `endpoint` until it answers 2xx, or the attempts run
    /// out (dead letter), or shutdown (false).
    async fn deliver(
        &self,
        endpoint: &Endpoint,
        body: &[u8],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut wait = FIRST_WAIT;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match self.post(&endpoint.url, body).await {
                Ok(()) => {
                    metrics::counter!("switchboard_hooks_batches_delivered_total").increment(1);
                    return true;
                }
                Err(e) => e,
            };
            metrics::counter!("switchboard_hooks_attempts_failed_total").increment(1);
            if self.options.max_attempts.is_some_and(|max| attempt >= max) {
                tracing::warn!(url = %endpoint.url, attempt, %error, "webhook batch goes to webhook_dead_letters");
                loop {
                    match self
                        .store
                        .webhook_dead_letter(&endpoint.url, body, &error)
                        .await
                    {
                        Ok(()) => {
                            metrics::counter!("switchboard_hooks_dead_letters_total").increment(1);
                            return true;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot store a webhook dead letter; retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => return false,
                                () = tokio::time::sleep(MAX_WAIT / 4) => {}
                            }
                        }
                    }
                }
            }
            tracing::warn!(url = %endpoint.url, attempt, %error, retry_in_ms = wait.as_millis() as u64, "webhook failed; retrying the same batch");
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_WAIT);
        }
    }

    async fn post(&self, url: &str, body: &[u8]) -> Result<(), String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Switchboard-Timestamp", timestamp.to_string())
            .header(
                "X-Switchboard-Signature",
                format!("sha256={}", sign(&self.options.secret, timestamp, body)),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

/// The hex HMAC-SHA256 of `{timestamp}.{body}` with `secret`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sink for HookSink {
    fn name(&self) -> &'static str {
        "hooks"
    }

    async fn take(&self, batch: &Batch, shutdown: &CancellationToken) -> bool {
        let mut events: Vec<Event<'_>> = batch
            .records
            .iter()
            .map(|r| {
                let (kind, key) = if r.message.deleted {
                    (
                        EventKind::MessageDeleted,
                        format!("{}:deleted", r.message.id),
                    )
                } else {
                    (EventKind::Message, r.message.id.to_string())
                };
                Event {
                    key,
                    kind,
                    body: Body::Message(&r.message),
                }
            })
            .collect();
        events.extend(batch.presence.iter().flat_map(presence_events));
        for endpoint in &self.options.endpoints {
            let wanted: Vec<&Event<'_>> = events
                .iter()
                .filter(|e| endpoint.events.contains(&e.kind))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let body = serde_json::to_vec(&serde_json::json!({ "events": wanted }))
                .unwrap_or_else(|_| unreachable!("events serialize"));
            if !self.deliver(endpoint, &body, shutdown).await {
                return false;
            }
            metrics::counter!("switchboard_hooks_events_total").increment(wanted.len() as u64);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_their_events() {
        let e = Endpoint::parse("https://example.com/hook;events=message_deleted").unwrap();
        assert_eq!(e.events, [EventKind::MessageDeleted]);
        assert_eq!(Endpoint::parse("http://h:1/x").unwrap().events.len(), 6);
        assert!(Endpoint::parse("ftp://h/x").is_err());
        assert!(Endpoint::parse("https://h/x;events=wave").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 does not cover this layout; the value below was computed
        // with Python's hmac module: hmac.new(b"secret", b"1.{}", "sha256").
        assert_eq!(
            sign("secret", 1, b"{}"),
            "1122767b193110cfec322b6f199b599edbf608ed087f2d27afb0b97d99523908"
        );
    }

    #[test]
    fn presence_changes_become_member_and_room_events() {
        let change = |event, count| PresenceRecord {
            key: "k".into(),
            event,
            room: RoomName::parse("r").unwrap(),
            name: "ann".into(),
            count,
            ts: 1,
            node: "n".into(),
        };
        let kinds = |c: &PresenceRecord| {
            presence_events(c)
                .iter()
                .map(|e| (e.kind.name(), e.key.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&change(PresenceEvent::Join, 1)),
            [
                ("room_occupied", "k:room_occupied".into()),
                ("member_joined", "k".into())
            ]
        );
        assert_eq!(
            kinds(&change(PresenceEvent::Join, 2)),
            [("member_joined", "k".into())]
        );
        assert_eq!(
            kinds(&change(PresenceEvent::Leave, 0)),
            [
                ("member_left", "k".into()),
                ("room_vacated", "k:room_vacated".into())
            ]
        );
        assert_eq!(
            kinds(&change(PresenceEvent::Leave, 3)),
            [("member_left", "k".into())]
        );
        let body =
            serde_json::to_value(&presence_events(&change(PresenceEvent::Join, 2))[0]).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"key": "k", "type": "member_joined", "room": "r", "name": "ann", "count": 2, "ts": 1})
        );
    }
}
