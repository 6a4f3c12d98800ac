//! The connections of each name on this node, so the server API can
//! disconnect a user everywhere (`POST /api/users/{name}/disconnect`: this
//! node, and every other through the bus).

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use socketioxide::extract::SocketRef;
use switchboard_protocol::{ErrorCode, FrameError, ServerFrame};

use crate::registry::WsSink;

/// How to end one connection from outside its task.
#[derive(Clone)]
pub(crate) enum Handle {
    Ws(WsSink),
    Sio(SocketRef),
}

/// A name's connections here: most names have one, kept inline.
#[derive(Clone)]
enum Connections {
    One(u64, Handle),
    Many(Vec<(u64, Handle)>),
}

impl Connections {
    fn push(&mut self, conn: u64, handle: Handle) {
        match self {
            Connections::One(c, h) => {
                *self = Connections::Many(vec![(*c, h.clone()), (conn, handle)]);
            }
            Connections::Many(list) => list.push((conn, handle)),
        }
    }

    /// Drops `conn`; true when none is left.
    fn remove(&mut self, conn: u64) -> bool {
        match self {
            Connections::One(c, _) => *c == conn,
            Connections::Many(list) => {
                list.retain(|(c, _)| *c != conn);
                list.is_empty()
            }
        }
    }

    fn handles(&self) -> Vec<Handle> {
        match self {
            Connections::One(_, h) => vec![h.clone()],
            Connections::Many(list) => list.iter().map(|(_, h)| h.clone()).collect(),
        }
    }
}

/// Name -> its connections here. Keyed by the name's keyed hash (SipHash
/// with this node's random key), not the name: an idle connection then
/// costs one small map entry and no allocation of its own; two names
/// sharing a 64-bit keyed hash is not a case worth a string per connection.
#[derive(Default)]
pub(crate) struct Users {
    by_name: Mutex<HashMap<u64, Connections>>,
    keys: RandomState,
}

impl Users {
    fn key(&self, name: &str) -> u64 {
        self.keys.hash_one(name)
    }

    /// Connection `conn` of `name` opened.
    pub fn add(&self, name: &str, conn: u64, handle: Handle) {
        let key = self.key(name);
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        match by_name.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().push(conn, handle),
            Entry::Vacant(e) => {
                e.insert(Connections::One(conn, handle));
            }
        }
    }

    /// Connection `conn` of `name` closed.
    pub fn remove(&self, name: &str, conn: u64) {
        let key = self.key(name);
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut e) = by_name.entry(key)
            && e.get_mut().remove(conn)
        {
            e.remove();
        }
    }

    /// Ends every connection of `name` here: `/ws` closes with 4002, a
    /// Socket.IO socket gets the `disconnected` error and is disconnected.
    /// How many there were.
    pub fn disconnect(&self, name: &str) -> usize {
        let key = self.key(name);
        // Taken out under the lock, ended outside it: a Socket.IO
        // disconnect runs its handler, which removes the socket here.
        let handles = {
            let by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
            by_name
                .get(&key)
                .map(Connections::handles)
                .unwrap_or_default()
        };
        for handle in &handles {
            match handle {
                Handle::Ws(sink) => sink.disconnect(),
                Handle::Sio(socket) => {
                    let err =
                        FrameError::new(ErrorCode::Disconnected, "disconnected by the server");
                    let _ = socket.emit("error", &ServerFrame::error(err));
                    let _ = socket.clone().disconnect();
                }
            }
        }
        if !handles.is_empty() {
            metrics::counter!("switchboard_users_disconnected_total")
                .increment(handles.len() as u64);
        }
        handles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;

    fn ws() -> (WsSink, Handle) {
        let sink = Mailbox::new(4);
        (sink.clone(), Handle::Ws(sink))
    }

    #[test]
    fn a_name_is_disconnected_on_each_of_its_connections_and_only_those() {
        let users = Users::default();
        let (a1, h1) = ws();
        let (a2, h2) = ws();
        let (b, hb) = ws();
        users.add("ann", 1, h1);
        users.add("ann", 2, h2);
        users.add("ben", 3, hb);
        assert_eq!(users.disconnect("ann"), 2);
        assert!(a1.is_kicked() && a2.is_kicked() && !b.is_kicked());
        users.remove("ann", 1);
        users.remove("ann", 2);
        assert_eq!(users.disconnect("ann"), 0, "gone once both closed");
        users.remove("ben", 99);
        assert_eq!(
            users.disconnect("ben"),
            1,
            "another connection's close keeps it"
        );
        users.remove("ben", 3);
        assert!(
            users.by_name.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }
}
