//! The room registry: who is in which room on this node, and local fan-out.
//!
//! Fan-out never waits on a client. A `/ws` member has a bounded mailbox
//! that is filled without waiting; a Socket.IO member has socketioxide's bounded
//! buffer. A full queue makes the member a *slow consumer*: it is kicked
//! (closed with 1008) and counted, and the room keeps flowing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use switchboard_bus::Bus;
use switchboard_protocol::{Message, PresenceChange, RoomName, ServerFrame};

use crate::gate::{Gate, Through};
use crate::mailbox::{Mailbox, Outbound, QueuedFrame};

/// Messages each room remembers, so that a `join` racing a send neither
/// misses a message nor depends on the store having committed it yet.
pub(crate) const RECENT_PER_ROOM: usize = 32;

/// How to reach a `/ws` connection from other tasks.
pub(crate) type WsSink = Arc<Mailbox>;

/// A room member's delivery channel.
#[derive(Clone)]
pub(crate) enum Sink {
    Ws(WsSink),
    /// `legacy` members are Socket.IO sockets in `lobby` by default: they get
    /// the original contract's `event:listen` with the text instead of a
    /// `message` object.
    Sio {
        socket: SocketRef,
        legacy: bool,
        /// Holds live messages while a join is answered.
        gate: Option<Gate>,
    },
}

struct Member {
    conn: u64,
    sink: Sink,
    /// The connection's name, for presence.
    name: Arc<str>,
    /// Receives the room's `presence_change` frames.
    watch: bool,
}

/// A name's presence in a room on this node changed: how many of its
/// connections are here now (0: it left), since when, whether its first
/// came or its last went, and how many names the room has here.
#[derive(Debug, Clone)]
pub(crate) struct PresenceUpdate {
    pub room: RoomName,
    pub name: Arc<str>,
    pub connections: u32,
    pub since: i64,
    pub transition: bool,
    pub names_here: usize,
    /// The room lost its last member on this node.
    pub room_gone: bool,
}

/// A name's connections in a room on this node.
#[derive(Debug, Clone, Copy)]
struct Here {
    connections: u32,
    since: i64,
}

/// A room's members and traffic on this node (for the admin console).
#[derive(Debug, Clone)]
pub(crate) struct RoomActivity {
    pub room: RoomName,
    pub names: usize,
    pub connections: usize,
    pub messages: u64,
}

/// Told of every presence change, outside the registry's lock.
pub(crate) type OnPresence = Arc<dyn Fn(PresenceUpdate) + Send + Sync>;

/// A Socket.IO member a delivery could not reach.
pub(crate) enum Cut {
    /// Its buffer is full: a slow consumer.
    Slow(SocketRef),
    /// Its socket is closed, however it ended.
    Gone(SocketRef),
}

#[derive(Default)]
struct Room {
    members: Vec<Member>,
    recent: Mutex<VecDeque<Message>>,
    names: HashMap<Arc<str>, Here>,
    /// Messages delivered here since the last [`Registry::activity`].
    messages: AtomicU64,
}

/// Rooms with at least one member on this node. A room appears on its first
/// join (and the bus is told this node hosts it) and disappears on its last
/// leave (and the bus is told it no longer does).
pub(crate) struct Registry {
    rooms: RwLock<HashMap<RoomName, Room>>,
    /// Deliveries to members here since the node started.
    delivered: AtomicU64,
    bus: Arc<dyn Bus>,
    on_presence: OnPresence,
}

impl Registry {
    pub fn new(bus: Arc<dyn Bus>, on_presence: OnPresence) -> Self {
        Self {
            rooms: RwLock::default(),
            delivered: AtomicU64::new(0),
            bus,
            on_presence,
        }
    }

