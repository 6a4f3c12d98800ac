//! What a client asks for: `/ws` text frames and Socket.IO events decoded
//! into one [`Request`] type with one set of rules (see docs/protocol.md).

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{ErrorCode, FrameError, PlainValue, RoomName};

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
    /// Join a room and receive its latest `history` messages.
    Join { room: RoomName, history: u32 },
    /// Leave a room.
    Leave { room: RoomName },
    /// Send `text` to a joined room; `id` makes retries idempotent.
    Send {
        room: RoomName,
        text: String,
        id: Option<Uuid>,
    },
    /// Liveness check.
    Ping,
}

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

    /// A `send` to `room` built from a document's `text` and optional `id`
    /// fields, with a `send` frame's rules (the publish API's body).
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
        check_text(&text, limits)?;
        Ok(Self {
            r#ref: None,
            frame: ClientFrame::Send {
                room,
                text,
                id: None,
            },
        })
    }

    /// Maps a Socket.IO event (`join`, `leave`, `send`) with its data object
    /// onto the same request a `/ws` client would send, with the same rules.
    pub fn from_event(event: &str, data: &Value, limits: &Limits) -> Result<Self, FrameError> {
        if !matches!(event, "join" | "leave" | "send") {
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
                None | Some(Value::Null) => limits.history_default,
                Some(v) => match v.as_u64() {
                    Some(n) => n.min(u64::from(limits.history_max)) as u32,
                    None => return Err(bad_field("history", "a non-negative integer")),
                },
            };
            Ok(ClientFrame::Join { room, history })
        }
        "leave" => Ok(ClientFrame::Leave { room: room(map)? }),
        "send" => send_fields(room(map)?, map, limits),
        "ping" => Ok(ClientFrame::Ping),
        other => Err(FrameError::new(
            ErrorCode::BadFrame,
            format!("unknown type `{other}`"),
        )),
    }
}

/// A `send` to `room` from the fields `text` and optional `id` of `map`.
fn send_fields(
    room: RoomName,
    map: &Map<String, Value>,
    limits: &Limits,
) -> Result<ClientFrame, FrameError> {
    let text = match map.get("text") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(bad_field("text", "a string")),
        None => return Err(missing("text")),
    };
    check_text(text, limits)?;
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(Uuid::try_parse(s).map_err(|_| bad_field("id", "a UUID string"))?)
        }
        Some(_) => return Err(bad_field("id", "a UUID string")),
    };
    Ok(ClientFrame::Send {
        room,
        text: text.clone(),
        id,
    })
}

