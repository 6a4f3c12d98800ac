//! Everything the server sends: `/ws` frames, also the acknowledgement
//! objects of Socket.IO events.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::message::{is_false, is_zero};
use crate::{ErrorCode, FrameError, Message, Position, RoomName};

/// Everything the server sends on `/ws`, one JSON object per text frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The room was joined; `history` is oldest first.
    Joined {
        room: RoomName,
        history: Vec<Message>,
        /// The history was cut (oldest messages left out) so the frame
        /// stays within the server's frame budget; the client pages the
        /// rest with the history API (`before` = the oldest id it got).
        #[serde(skip_serializing_if = "is_false")]
        truncated: bool,
        /// The room's position when it was joined (`epoch` and the last
        /// `seq`): where a later `join` with `since` picks up. Absent when
        /// the room has no positions (cluster mode, for now).
        #[serde(flatten)]
        position: Option<Position>,
        /// With `since`: whether `history` is exactly the messages after
        /// it (`true`), or the latest history because they can no longer
        /// all be told (`false`).
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// How many names are in the room, across every node (absent when
        /// it could not be read).
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
    },
    /// Answer to `presence`: who is in the room, across every node, the
    /// earliest first; `truncated` when more names are in it than one
    /// answer lists (`count` has them all).
    Presence {
        room: RoomName,
        count: u64,
        members: Vec<Member>,
        #[serde(skip_serializing_if = "is_false")]
        truncated: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
    },
    /// A change in a room's presence, to members that joined with
    /// `presence: true`: a name joined or left (its first connection came,
    /// its last went), or, in rooms past the server's event limit, the
    /// count alone, at most once a second.
    PresenceChange(PresenceChange),
    /// The room was left.
    Left {
        room: RoomName,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
    },
    /// A message of a joined room, delivered once to every member.
    Message(Message),
    /// A message of a joined room was deleted (moderation): forget it.
    Deleted { room: RoomName, id: Uuid },
    /// The sender's message `id` is durable, at this position in its room
    /// (`seq` 0 and an empty `epoch` are left out: no position).
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
        id: Uuid,
        #[serde(skip_serializing_if = "is_zero")]
        seq: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        epoch: String,
    },
    /// Answer to `ping`.
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
    },
    /// The connection's token expires in `in_ms`: send `refresh` with a
    /// new one before, or the connection is closed (4001).
    TokenExpiring { in_ms: u64 },
    /// A `refresh` was taken: the connection now lasts until the new
    /// token's `exp` (Unix seconds).
    Refreshed {
        exp: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
    },
    /// A refused request; the connection stays open.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<Value>,
        /// For `unavailable`: the message id to resend with.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
    },
}

/// One name in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub name: String,
    /// Its connections in the room, every node together.
    pub connections: u64,
    /// When its earliest connection still there joined, Unix milliseconds.
    pub since: i64,
}

/// What changed in a room's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub room: RoomName,
    pub event: PresenceEvent,
    /// The name that joined or left (absent for `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Names in the room after the change.
    pub count: u64,
}

/// The kind of a [`PresenceChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    Join,
    Leave,
    Count,
}