    /// Adds (or updates) `conn`'s membership of `room` under `name`
    /// (`watch`: it gets the room's presence changes) and returns the
    /// room's recent messages, oldest first, for the join's history.
    pub fn join(
        &self,
        room: &RoomName,
        conn: u64,
        sink: Sink,
        name: &str,
        watch: bool,
    ) -> Vec<Message> {
        let (recent, update) = {
            let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
            let entry = rooms.entry(room.clone()).or_insert_with(|| {
                self.bus.subscribe(room);
                metrics::gauge!("switchboard_rooms").increment(1.0);
                Room::default()
            });
            let update = match entry.members.iter_mut().find(|m| m.conn == conn) {
                Some(existing) => {
                    existing.sink = sink;
                    existing.watch |= watch;
                    None
                }
                None => {
                    let name: Arc<str> = entry
                        .names
                        .get_key_value(name)
                        .map_or_else(|| Arc::from(name), |(k, _)| k.clone());
                    let here = entry.names.entry(name.clone()).or_insert(Here {
                        connections: 0,
                        since: crate::now_ms(),
                    });
                    here.connections += 1;
                    let update = PresenceUpdate {
                        room: room.clone(),
                        name: name.clone(),
                        connections: here.connections,
                        since: here.since,
                        transition: here.connections == 1,
                        names_here: 0,
                        room_gone: false,
                    };
                    entry.members.push(Member {
                        conn,
                        sink,
                        name,
                        watch,
                    });
                    Some(PresenceUpdate {
                        names_here: entry.names.len(),
                        ..update
                    })
                }
            };
            let recent = entry
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect();
            (recent, update)
        };
        if let Some(update) = update {
            (self.on_presence)(update);
        }
        recent
    }

    /// Removes `conn` from `room`; the last leave drops the room.
    pub fn leave(&self, room: &RoomName, conn: u64) {
        let update = {
            let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = rooms.get_mut(room) else {
                return;
            };
            let Some(pos) = entry.members.iter().position(|m| m.conn == conn) else {
                return;
            };
            let member = entry.members.swap_remove(pos);
            let mut update = PresenceUpdate {
                room: room.clone(),
                name: member.name.clone(),
                connections: 0,
                since: 0,
                transition: true,
                names_here: 0,
                room_gone: false,
            };
            if let Some(here) = entry.names.get_mut(&member.name) {
                here.connections = here.connections.saturating_sub(1);
                update.connections = here.connections;
                update.since = here.since;
                update.transition = here.connections == 0;
                if here.connections == 0 {
                    entry.names.remove(&member.name);
                }
            }
            update.names_here = entry.names.len();
            if entry.members.is_empty() {
                rooms.remove(room);
                self.bus.unsubscribe(room);
                metrics::gauge!("switchboard_rooms").decrement(1.0);
                update.room_gone = true;
            }
            update
        };
        (self.on_presence)(update);
    }

    /// How many names are in `room` on this node.
    pub fn name_count(&self, room: &RoomName) -> usize {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        rooms.get(room).map_or(0, |r| r.names.len())
    }

    /// The names in `room` on this node, with their connections and since.
    pub fn names(&self, room: &RoomName) -> Vec<switchboard_protocol::Member> {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        rooms.get(room).map_or_else(Vec::new, |r| {
            r.names
                .iter()
                .map(|(name, here)| switchboard_protocol::Member {
                    name: name.to_string(),
                    connections: u64::from(here.connections),
                    since: here.since,
                })
                .collect()
        })
    }

    /// Calls `f` with every (room, name, connections, since) on this node.
    pub fn each_name(&self, mut f: impl FnMut(&RoomName, &str, u32, i64)) {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        for (room, entry) in rooms.iter() {
            for (name, here) in &entry.names {
                f(room, name, here.connections, here.since);
            }
        }
    }

    /// Sends `change` to the members of its room that watch presence;
    /// returns the Socket.IO members to cut, like [`Registry::deliver`].
    #[must_use = "the Socket.IO members to cut"]
    pub fn deliver_presence(&self, change: &PresenceChange) -> Vec<Cut> {
        self.tell(
            &change.room,
            |m| m.watch,
            || ServerFrame::PresenceChange(change.clone()).encode(),
            "presence_change",
            change,
        )
    }