/// The rules a message text follows: not empty, and at most
/// `max_message_bytes` as it costs on the wire, escaped as every frame,
/// history page and record carries it (a control character is six bytes
/// there, not one).
fn check_text(text: &str, limits: &Limits) -> Result<(), FrameError> {
    if text.is_empty() {
        return Err(FrameError::new(
            ErrorCode::TooLarge,
            "text must not be empty",
        ));
    }
    let cost = json_string_len(text);
    if cost > limits.max_message_bytes {
        return Err(FrameError::new(
            ErrorCode::TooLarge,
            format!(
                "text is {cost} bytes as JSON, the limit is {}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(text: &str) -> Result<Request, FrameError> {
        Request::decode(text, &Limits::default())
    }

    fn code(text: &str) -> ErrorCode {
        decode(text).unwrap_err().code
    }

    #[test]
    fn wire_length_is_what_serde_json_writes() {
        let samples = [
            String::new(),
            "plain".into(),
            "quote \" and back\\slash / é 名前 🎉".into(),
            "\n\r\t\u{8}\u{c}".into(),
            (0u8..0x20).map(char::from).collect::<String>(),
            "\u{7f}\u{2028}".into(),
        ];
        for s in samples {
            let encoded = serde_json::to_string(&s).unwrap();
            assert_eq!(json_string_len(&s), encoded.len() - 2, "{encoded}");
        }
    }

    #[test]
    fn the_size_limit_is_the_escaped_size() {
        let limits = Limits {
            max_message_bytes: 60,
            ..Limits::default()
        };
        let send =
            |text: &str| Request::from_event("send", &json!({"room": "r", "text": text}), &limits);
        assert!(send(&"a".repeat(60)).is_ok());
        assert!(
            send(&"\u{1}".repeat(10)).is_ok(),
            "ten controls are 60 bytes"
        );
        let err = send(&"\u{1}".repeat(11)).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert!(err.message.contains("66 bytes"), "{}", err.message);
        assert!(send(&"\"".repeat(31)).is_err());
    }

    #[test]
    fn decodes_every_request() {
        let r = decode(r#"{"type":"join","room":"lobby","history":10}"#).unwrap();
        assert_eq!(
            r.frame,
            ClientFrame::Join {
                room: RoomName::parse("lobby").unwrap(),
                history: 10
            }
        );
        let r = decode(r#"{"type":"join","room":"lobby"}"#).unwrap();
        assert_eq!(
            r.frame,
            ClientFrame::Join {
                room: RoomName::parse("lobby").unwrap(),
                history: 50
            }
        );
        let r = decode(r#"{"type":"join","room":"lobby","history":100000}"#).unwrap();
        assert_eq!(
            r.frame,
            ClientFrame::Join {
                room: RoomName::parse("lobby").unwrap(),
                history: 500
            }
        );
        let r = decode(r#"{"type":"leave","room":"x","ref":7}"#).unwrap();
        assert_eq!(r.r#ref, Some(json!(7)));
        assert_eq!(
            r.frame,
            ClientFrame::Leave {
                room: RoomName::parse("x").unwrap()
            }
        );
        let id = Uuid::now_v7();
        let r = decode(&format!(
            r#"{{"type":"send","room":"x","text":"hi","ref":"c1","id":"{id}"}}"#
        ))
        .unwrap();
        assert_eq!(r.r#ref, Some(json!("c1")));
        assert_eq!(
            r.frame,
            ClientFrame::Send {
                room: RoomName::parse("x").unwrap(),
                text: "hi".into(),
                id: Some(id)
            }
        );
        assert_eq!(
            decode(r#"{"type":"ping"}"#).unwrap().frame,
            ClientFrame::Ping
        );
        assert_eq!(
            decode(r#"{"type":"ping","extra":true}"#).unwrap().frame,
            ClientFrame::Ping
        );
    }

    #[test]
    fn bad_frames() {
        assert_eq!(code("not json"), ErrorCode::BadFrame);
        assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code("\"send\""), ErrorCode::BadFrame);
        assert_eq!(code("{}"), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"join","room":5}"#), ErrorCode::BadFrame);
        assert_eq!(
            code(r#"{"type":"join","room":"a","history":-1}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a","history":"5"}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(code(r#"{"type":"send","room":"a"}"#), ErrorCode::BadFrame);
        assert_eq!(
            code(r#"{"type":"send","room":"a","text":1}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(
            code(r#"{"type":"send","room":"a","text":"x","id":"nope"}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(
            code(r#"{"type":"send","room":"a","text":"x","id":3}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(
            code(r#"{"type":"ping","ref":{"a":1}}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(
            code(&format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(129))),
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn bad_room_and_size() {
        assert_eq!(
            code(r#"{"type":"join","room":"no spaces"}"#),
            ErrorCode::BadRoom
        );
        assert_eq!(code(r#"{"type":"join","room":""}"#), ErrorCode::BadRoom);
        assert_eq!(
            code(r#"{"type":"send","room":"a","text":""}"#),
            ErrorCode::TooLarge
        );
        let limits = Limits {
            max_message_bytes: 4,
            ..Limits::default()
        };
        assert!(Request::decode(r#"{"type":"send","room":"a","text":"four"}"#, &limits).is_ok());
        let err = Request::decode(
            r#"{"type":"send","room":"a","text":"fives","ref":"r"}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert_eq!(err.r#ref, Some(json!("r")));
        // Bytes, not characters: "éé" is four bytes.
        assert!(Request::decode(r#"{"type":"send","room":"a","text":"ééé"}"#, &limits).is_err());
    }

    #[test]
    fn errors_echo_the_ref() {
        let err = decode(r#"{"type":"join","room":"bad room","ref":"j1"}"#).unwrap_err();
        assert_eq!(err.r#ref, Some(json!("j1")));
        let err = decode(r#"{"type":"nope","ref":3}"#).unwrap_err();
        assert_eq!(err.r#ref, Some(json!(3)));
    }

    #[test]
    fn socket_io_events_share_the_rules() {
        let limits = Limits::default();
        let r = Request::from_event("send", &json!({"room":"lobby","text":"hi"}), &limits).unwrap();
        assert!(matches!(r.frame, ClientFrame::Send { .. }));
        assert_eq!(
            Request::from_event("ping", &json!({}), &limits)
                .unwrap_err()
                .code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            Request::from_event("join", &json!("lobby"), &limits)
                .unwrap_err()
                .code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            Request::from_event("join", &json!({"room":"a b"}), &limits)
                .unwrap_err()
                .code,
            ErrorCode::BadRoom
        );
    }

    #[test]
    fn typed_sends_follow_the_send_frame_rules() {
        let limits = Limits {
            max_message_bytes: 10,
            ..Limits::default()
        };
        let room = RoomName::parse("lobby").unwrap();
        let sent = Request::send_text(room.clone(), "hi".into(), &limits).unwrap();
        assert_eq!(
            sent.frame,
            ClientFrame::Send {
                room: room.clone(),
                text: "hi".into(),
                id: None
            }
        );
        for bad in ["", "\u{1}\u{1}", "eleven byte"] {
            let err = Request::send_text(room.clone(), bad.into(), &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::TooLarge, "{bad:?}");
        }
        let id = Uuid::now_v7();
        let fields = json!({"text": "hey", "id": id.to_string()});
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let sent = Request::send_to(room.clone(), &fields, &limits).unwrap();
        assert_eq!(
            sent.frame,
            ClientFrame::Send {
                room: room.clone(),
                text: "hey".into(),
                id: Some(id)
            }
        );
        for (doc, code) in [
            (json!({"text": 5}), ErrorCode::BadFrame),
            (json!({}), ErrorCode::BadFrame),
            (json!({"text": "x", "id": "no"}), ErrorCode::BadFrame),
            (json!({"text": "x".repeat(11)}), ErrorCode::TooLarge),
        ] {
            let Value::Object(fields) = doc else {
                unreachable!()
            };
            let err = Request::send_to(room.clone(), &fields, &limits).unwrap_err();
            assert_eq!(err.code, code, "{fields:?}");
        }
    }
}
