//! The connections of each name on this node, so the server API can
//! disconnect a user everywhere (`POST /api/users/{name}/disconnect`: this
//! node, and every other through the bus).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use socketioxide::extract::SocketRef;
use switchboard_protocol::{ErrorCode, FrameError, ServerFrame};

use crate::registry::WsSink;

/// How to end one connection from outside its task.
#[derive(Clone)]
pub(crate) enum Handle {
    Ws(WsSink),
    Sio(SocketRef),
}

/// A name's connections here: (connection id, handle). Few per name: a list.
type Connections = Vec<(u64, Handle)>;

/// Name -> its connections here.
#[derive(Default)]
pub(crate) struct Users {
    by_name: Mutex<HashMap<Arc<str>, Connections>>,
}

impl Users {
    /// Connection `conn` of `name` opened.
    pub fn add(&self, name: &str, conn: u64, handle: Handle) {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        // Most names have one connection: no room for four.
        by_name
            .entry(Arc::from(name))
            .or_insert_with(|| Vec::with_capacity(1))
            .push((conn, handle));
    }

    /// Connection `conn` of `name` closed.
    pub fn remove(&self, name: &str, conn: u64) {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = by_name.get_mut(name) {
            list.retain(|(c, _)| *c != conn);
            if list.is_empty() {
                by_name.remove(name);
            }
        }
    }

    /// Ends every connection of `name` here: `/ws` closes with 4002, a
    /// Socket.IO socket gets the `disconnected` error and is disconnected.
    /// How many there were.
    pub fn disconnect(&self, name: &str) -> usize {
        // Taken out under the lock, ended outside it: a Socket.IO
        // disconnect runs its handler, which removes the socket here.
        let handles = {
            let by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
            by_name.get(name).cloned().unwrap_or_default()
        };
        for (_, handle) in &handles {
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