    /// Whether message `id` is among the recent messages of `room` here.
    pub fn has_recent(&self, room: &RoomName, id: uuid::Uuid) -> bool {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        rooms.get(room).is_some_and(|room| {
            room.recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|m| m.id == id)
        })
    }

    /// Message `tombstone.id` of its room was deleted: its tombstone (with
    /// the message's position) takes its place among the room's recent
    /// messages, and every member but the original contract's is told
    /// (`deleted`). The Socket.IO members to cut.
    #[must_use = "the Socket.IO members to cut"]
    pub fn erase(&self, tombstone: &Message) -> Vec<Cut> {
        {
            let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
            let Some(room) = rooms.get(&tombstone.room) else {
                return Vec::new();
            };
            let mut recent = room.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = recent.iter_mut().find(|m| m.id == tombstone.id) {
                *m = m.tombstone();
            }
        }
        let deleted = ServerFrame::Deleted {
            room: tombstone.room.clone(),
            id: tombstone.id,
        };
        let value = serde_json::json!({"room": tombstone.room, "id": tombstone.id});
        self.tell(
            &tombstone.room,
            |m| !matches!(m.sink, Sink::Sio { legacy: true, .. }),
            || deleted.encode(),
            "deleted",
            &value,
        )
    }

    /// Sends the members of `room` that `to` picks one frame: encoded once
    /// for every `/ws` member, as the Socket.IO `event` for the others.
    fn tell<T: serde::Serialize + ?Sized>(
        &self,
        room: &RoomName,
        to: impl Fn(&Member) -> bool,
        frame: impl FnOnce() -> String,
        event: &'static str,
        value: &T,
    ) -> Vec<Cut> {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        let Some(room) = rooms.get(room) else {
            return Vec::new();
        };
        let mut cut = Vec::new();
        let mut frame = Some(frame);
        let mut ws_frame: Option<Outbound> = None;
        for member in room.members.iter().filter(|m| to(m)) {
            match &member.sink {
                Sink::Ws(ws) => {
                    let queued = ws_frame.get_or_insert_with(|| {
                        let encode = frame.take().unwrap_or_else(|| unreachable!("encoded once"));
                        Arc::new(QueuedFrame {
                            frame: Utf8Bytes::from(encode()),
                            id: None,
                        })
                    });
                    ws.push(queued.clone());
                }
                Sink::Sio { socket, .. } => match socket.emit(event, value) {
                    Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                        cut.push(Cut::Slow(socket.clone()));
                    }
                    Err(SendError::Socket(SocketError::Closed)) => {
                        cut.push(Cut::Gone(socket.clone()));
                    }
                    _ => {}
                },
            }
        }
        cut
    }

    /// Delivers `msg` once to every local member of its room. The `/ws`
    /// frame is encoded once and its bytes shared by every recipient.
    /// `/ws` members whose mailbox is full are kicked by the mailbox; the
    /// Socket.IO members to cut (buffer full, or socket gone) are returned
    /// for the caller to cut, outside the registry's lock.
    #[must_use = "the Socket.IO members to cut"]
    pub fn deliver(&self, msg: &Message) -> Vec<Cut> {
        let mut cut = Vec::new();
        {
            let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
            let Some(room) = rooms.get(&msg.room) else {
                return Vec::new();
            };
            // An ephemeral message (no position) is live only: never history.
            if msg.seq != 0 {
                let mut recent = room.recent.lock().unwrap_or_else(PoisonError::into_inner);
                if recent.len() == RECENT_PER_ROOM {
                    recent.pop_front();
                }
                recent.push_back(msg.clone());
            }
            let mut ws_frame: Option<Outbound> = None;
            // The message object encoded once for every Socket.IO recipient;
            // socketioxide only frames it per socket.
            let mut sio_payload: Option<Box<RawValue>> = None;
            for member in &room.members {
                match &member.sink {
                    Sink::Ws(ws) => {
                        let frame = ws_frame.get_or_insert_with(|| {
                            Arc::new(QueuedFrame {
                                frame: Utf8Bytes::from(ServerFrame::encode_message(msg)),
                                id: Some(msg.id),
                            })
                        });
                        ws.push(frame.clone());
                    }
                    Sink::Sio {
                        socket,
                        legacy,
                        gate,
                    } => {
                        match gate.as_ref().map(|g| g.hold(msg)) {
                            None | Some(Through::Pass) => {}
                            Some(Through::Held) => continue,
                            Some(Through::Full) => {
                                cut.push(Cut::Slow(socket.clone()));
                                continue;
                            }
                        }
                        let sent = if *legacy {
                            // `event:listen` carries a string: a message of
                            // data alone has none for it.
                            if msg.text.is_empty() {
                                continue;
                            }
                            socket.emit("event:listen", &msg.text)
                        } else {
                            match &mut sio_payload {
                                Some(raw) => socket.emit("message", raw),
                                slot @ None => match serde_json::value::to_raw_value(msg) {
                                    Ok(raw) => socket.emit("message", slot.insert(raw)),
                                    Err(_) => socket.emit("message", msg),
                                },
                            }
                        };
                        match sent {
                            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                                cut.push(Cut::Slow(socket.clone()));
                            }
                            Err(SendError::Socket(SocketError::Closed)) => {
                                cut.push(Cut::Gone(socket.clone()));
                            }
                            _ => {}
                        }
                    }
                }
            }
            metrics::counter!("switchboard_deliveries_total").increment(room.members.len() as u64);
            room.messages.fetch_add(1, Ordering::Relaxed);
            self.delivered
                .fetch_add(room.members.len() as u64, Ordering::Relaxed);
        }
        cut
    }

    /// The rooms with local members, sorted by name.
    pub fn room_names(&self) -> Vec<RoomName> {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<RoomName> = rooms.keys().cloned().collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names
    }

    /// Deliveries to members here since the node started.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Each room here: its names and connections here, and the messages
    /// delivered in it since the last call (which starts a new count).
    pub fn activity(&self) -> Vec<RoomActivity> {
        let rooms = self.rooms.read().unwrap_or_else(PoisonError::into_inner);
        rooms
            .iter()
            .map(|(name, room)| RoomActivity {
                room: name.clone(),
                names: room.names.len(),
                connections: room.members.len(),
                messages: room.messages.swap(0, Ordering::Relaxed),
            })
            .collect()
    }

    /// Number of rooms with local members.
    pub fn room_count(&self) -> usize {
        self.rooms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_bus::MemoryHub;
    use uuid::Uuid;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn msg(room_name: &str, text: &str) -> Message {
        Message {
            id: Uuid::now_v7(),
            room: room(room_name),
            from: "a".into(),
            text: text.into(),
            ts: 1,
            seq: 0,
            epoch: String::new(),
            data: None,
            deleted: false,
        }
    }

    fn ws(cap: usize) -> (WsSink, WsSink) {
        let m = Mailbox::new(cap);
        (m.clone(), m)
    }

    fn registry() -> Registry {
        let (inbox, _) = tokio::sync::mpsc::channel(1);
        Registry::new(Arc::new(MemoryHub::new().attach(inbox)), Arc::new(|_| {}))
    }

    #[test]
    fn delivers_once_to_members_of_the_room_only() {
        let reg = registry();
        let (a, ra) = ws(8);
        let (b, rb) = ws(8);
        reg.join(&room("r"), 1, Sink::Ws(a.clone()), "a", false);
        reg.join(&room("r"), 1, Sink::Ws(a), "a", false);
        reg.join(&room("s"), 2, Sink::Ws(b), "b", false);
        let _ = reg.deliver(&msg("r", "hi"));
        assert!(ra.pop().unwrap().frame.as_str().contains("\"hi\""));
        assert!(ra.pop().is_none(), "a double join still delivers once");
        assert!(rb.pop().is_none(), "other rooms see nothing");
    }

    #[test]
    fn full_queue_kicks_without_blocking() {
        let reg = registry();
        let (slow, _keep) = ws(2);
        let (fast, rf) = ws(64);
        reg.join(&room("r"), 1, Sink::Ws(slow.clone()), "s", false);
        reg.join(&room("r"), 2, Sink::Ws(fast), "f", false);
        for i in 0..10 {
            let _ = reg.deliver(&msg("r", &i.to_string()));
        }
        assert!(slow.is_kicked());
        let mut n = 0;
        while rf.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 10, "the fast member got everything");
    }

    #[test]
    fn rooms_come_and_go_with_members_and_remember_recent() {
        let reg = registry();
        let (a, _ra) = ws(64);
        reg.join(&room("r"), 1, Sink::Ws(a.clone()), "a", false);
        for i in 0..40 {
            let positioned = Message {
                seq: i + 1,
                epoch: "e".into(),
                ..msg("r", &i.to_string())
            };
            let _ = reg.deliver(&positioned);
        }
        // An ephemeral message (no position) is delivered, not remembered.
        let _ = reg.deliver(&msg("r", "live only"));
        let recent = reg.join(&room("r"), 2, Sink::Ws(a), "a", false);
        assert_eq!(recent.len(), RECENT_PER_ROOM);
        assert_eq!(recent.last().unwrap().text, "39");
        reg.leave(&room("r"), 1);
        assert_eq!(reg.room_count(), 1);
        reg.leave(&room("r"), 2);
        assert_eq!(reg.room_count(), 0);
        reg.leave(&room("r"), 2);
    }
}
