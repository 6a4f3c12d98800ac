//! The bytes one node publishes for the others: the message encoded once,
//! tagged with the node that accepted it.

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
}
