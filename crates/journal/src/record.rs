//! The journal's record format: the value of each Kafka record (documented
//! in docs/protocol.md as the log format). The key is the room name.
//!
//! Version 2 (`"v": 2`) adds `data` (a JSON value) and `deleted` (a
//! tombstone: the message of that id was deleted); a record without `v` is
//! version 1, which has neither. Both are read; a higher version is
//! refused (the archiver keeps it as a dead letter).

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Data, Message, PresenceEvent, RoomName};
use uuid::Uuid;

/// The version written.
const VERSION: u8 = 2;

#[derive(Serialize)]
struct Out<'a> {
    v: u8,
    id: &'a Uuid,
    room: &'a RoomName,
    from: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Data>,
    ts: i64,
    node: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    seq: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    epoch: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    deleted: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Deserialize)]
struct In {
    #[serde(default = "version_1")]
    v: u8,
    id: Uuid,
    room: RoomName,
    from: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    data: Option<Data>,
    ts: i64,
    node: Option<String>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    deleted: bool,
}

fn version_1() -> u8 {
    1
}

/// Encodes `message`, accepted by `node`, as a journal record value.
pub fn encode(node: &str, m: &Message) -> Vec<u8> {
    let out = Out {
        v: VERSION,
        id: &m.id,
        room: &m.room,
        from: &m.from,
        text: &m.text,
        data: m.data.as_ref(),
        ts: m.ts,
        node,
        seq: m.seq,
        epoch: &m.epoch,
        deleted: m.deleted,
    };
    serde_json::to_vec(&out).unwrap_or_else(|_| unreachable!("messages always serialize"))
}

/// Decodes a journal record value into the message and the accepting node.
pub fn decode(bytes: &[u8]) -> Result<(Message, Option<String>), String> {
    let r: In = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if r.v > VERSION {
        return Err(format!("record version {} is newer than {VERSION}", r.v));
    }
    if r.v == 1 && (r.data.is_some() || r.deleted) {
        return Err("a version 1 record has no data and no tombstones".into());
    }
    Ok((
        Message {
            id: r.id,
            room: r.room,
            from: r.from,
            text: r.text,
            data: r.data,
            ts: r.ts,
            seq: r.seq,
            epoch: r.epoch,
            deleted: r.deleted,
        },
        r.node,
    ))
}

/// A presence change as the events topic (`KAFKA_EVENTS_TOPIC`) holds it:
/// a name's first connection in a room anywhere in the cluster (`join`) or
/// its last (`leave`), with the room's count of names after it. The key is
/// the room, so a room's changes keep their order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// Unique per change, kept across re-reads: the webhooks' idempotency
    /// key.
    pub key: String,
    pub event: PresenceEvent,
    pub room: RoomName,
    pub name: String,
    /// Names in the room after the change (0: the room is empty now).
    pub count: u64,
    /// When the node saw the change (Unix ms).
    pub ts: i64,
    /// The node that saw it.
    pub node: String,
}

impl PresenceRecord {
    /// Encodes the record as the events topic's value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("presence records serialize"))
    }

    /// Decodes an events topic value; `count` events are not stored there.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.event == PresenceEvent::Count {
            return Err("count changes are not presence records".into());
        }
        Ok(r)
    }
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
            data: None,
            deleted: false,
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
            data: None,
            deleted: false,
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

    #[test]
    fn version_2_carries_data_and_tombstones_and_newer_ones_are_refused() {
        let m = Message {
            id: Uuid::now_v7(),
            room: RoomName::parse("r").unwrap(),
            from: "a".into(),
            text: String::new(),
            ts: 9,
            seq: 3,
            epoch: "e".into(),
            data: Some(Data::from_value(&serde_json::json!({"move": [1, 2]}))),
            deleted: false,
        };
        let bytes = encode("n1", &m);
        assert!(bytes.starts_with(br#"{"v":2,"#));
        assert_eq!(decode(&bytes).unwrap().0, m);
        let gone = m.tombstone();
        assert_eq!(decode(&encode("n1", &gone)).unwrap().0, gone);
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replace(r#""v":2"#, r#""v":3"#);
        assert!(decode(newer.as_bytes()).unwrap_err().contains("version 3"));
        let v1_with_data = format!(
            r#"{{"id":"{}","room":"r","from":"a","text":"","data":1,"ts":9}}"#,
            m.id
        );
        assert!(decode(v1_with_data.as_bytes()).is_err());
    }

    #[test]
    fn presence_records_round_trip_and_counts_are_refused() {
        let r = PresenceRecord {
            key: "k1".into(),
            event: PresenceEvent::Join,
            room: RoomName::parse("r").unwrap(),
            name: "ann".into(),
            count: 1,
            ts: 9,
            node: "n1".into(),
        };
        assert_eq!(PresenceRecord::decode(&r.encode()).unwrap(), r);
        let count = String::from_utf8(r.encode())
            .unwrap()
            .replace(r#""join""#, r#""count""#);
        assert!(PresenceRecord::decode(count.as_bytes()).is_err());
        assert!(PresenceRecord::decode(b"{}").is_err());
    }
}
