//! Chat messages, room names and display names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Now in Unix milliseconds: the clock of a message's `ts` (0 if the
/// system clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Longest room name, in bytes (all allowed characters are ASCII).
pub const MAX_ROOM_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The room-name rule as a regular expression, for clients that check
/// names before sending them (`GET /api/config`).
pub const ROOM_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// A validated room name: 1-64 characters from `[A-Za-z0-9_.:-]`.
///
/// The character set keeps names safe to embed in Redis channel names, Kafka
/// keys, URLs and log lines without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

/// Why a room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name must be 1-{MAX_ROOM_LEN} characters")]
    Length,
    #[error("room name may only contain A-Z a-z 0-9 _ . : -")]
    Characters,
}

impl RoomName {
    /// Validates `name`, saying why it is refused.
    pub fn parse(name: &str) -> Result<Self, RoomNameError> {
        if name.is_empty() || name.len() > MAX_ROOM_LEN {
            return Err(RoomNameError::Length);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return Err(RoomNameError::Characters);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoomName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoomName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Validates a display name: trimmed, 1-32 characters, no control characters.
pub fn validate_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("name must be 1-{MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// One chat message as delivered to clients, stored, and returned as history.
///
/// `id` is a UUID (v7 when the server assigns it, so ids sort by time); it is
/// the idempotency key all the way to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Unique id; a retry with the same id is stored once.
    pub id: Uuid,
    /// The room it was sent to.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[A-Za-z0-9_.:-]{1,64}$"))]
    pub room: RoomName,
    /// The sender's display name.
    pub from: String,
    /// The text, at most the configured number of bytes; empty when the
    /// message carries only `data`.
    #[serde(default)]
    pub text: String,
    /// A JSON value, when the sender gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub data: Option<Data>,
    /// When the server accepted it, in Unix milliseconds.
    pub ts: i64,
    /// Its position in the room: 1, 2, 3, ... within `epoch`, with no gaps
    /// and no repeats. 0 for a message without one (stored before
    /// positions existed, and not renumbered).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// The room's epoch `seq` counts in: it changes only when the ordering
    /// point lost the room's state. Empty when `seq` is 0.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// A tombstone: the message was deleted (moderation); `text` and
    /// `data` are gone, its id and position stay.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

impl Message {
    /// This message as its tombstone: the same id, room, time and
    /// position, without its contents.
    pub fn tombstone(&self) -> Message {
        Message {
            text: String::new(),
            data: None,
            deleted: true,
            ..self.clone()
        }
    }
}

/// A JSON value carried as its compact encoding, written into frames,
/// records and rows as it is (never parsed again on the way).
#[derive(Clone)]
pub struct Data(Arc<RawValue>);

impl Data {
    /// The compact encoding of `value`.
    pub fn from_value(value: &serde_json::Value) -> Data {
        let text =
            serde_json::to_string(value).unwrap_or_else(|_| unreachable!("values serialize"));
        Data::parse(text).unwrap_or_else(|_| unreachable!("serde_json writes JSON"))
    }

    /// Checks that `json` is one JSON value and keeps it as it is.
    pub fn parse(json: String) -> Result<Data, serde_json::Error> {
        RawValue::from_string(json).map(|raw| Data(Arc::from(raw)))
    }

    /// The encoding.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Data {}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| Data(Arc::from(raw)))
    }
}

/// What a sender sends: a text, a JSON value, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// Empty when there is only `data`.
    pub text: String,
    pub data: Option<Data>,
}

impl From<&str> for Payload {
    fn from(text: &str) -> Payload {
        Payload::text(text)
    }
}

impl Payload {
    /// A text alone.
    pub fn text(text: impl Into<String>) -> Payload {
        Payload {
            text: text.into(),
            data: None,
        }
    }

    /// What it costs on the wire, as every frame, record and history page
    /// carries it: the text escaped as JSON (without its quotes) plus the
    /// data's encoding.
    pub fn cost(&self) -> usize {
        crate::json_string_len(&self.text) + self.data.as_ref().map_or(0, |d| d.get().len())
    }
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A room's position: the epoch and the last seq in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::parse("lobby").is_ok());
        assert!(RoomName::parse("team-a.b:c_d").is_ok());
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
        assert_eq!(RoomName::parse(&"a".repeat(65)), Err(RoomNameError::Length));
        assert_eq!(RoomName::parse(""), Err(RoomNameError::Length));
        assert_eq!(RoomName::parse("has space"), Err(RoomNameError::Characters));
        assert!(RoomName::parse("émoji").is_err());
        assert!(RoomName::parse("a/b").is_err());
    }

    #[test]
    fn the_published_pattern_is_the_rule() {
        assert!(ROOM_PATTERN.ends_with(&format!("{{1,{MAX_ROOM_LEN}}}$")));
        for name in ["a", "team-a.b:c_d", "Z9"] {
            assert!(RoomName::parse(name).is_ok(), "{name}");
        }
        // Every character the pattern lists is accepted, one more is not.
        let listed = "ABCXYZabcxyz0189_.:-";
        assert!(RoomName::parse(listed).is_ok());
        assert!(RoomName::parse("a/b").is_err() && !ROOM_PATTERN.contains('/'));
    }

    #[test]
    fn names() {
        assert_eq!(validate_name("  alice ").unwrap(), "alice");
        assert_eq!(validate_name("Ünïcode 名前").unwrap(), "Ünïcode 名前");
        assert!(validate_name(&"é".repeat(32)).is_ok());
        assert!(validate_name(&"é".repeat(33)).is_err());
        assert!(validate_name("   ").is_err());
        assert!(validate_name("a\nb").is_err());
    }

    #[test]
    fn message_round_trips() {
        let m = Message {
            id: Uuid::now_v7(),
            room: RoomName::parse("lobby").unwrap(),
            from: "alice".into(),
            text: "hi \"there\"".into(),
            ts: 1_700_000_000_000,
            seq: 0,
            epoch: String::new(),
            data: None,
            deleted: false,
        };
        let json = serde_json::to_string(&m).unwrap();
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(!json.contains("data") && !json.contains("deleted"));
        let with_data = Message {
            text: String::new(),
            data: Some(Data::from_value(&serde_json::json!({"x": [1, "two"]}))),
            ..m.clone()
        };
        let json = serde_json::to_string(&with_data).unwrap();
        assert!(json.contains(r#""data":{"x":[1,"two"]}"#), "{json}");
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), with_data);
        let gone = with_data.tombstone();
        let json = serde_json::to_string(&gone).unwrap();
        assert!(
            json.contains(r#""deleted":true"#) && !json.contains("\"x\""),
            "{json}"
        );
        assert!(serde_json::from_str::<Message>(&json.replace("lobby", "bad room")).is_err());
    }
}
