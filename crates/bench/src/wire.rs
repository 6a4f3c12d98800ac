//! The two client protocols the load generator speaks over one WebSocket:
//! switchboard's `/ws` JSON frames, and Socket.IO v5 (engine.io 4) framed by
//! hand (`0{..}` open, `40` connect, `42[..]` events, `2`/`3` ping/pong), so
//! the same tool drives switchboard and Socket.IO peers alike.

use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Read buffer per connection: a few coalesced frames per read.
const READ_BUFFER: usize = 8 * 1024;

/// Which protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// switchboard's `/ws` (and the `ws` peer's identical contract).
    Ws,
    /// Socket.IO v5 at `/socket.io/`, the original `event:message` /
    /// `event:listen` contract in `lobby`.
    SocketIo,
}

/// A failed connection or exchange.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    Protocol(String),
}

/// What a received frame meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A room message, with its text.
    Message(&'a str),
    /// An ack of the send with this `ref`.
    Ack(u64),
    /// An engine.io ping to answer.
    Ping,
    /// Anything else.
    Other,
}

#[derive(Deserialize)]
struct WsFrame<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "ref", default)]
    r#ref: Option<u64>,
}

/// Decodes a text frame of `protocol`. Message text that needed unescaping
/// is returned through `scratch`.
pub fn decode<'a>(protocol: Protocol, frame: &'a str, scratch: &'a mut String) -> Incoming<'a> {
    match protocol {
        Protocol::Ws => match serde_json::from_str::<WsFrame<'a>>(frame) {
            Ok(WsFrame {
                ty: "message",
                text: Some(text),
                ..
            }) => match text {
                std::borrow::Cow::Borrowed(t) => Incoming::Message(t),
                std::borrow::Cow::Owned(t) => {
                    *scratch = t;
                    Incoming::Message(scratch.as_str())
                }
            },
            Ok(WsFrame {
                ty: "ack",
                r#ref: Some(r),
                ..
            }) => Incoming::Ack(r),
            _ => Incoming::Other,
        },
        Protocol::SocketIo => {
            if frame == "2" {
                return Incoming::Ping;
            }
            let Some(body) = frame.strip_prefix("42") else {
                return Incoming::Other;
            };
            match serde_json::from_str::<(&str, std::borrow::Cow<'a, str>)>(body) {
                Ok(("event:listen", std::borrow::Cow::Borrowed(t))) => Incoming::Message(t),
                Ok(("event:listen", std::borrow::Cow::Owned(t))) => {
                    *scratch = t;
                    Incoming::Message(scratch.as_str())
                }
                _ => Incoming::Other,
            }
        }
    }
}

/// The frame that sends `text` to `room` (`ref` for acks on `/ws`).
pub fn send_frame(protocol: Protocol, room: &str, text: &str, r#ref: u64) -> Message {
    match protocol {
        Protocol::Ws => Message::text(
            serde_json::json!({"type": "send", "room": room, "text": text, "ref": r#ref})
                .to_string(),
        ),
        Protocol::SocketIo => {
            Message::text(format!("42{}", serde_json::json!(["event:message", text])))
        }
    }
}

/// An open, joined connection.
pub struct Conn {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Protocol,
}

impl Conn {
    /// Connects to `target` (host:port) from `source`, says hello, and
    /// joins `room` (Socket.IO connections are in `lobby` already).
    pub async fn open(
        target: SocketAddr,
        source: Option<IpAddr>,
        protocol: Protocol,
        name: &str,
        room: &str,
    ) -> Result<Self, WireError> {
        let mut conn = Self::connect(target, source, protocol, name).await?;
        match protocol {
            Protocol::Ws => {
                let join = serde_json::json!({"type": "join", "room": room, "history": 0});
                conn.ws.send(Message::text(join.to_string())).await?;
                conn.expect(|f| f.contains("\"joined\"")).await?;
            }
            Protocol::SocketIo => {
                conn.expect(|f| f.starts_with('0')).await?;
                let auth = serde_json::json!({"name": name});
                conn.ws.send(Message::text(format!("40{auth}"))).await?;
                conn.expect(|f| f.starts_with("40")).await?;
            }
        }
        Ok(conn)
    }

    /// Connects to `target` from `source` and upgrades, nothing more.
    pub async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        protocol: Protocol,
        name: &str,
    ) -> Result<Self, WireError> {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        let url = match protocol {
            Protocol::Ws => format!("ws://{target}/ws?name={name}"),
            Protocol::SocketIo => format!("ws://{target}/socket.io/?EIO=4&transport=websocket"),
        };
        // tungstenite's default read buffer is 128 KiB, zeroed on every read:
        // at 10,000 connections that memset was half the generator's CPU.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await?;
        Ok(Self { ws, protocol })
    }

    async fn expect(&mut self, want: impl Fn(&str) -> bool) -> Result<(), WireError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) if want(t.as_str()) => return Ok(()),
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("44") => {
                    return Err(WireError::Protocol(format!("connect refused: {t}")));
                }
                Some(Ok(Message::Text(t)))
                    if t.as_str().contains("\"error\"") && self.protocol == Protocol::Ws =>
                {
                    return Err(WireError::Protocol(format!("refused: {t}")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(WireError::Protocol("closed during the handshake".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_protocols() {
        let mut s = String::new();
        assert_eq!(
            decode(
                Protocol::Ws,
                r#"{"type":"message","id":"x","text":"1:2:3:"}"#,
                &mut s
            ),
            Incoming::Message("1:2:3:")
        );
        assert_eq!(
            decode(Protocol::Ws, r#"{"type":"ack","ref":9,"id":"x"}"#, &mut s),
            Incoming::Ack(9)
        );
        assert_eq!(
            decode(Protocol::Ws, r#"{"type":"pong"}"#, &mut s),
            Incoming::Other
        );
        assert_eq!(
            decode(Protocol::Ws, r#"{"type":"message","text":"a\"b"}"#, &mut s),
            Incoming::Message("a\"b")
        );
        assert_eq!(
            decode(
                Protocol::SocketIo,
                r#"42["event:listen","1:2:3:x"]"#,
                &mut s
            ),
            Incoming::Message("1:2:3:x")
        );
        assert_eq!(decode(Protocol::SocketIo, "2", &mut s), Incoming::Ping);
        assert_eq!(
            decode(Protocol::SocketIo, r#"42["other","x"]"#, &mut s),
            Incoming::Other
        );
        assert_eq!(decode(Protocol::SocketIo, "40{}", &mut s), Incoming::Other);
    }

    #[test]
    fn encodes_sends() {
        let ws = send_frame(Protocol::Ws, "r", "t", 4).into_text().unwrap();
        let v: serde_json::Value = serde_json::from_str(ws.as_str()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "send", "room": "r", "text": "t", "ref": 4})
        );
        let sio = send_frame(Protocol::SocketIo, "lobby", "t", 0)
            .into_text()
            .unwrap();
        assert_eq!(sio.as_str(), r#"42["event:message","t"]"#);
    }
}
