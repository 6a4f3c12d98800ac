//! A Socket.IO socket's state, kept in its extensions: its session and
//! rooms (behind a lock: its events, its disconnect and the fan-out that
//! cuts it run in tasks of their own), and its event order. Cutting a
//! socket the registry could not reach is here, so the node's fan-out
//! needs nothing else of the adapter.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socketioxide::extract::SocketRef;
use tokio::sync::watch;

use crate::registry::{Cut, Registry};
use crate::rooms::Rooms;
use crate::session::{HoldsRooms, Session};

/// How long a kicked slow consumer may take to accept its DISCONNECT before
/// the engine's own heartbeat timeout is left to close it.
const KICK_RETRY_FOR: Duration = Duration::from_secs(60);

/// Per-socket state, in the socket's extensions (one allocation).
#[derive(Clone)]
pub(crate) struct SioConn(Arc<Inner>);

pub(crate) struct Inner {
    pub session: Session,
    state: Mutex<SocketState>,
    /// The next event's place in the socket's order (see `turn`).
    pub next_ticket: AtomicU64,
    /// The place now being served.
    pub serving: watch::Sender<u64>,
}

/// What a socket's events change, under one lock.
struct SocketState {
    /// Its rooms (`lobby` the original way from the start, when allowed);
    /// closed once it disconnected or was cut.
    rooms: Rooms,
    /// Its CONNECT was answered: it is counted and may be in rooms.
    opened: bool,
}

/// The socket's rooms, lent to the session one step at a time.
pub(crate) struct Locked<'a>(&'a Mutex<SocketState>);

impl HoldsRooms for Locked<'_> {
    fn with_rooms<R>(&mut self, f: impl FnOnce(&mut Rooms) -> R) -> R {
        f(&mut lock(self.0).rooms)
    }
}

fn lock(state: &Mutex<SocketState>) -> MutexGuard<'_, SocketState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SioConn {
    /// A socket not yet answered; in `lobby` the original way when
    /// `legacy_lobby`.
    pub fn new(session: Session, legacy_lobby: bool) -> Self {
        Self(Arc::new(Inner {
            session,
            state: Mutex::new(SocketState {
                rooms: Rooms::new(legacy_lobby),
                opened: false,
            }),
            next_ticket: AtomicU64::new(0),
            serving: watch::Sender::new(0),
        }))
    }

    pub fn session(&self) -> &Session {
        &self.0.session
    }

    pub fn inner(&self) -> &Arc<Inner> {
        &self.0
    }

    pub fn rooms(&self) -> Locked<'_> {
        Locked(&self.0.state)
    }

    /// Marks its CONNECT answered and runs `enter` (putting it in `lobby`)
    /// under the lock, so a disconnect racing this sees either nothing
    /// joined or everything; false when it has already closed.
    pub fn open(&self, enter: impl FnOnce(&Rooms)) -> bool {
        let mut state = lock(&self.0.state);
        if state.rooms.is_closed() {
            return false;
        }
        state.opened = true;
        enter(&state.rooms);
        true
    }

    /// Leaves every room, once (it joins nothing afterwards): whether this
    /// was the first time, and whether it had been opened.
    pub fn close(&self, registry: &Registry) -> (bool, bool) {
        let mut state = lock(&self.0.state);
        let first = self.0.session.close(registry, &mut state.rooms);
        (first, state.opened)
    }
}

/// The socket's state.
pub(crate) fn conn_of(socket: &SocketRef) -> Option<SioConn> {
    socket.extensions.get::<SioConn>()
}

/// Cuts a member a delivery could not reach.
pub(crate) fn cut(registry: &Registry, cut: Cut) {
    match cut {
        Cut::Slow(socket) => kick_slow(registry, socket),
        Cut::Gone(socket) => drop_gone(registry, &socket),
    }
}

/// A member whose socket is gone (an emit answered `Closed`) leaves every
/// room, whatever way it ended: no room keeps a dead socket.
fn drop_gone(registry: &Registry, socket: &SocketRef) {
    let Some(conn) = conn_of(socket) else { return };
    if conn.close(registry).0 {
        tracing::info!(conn_id = conn.session().id, sid = %socket.id, "socket gone; removed from its rooms");
    }
}

/// Cuts a Socket.IO slow consumer: out of every room at once (so the rooms
/// keep flowing and it is counted once), then disconnected as soon as its
/// buffer has room for the DISCONNECT packet. A client that never reads
/// again is closed by the engine's heartbeat timeout.
fn kick_slow(registry: &Registry, socket: SocketRef) {
    let Some(conn) = conn_of(&socket) else { return };
    if !conn.close(registry).0 {
        return;
    }
    metrics::counter!("switchboard_slow_consumers_total", "protocol" => "socket.io").increment(1);
    crate::admin::SLOW_CUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let session = conn.session();
    tracing::info!(conn_id = session.id, sid = %socket.id, user = %session.identity.name, "slow consumer: socket.io buffer full");
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + KICK_RETRY_FOR;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            if socket.clone().disconnect().is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
