//! The journal's record format: the value of each Kafka record (documented
//! in docs/protocol.md as the log format). The key is the room name.

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

#[derive(Serialize)]
struct Out<'a> {
    id: &'a Uuid,
    room: &'a RoomName,
    from: &'a str,
    text: &'a str,
    ts: i64,
    node: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    seq: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    epoch: &'a str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct In {
    id: Uuid,
    room: RoomName,
    from: String,
    text: String,
    ts: i64,
    node: Option<String>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    epoch: String,
}

/// Encodes `message`, accepted by `node`, as a journal record value.
pub fn encode(node: &str, m: &Message) -> Vec<u8> {
    let out = Out {
        id: &m.id,
        room: &m.room,
        from: &m.from,
        text: &m.text,
        ts: m.ts,
        node,
        seq: m.seq,
        epoch: &m.epoch,
    };
    serde_json::to_vec(&out).unwrap_or_else(|_| unreachable!("messages always serialize"))
}

/// Decodes a journal record value into the message and the accepting node.
pub fn decode(bytes: &[u8]) -> Result<(Message, Option<String>), String> {
    let r: In = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok((
        Message {
            id: r.id,
            room: r.room,
            from: r.from,
            text: r.text,
            ts: r.ts,
            seq: r.seq,
            epoch: r.epoch,
        },
        r.node,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_old_records_have_none() {
        let m = Message {
            id: Uuid::now_v7(),
            room: RoomName::parse("r").unwrap(),
            from: "a".into(),
            text: "t".into(),
            ts: 9,
            seq: 42,
            epoch: "e1".into(),
        };
        assert_eq!(decode(&encode("n1", &m)).unwrap().0, m);
        let old = format!(
            r#"{{"id":"{}","room":"r","from":"a","text":"t","ts":9,"node":"n1"}}"#,
            m.id
        );
        let (read, _) = decode(old.as_bytes()).unwrap();
        assert_eq!((read.seq, read.epoch.as_str()), (0, ""));
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_a_message() {
        let m = Message {
            id: Uuid::now_v7(),
            room: RoomName::parse("r").unwrap(),
            from: "a".into(),
            text: "t".into(),
            ts: 9,
            seq: 0,
            epoch: String::new(),
        };
        let bytes = encode("n1", &m);
        assert_eq!(decode(&bytes).unwrap(), (m, Some("n1".into())));
        assert!(decode(b"\xff\xfe").is_err());
        assert!(decode(br#"{"id":"x"}"#).is_err());
        let bad_room = String::from_utf8(bytes)
            .unwrap()
            .replace("\"r\"", "\"no spaces allowed\"");
        assert!(decode(bad_room.as_bytes()).is_err());
    }
}
