//! What a client asks for: `/ws` text frames and Socket.IO events decoded
//! into one [`Request`] type with one set of rules (see docs/protocol.md).

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{Data, ErrorCode, FrameError, Payload, PlainValue, Position, RoomName};

/// Longest accepted `since.epoch`, in bytes.
pub const MAX_EPOCH_LEN: usize = 64;

/// serde_json's private marker of a raw value.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// Longest accepted `ref`, in bytes, when it is a string.
pub const MAX_REF_LEN: usize = 128;

/// The limits a decoder applies; they come from the server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message text, in bytes.
    pub max_message_bytes: usize,
    /// History length when `join` does not say.
    pub history_default: u32,
    /// Largest history a `join` gets; larger requests are capped, not refused.
    pub history_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4096,
            history_default: 50,
            history_max: 500,
        }
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Join a room and receive its latest `history` messages, or, with
    /// `since`, exactly the messages after that position.
    Join {
        room: RoomName,
        /// `None` when not asked: the room's policy decides.
        history: Option<u32>,
        since: Option<Position>,
        /// Also receive the room's `presence` events.
        presence: bool,
    },
    /// Who is in a joined room, across every node.
    Presence { room: RoomName },
    /// Leave a room.
    Leave { room: RoomName },
    /// Send a text, a JSON value or both to a joined room; `id` makes
    /// retries idempotent.
    Send {
        room: RoomName,
        payload: Payload,
        id: Option<Uuid>,
        /// Delivered live only: never journaled, stored or positioned.
        ephemeral: bool,
    },
    /// Liveness check.
    Ping,
    /// A new token for the same user, before the connection's expires.
    Refresh { token: String },
}

/// Longest token a `refresh` may carry, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// A decoded client frame with its optional correlation `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the answer (`ack`, `error`, ...) so clients can match it.
    pub r#ref: Option<Value>,
    /// The request itself.
    pub frame: ClientFrame,
}

