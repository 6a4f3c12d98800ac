//! A joining Socket.IO member's live messages, held until its `joined`
//! answer is out.
//!
//! Socket.IO answers a `join` through the client's ack callback and delivers
//! live messages as events on the same socket. A message delivered between
//! the member's registration and the answer would reach the client before
//! the `joined` that also carries it in its history. The gate holds such
//! messages; once the answer is sent, it emits those the history does not
//! have, in order, and lets the next ones through. (`/ws` connections get
//! the same from their queue, which the connection drains only after the
//! answer.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use switchboard_protocol::Message;
use uuid::Uuid;

/// Messages held at most; a member that falls further behind while its
/// join is answered is cut like any slow consumer.
const HOLD_MAX: usize = 1_024;

#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<Mutex<State>>);

#[derive(Default)]
enum State {
    #[default]
    Holding,
    Held(Vec<Message>),
    Open,
}

/// What a delivery through the gate should do.
pub(crate) enum Through {
    /// Emit it now.
    Pass,
    /// Kept for when the gate opens.
    Held,
    /// Too many held: cut the member.
    Full,
}

impl Gate {
    /// A delivery of `message` while the join may still be answered.
    pub fn hold(&self, message: &Message) -> Through {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Open => Through::Pass,
            State::Holding => {
                *state = State::Held(vec![message.clone()]);
                Through::Held
            }
            State::Held(held) if held.len() >= HOLD_MAX => Through::Full,
            State::Held(held) => {
                held.push(message.clone());
                Through::Held
            }
        }
    }

    /// The answer is out: emits what was held and is not in `sent` (the
    /// ids of the answer's history), then lets deliveries through. An error
    /// when the socket could not take them (the caller cuts it).
    pub fn open(&self, socket: &SocketRef, sent: &HashSet<Uuid>) -> Result<(), SocketError> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let held = match std::mem::replace(&mut *state, State::Open) {
            State::Held(held) => held,
            State::Holding | State::Open => return Ok(()),
        };
        for message in held.iter().filter(|m| !sent.contains(&m.id)) {
            if let Err(SendError::Socket(e)) = socket.emit("message", message) {
                return Err(e);
            }
        }
        Ok(())
    }
}