impl ServerFrame {
    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        // Every field is a string, number, UUID or nested struct of those:
        // serialization cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("server frames always serialize"))
    }

    /// Encodes `ServerFrame::Message` from a borrowed message: the fan-out
    /// path encodes each message once per node without cloning it.
    pub fn encode_message(m: &Message) -> String {
        #[derive(Serialize)]
        struct MessageFrame<'a> {
            #[serde(rename = "type")]
            ty: &'static str,
            #[serde(flatten)]
            message: &'a Message,
        }
        serde_json::to_string(&MessageFrame {
            ty: "message",
            message: m,
        })
        .unwrap_or_else(|_| unreachable!("messages always serialize"))
    }

    /// The error frame for a refused request.
    pub fn error(err: FrameError) -> Self {
        ServerFrame::Error {
            code: err.code,
            message: err.message,
            r#ref: err.r#ref,
            id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, FrameError, Message, RoomName};
    use serde_json::json;
    use uuid::Uuid;

    #[test]
    fn encodes_server_frames() {
        let id = Uuid::nil();
        let m = Message {
            id,
            room: RoomName::parse("r").unwrap(),
            from: "a".into(),
            text: "t".into(),
            ts: 5,
            seq: 0,
            epoch: String::new(),
            data: None,
            deleted: false,
        };
        let v: Value = serde_json::from_str(&ServerFrame::Message(m.clone()).encode()).unwrap();
        assert_eq!(
            v,
            json!({"type":"message","id":id.to_string(),"room":"r","from":"a","text":"t","ts":5})
        );
        assert_eq!(
            ServerFrame::encode_message(&m),
            ServerFrame::Message(m.clone()).encode()
        );
        let with_data = Message {
            data: Some(crate::Data::from_value(&json!({"k": [1, {"n": null}]}))),
            ..m.clone()
        };
        let encoded = ServerFrame::encode_message(&with_data);
        assert_eq!(encoded, ServerFrame::Message(with_data.clone()).encode());
        assert!(
            encoded.contains(r#""data":{"k":[1,{"n":null}]}"#),
            "{encoded}"
        );
        let raw = serde_json::value::to_raw_value(&with_data).unwrap();
        assert!(
            raw.get().contains(r#""data":{"k":[1,{"n":null}]}"#),
            "as Socket.IO sends it"
        );
        let v: Value = serde_json::from_str(
            &ServerFrame::Deleted {
                room: RoomName::parse("r").unwrap(),
                id,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(v, json!({"type":"deleted","room":"r","id":id.to_string()}));
        let v: Value = serde_json::from_str(
            &ServerFrame::Ack {
                r#ref: Some(json!("c1")),
                id,
                seq: 0,
                epoch: String::new(),
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(v, json!({"type":"ack","ref":"c1","id":id.to_string()}));
        let v: Value = serde_json::from_str(
            &ServerFrame::Ack {
                r#ref: None,
                id,
                seq: 7,
                epoch: "e1".into(),
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"ack","id":id.to_string(),"seq":7,"epoch":"e1"})
        );
        let v: Value = serde_json::from_str(&ServerFrame::Pong { r#ref: None }.encode()).unwrap();
        assert_eq!(v, json!({"type":"pong"}));
        let err = FrameError::new(ErrorCode::NotJoined, "join first").with_ref(Some(json!(1)));
        let v: Value = serde_json::from_str(&ServerFrame::error(err).encode()).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"not_joined","message":"join first","ref":1})
        );
        let v: Value = serde_json::from_str(
            &ServerFrame::Joined {
                room: RoomName::parse("r").unwrap(),
                history: vec![m.clone()],
                truncated: false,
                position: None,
                recovered: None,
                count: None,
                r#ref: None,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(v["history"][0]["text"], "t");
        assert!(
            v.get("seq").is_none() && v.get("recovered").is_none(),
            "{v}"
        );
        let v: Value = serde_json::from_str(
            &ServerFrame::Joined {
                room: RoomName::parse("r").unwrap(),
                history: vec![m],
                truncated: false,
                position: Some(Position {
                    epoch: "e".into(),
                    seq: 9,
                }),
                recovered: Some(true),
                count: Some(3),
                r#ref: None,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(
            (&v["epoch"], &v["seq"], &v["recovered"], &v["count"]),
            (&json!("e"), &json!(9), &json!(true), &json!(3))
        );
        let change = ServerFrame::PresenceChange(PresenceChange {
            room: RoomName::parse("r").unwrap(),
            event: PresenceEvent::Leave,
            name: Some("ann".into()),
            count: 2,
        });
        assert_eq!(
            serde_json::from_str::<Value>(&change.encode()).unwrap(),
            json!({"type": "presence_change", "room": "r", "event": "leave", "name": "ann", "count": 2})
        );
    }
}