impl Request {
    /// Decodes one `/ws` text frame.
    pub fn decode(text: &str, limits: &Limits) -> Result<Self, FrameError> {
        let PlainValue(value) = serde_json::from_str(text)
            .map_err(|e| FrameError::new(ErrorCode::BadFrame, format!("frame is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(FrameError::new(
                ErrorCode::BadFrame,
                "frame must be a JSON object",
            ));
        };
        let r#ref = read_ref(&map)?;
        let ty = match map.get("type") {
            Some(Value::String(ty)) => ty.as_str(),
            Some(_) => return Err(bad_field("type", "a string").with_ref(r#ref)),
            None => return Err(missing("type").with_ref(r#ref)),
        };
        let frame = decode_fields(ty, &map, limits).map_err(|e| e.with_ref(r#ref.clone()))?;
        Ok(Self { r#ref, frame })
    }

    /// A `send` to `room` built from a document's `text`, `data`,
    /// `id` and `ephemeral` fields, with a `send` frame's rules (the
    /// publish API's body).
    pub fn send_to(
        room: RoomName,
        fields: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Self, FrameError> {
        Ok(Self {
            r#ref: None,
            frame: send_fields(room, fields, limits)?,
        })
    }

    /// A `send` of `text` to `room` with a `send` frame's rules and no
    /// `id` or `ref` (the original `event:message`).
    pub fn send_text(room: RoomName, text: String, limits: &Limits) -> Result<Self, FrameError> {
        let payload = Payload::text(text);
        check_payload(&payload, limits)?;
        Ok(Self {
            r#ref: None,
            frame: ClientFrame::Send {
                room,
                payload,
                id: None,
                ephemeral: false,
            },
        })
    }

    /// Maps a Socket.IO event (`join`, `leave`, `send`, `presence`) with its data object
    /// onto the same request a `/ws` client would send, with the same rules.
    pub fn from_event(event: &str, data: &Value, limits: &Limits) -> Result<Self, FrameError> {
        if !matches!(event, "join" | "leave" | "send" | "presence" | "refresh") {
            return Err(FrameError::new(
                ErrorCode::BadFrame,
                format!("unknown event `{event}`"),
            ));
        }
        let Value::Object(map) = data else {
            return Err(FrameError::new(
                ErrorCode::BadFrame,
                "event data must be an object",
            ));
        };
        let r#ref = read_ref(map)?;
        let frame = decode_fields(event, map, limits).map_err(|e| e.with_ref(r#ref.clone()))?;
        Ok(Self { r#ref, frame })
    }
}

fn decode_fields(
    ty: &str,
    map: &Map<String, Value>,
    limits: &Limits,
) -> Result<ClientFrame, FrameError> {
    match ty {
        "join" => {
            let room = room(map)?;
            let history = match map.get("history") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(n) => Some(n.min(u64::from(limits.history_max)) as u32),
                    None => return Err(bad_field("history", "a non-negative integer")),
                },
            };
            let since = match map.get("since") {
                None | Some(Value::Null) => None,
                Some(v) => Some(position(v)?),
            };
            let presence = match map.get("presence") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad_field("presence", "a boolean")),
            };
            Ok(ClientFrame::Join {
                room,
                history,
                since,
                presence,
            })
        }
        "leave" => Ok(ClientFrame::Leave { room: room(map)? }),
        "presence" => Ok(ClientFrame::Presence { room: room(map)? }),
        "send" => send_fields(room(map)?, map, limits),
        "ping" => Ok(ClientFrame::Ping),
        "refresh" => match map.get("token") {
            Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_TOKEN_BYTES => {
                Ok(ClientFrame::Refresh { token: t.clone() })
            }
            Some(_) => Err(bad_field(
                "token",
                &format!("a JWT string of 1 to {MAX_TOKEN_BYTES} bytes"),
            )),
            None => Err(missing("token")),
        },
        other => Err(FrameError::new(
            ErrorCode::BadFrame,
            format!("unknown type `{other}`"),
        )),
    }
}

/// A `send` to `room` from the fields `text` and `data` (one or both),
/// and the optional `id` and `ephemeral`, of `map`.
fn send_fields(
    room: RoomName,
    map: &Map<String, Value>,
    limits: &Limits,
) -> Result<ClientFrame, FrameError> {
    let text = match map.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.is_empty() => {
            return Err(bad_field(
                "text",
                "a non-empty string (leave it out to send data alone)",
            ));
        }
        Some(Value::String(t)) => Some(t),
        Some(_) => return Err(bad_field("text", "a string")),
    };
    let data = match map.get("data") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Data::from_value(v)),
    };
    // serde_json's private key for raw values: a Value parsed from such
    // data anywhere downstream would parse the string under it as a new
    // document (see `PlainValue`), so it never enters a message.
    if data
        .as_ref()
        .is_some_and(|d| d.get().contains(RAW_VALUE_KEY))
    {
        return Err(bad_field(
            "data",
            "free of the key `$serde_json::private::RawValue`",
        ));
    }
    if text.is_none() && data.is_none() {
        return Err(missing("text"));
    }
    let payload = Payload {
        text: text.cloned().unwrap_or_default(),
        data,
    };
    check_payload(&payload, limits)?;
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(Uuid::try_parse(s).map_err(|_| bad_field("id", "a UUID string"))?)
        }
        Some(_) => return Err(bad_field("id", "a UUID string")),
    };
    let ephemeral = match map.get("ephemeral") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_field("ephemeral", "a boolean")),
    };
    Ok(ClientFrame::Send {
        room,
        payload,
        id,
        ephemeral,
    })
}

/// The rules a message follows: a text, when there is no data, not
/// empty; and text and data together at most `max_message_bytes` as they
/// cost on the wire, escaped as every frame, history page and record
/// carries them (a control character is six bytes there, not one).
fn check_payload(payload: &Payload, limits: &Limits) -> Result<(), FrameError> {
    if payload.text.is_empty() && payload.data.is_none() {
        return Err(bad_field("text", "a non-empty string"));
    }
    let cost = payload.cost();
    if cost > limits.max_message_bytes {
        let what = if payload.data.is_some() {
            "text and data are"
        } else {
            "text is"
        };
        return Err(FrameError::new(
            ErrorCode::TooLarge,
            format!(
                "{what} {cost} bytes as JSON, the limit is {}",
                limits.max_message_bytes
            ),
        ));
    }
    Ok(())
}

/// The length of `s` as the contents of a JSON string (without the
/// quotes), escaped as serde_json writes it: `"`, `\` and the characters
/// with a short escape (`\n`, `\t`, ...) take two bytes, other control
/// characters six (`\u001f`), everything else its UTF-8 bytes.
pub fn json_string_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

fn read_ref(map: &Map<String, Value>) -> Result<Option<Value>, FrameError> {
    match map.get("ref") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_REF_LEN => Ok(Some(Value::String(s.clone()))),
        Some(Value::Number(n)) => Ok(Some(Value::Number(n.clone()))),
        Some(_) => Err(bad_field(
            "ref",
            "a number or a string of at most 128 bytes",
        )),
    }
}

/// A `since` position: `{"seq": n, "epoch": "..."}`.
fn position(v: &Value) -> Result<Position, FrameError> {
    let expected = || {
        bad_field(
            "since",
            "{\"seq\": a non-negative integer, \"epoch\": a string}",
        )
    };
    let Value::Object(map) = v else {
        return Err(expected());
    };
    let seq = map
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(expected)?;
    let epoch = match map.get("epoch") {
        Some(Value::String(e)) if e.len() <= MAX_EPOCH_LEN => e.clone(),
        _ => return Err(expected()),
    };
    Ok(Position { epoch, seq })
}

fn room(map: &Map<String, Value>) -> Result<RoomName, FrameError> {
    match map.get("room") {
        Some(Value::String(s)) => {
            RoomName::parse(s).map_err(|e| FrameError::new(ErrorCode::BadRoom, e.to_string()))
        }
        Some(_) => Err(bad_field("room", "a string")),
        None => Err(missing("room")),
    }
}

fn missing(field: &str) -> FrameError {
    FrameError::new(ErrorCode::BadFrame, format!("missing field `{field}`"))
}

fn bad_field(field: &str, expected: &str) -> FrameError {
    FrameError::new(
        ErrorCode::BadFrame,
        format!("field `{field}` must be {expected}"),
    )
}
