//! The bytes one node publishes for the others: the message encoded once,
//! tagged with the node that accepted it, behind a header with its position
//! (`{seq} {epoch} {envelope}`), which the ordering point's script writes
//! without decoding the envelope.

use serde::{Deserialize, Serialize};
use switchboard_protocol::Message;

/// Version of the envelope format, so nodes of different versions can tell.
const VERSION: u8 = 1;

#[derive(Serialize)]
struct Out<'a> {
    v: u8,
    node: &'a str,
    msg: &'a Message,
}

#[derive(Deserialize)]
struct In {
    v: u8,
    node: String,
    msg: Message,
}

/// Encodes `message` as published by `node`.
pub(crate) fn encode(node: &str, message: &Message) -> Vec<u8> {
    serde_json::to_vec(&Out {
        v: VERSION,
        node,
        msg: message,
    })
    .unwrap_or_else(|_| unreachable!("messages always serialize"))
}

/// Decodes an envelope into the publishing node and the message.
pub(crate) fn decode(bytes: &[u8]) -> Result<(String, Message), String> {
    let env: In = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if env.v != VERSION {
        return Err(format!("unknown envelope version {}", env.v));
    }
    Ok((env.node, env.msg))
}

/// The channel payload: the position, then the envelope.
pub(crate) fn frame(seq: u64, epoch: &str, envelope: &[u8]) -> Vec<u8> {
    let mut out = format!("{seq} {epoch} ").into_bytes();
    out.extend_from_slice(envelope);
    out
}

/// Decodes a channel payload into the publishing node and the message with
/// its position.
pub(crate) fn unframe(bytes: &[u8]) -> Result<(String, Message), String> {
    let mut parts = bytes.splitn(3, |b| *b == b' ');
    let (Some(seq), Some(epoch), Some(envelope)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("no position header".into());
    };
    let seq = std::str::from_utf8(seq)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad seq in the header")?;
    let epoch = std::str::from_utf8(epoch).map_err(|_| "bad epoch in the header")?;
    let (node, mut message) = decode(envelope)?;
    message.seq = seq;
    message.epoch = epoch.to_owned();
    Ok((node, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::RoomName;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let m = Message {
            id: uuid::Uuid::now_v7(),
            room: RoomName::parse("r").unwrap(),
            from: "a".into(),
            text: "t".into(),
            ts: 1,
            seq: 0,
            epoch: String::new(),
            data: None,
            deleted: false,
        };
        let bytes = encode("n1", &m);
        assert_eq!(decode(&bytes).unwrap(), ("n1".to_owned(), m));
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"v":2,"node":"n","msg":{}}"#).is_err());
        let bad_room = String::from_utf8(bytes)
            .unwrap()
            .replace("\"r\"", "\"bad room\"");
        assert!(decode(bad_room.as_bytes()).is_err());
    }

    #[test]
    fn the_header_carries_the_position() {
        let m = Message {
            id: uuid::Uuid::now_v7(),
            room: RoomName::parse("r").unwrap(),
            from: "a".into(),
            text: "t t".into(),
            ts: 1,
            seq: 0,
            epoch: String::new(),
            data: None,
            deleted: false,
        };
        let framed = frame(7, "e1", &encode("n1", &m));
        let (node, got) = unframe(&framed).unwrap();
        assert_eq!(node, "n1");
        assert_eq!(
            (got.seq, got.epoch.as_str(), got.text.as_str()),
            (7, "e1", "t t")
        );
        let unpositioned = frame(0, "", &encode("n1", &m));
        assert_eq!(unframe(&unpositioned).unwrap().1, m);
        assert!(unframe(b"7 e1").is_err());
        assert!(unframe(b"x e1 {}").is_err());
    }
}
