//! Extractors for Socket.IO event handlers: an event's place in its
//! socket's order, and the client's acknowledgement callback.
//!
//! socketioxide runs each event's handler in a task of its own, so two
//! quick events could be handled out of order. Each handler therefore takes
//! a [`Turn`], numbered synchronously in arrival order, and waits for it
//! before touching rooms or accepting a message: a socket's events take
//! effect in the order it sent them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::AckSender;
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;

use super::socket::{Inner, SioConn};

/// The client's acknowledgement callback, and whether it gave one.
pub(super) struct Reply {
    pub ack: AckSender,
    pub wanted: bool,
}

impl FromMessageParts<LocalAdapter> for Reply {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(Self {
            ack: AckSender::from_message_parts(s, v, ack_id)?,
            wanted: ack_id.is_some(),
        })
    }
}

/// An event's place in its socket's order, taken when the event arrives
/// (extractors run synchronously, in arrival order, before the handler's
/// task is spawned).
pub(super) struct Turn {
    ticket: u64,
    conn: Option<Arc<Inner>>,
}

impl FromMessageParts<LocalAdapter> for Turn {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(match s.extensions.get::<SioConn>() {
            Some(conn) => Turn {
                ticket: conn.inner().next_ticket.fetch_add(1, Ordering::Relaxed),
                conn: Some(conn.inner().clone()),
            },
            None => Turn {
                ticket: 0,
                conn: None,
            },
        })
    }
}

impl Turn {
    /// Waits until every earlier event of the socket has taken effect.
    pub async fn wait(self) -> TurnGuard {
        if let Some(conn) = &self.conn {
            let mut rx = conn.serving.subscribe();
            let _ = rx.wait_for(|now| *now >= self.ticket).await;
        }
        TurnGuard(self.conn)
    }
}

/// Lets the next event go when dropped.
pub(super) struct TurnGuard(Option<Arc<Inner>>);

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if let Some(conn) = &self.0 {
            conn.serving.send_modify(|now| *now += 1);
        }
    }
}
