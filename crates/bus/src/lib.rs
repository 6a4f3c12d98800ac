//! The bus between nodes: how a message accepted on one node reaches the
//! members of its room connected to the others.
//!
//! The accepting node delivers to its own members at once and hands the
//! message to its [`Bus`]; the bus carries it to every *other* node that has
//! said it hosts the room ([`Bus::subscribe`]) and puts it in that node's
//! inbox, a bounded channel drained by the node's local fan-out. A node
//! therefore never sees its own messages come back.
//!
//! [`MemoryHub`] is the in-process implementation (a single node, or several
//! nodes in one process); [`RedisBus`] is cluster mode over Redis Pub/Sub,
//! on one Redis server or, with sharded Pub/Sub, on a Redis Cluster.

mod envelope;
mod memory;
mod presence;
mod redis;
mod sequence;
mod shards;
mod subscriber;
mod target;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchboard_protocol::{Member, Message, Position, PresenceChange, RoomName};
use tokio::sync::mpsc;

pub use memory::{MemoryBus, MemoryHub};

/// True for the 1st, 2nd, 4th, 8th... call on `counter`: for logging an
/// event that can repeat at message rate (a drop) without flooding the log.
pub fn sampled(counter: &std::sync::atomic::AtomicU64) -> Option<u64> {
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}
pub use redis::{RedisBus, RedisOptions, RedisSetupError, valid_prefix, valid_url};

/// What reaches a node from the others.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Message(Message),
    /// A name joined or left a room somewhere in the cluster.
    Presence(PresenceChange),
    /// Disconnect every connection of this name (the server API, on
    /// another node).
    Disconnect(String),
}

/// Where a bus puts what other nodes published; the node's fan-out task
/// drains it.
pub type Inbox = mpsc::Sender<Inbound>;

/// A node's handle on the bus.
///
/// All methods are synchronous and never wait on the network: an
/// implementation that talks to a server queues the work for its own task,
/// in call order, so that per-sender order and join/leave order are kept
/// without making a connection wait for a round trip.
pub trait Bus: Send + Sync + 'static {
    /// Sends `message` to the other nodes hosting its room. Failures are the
    /// bus's to count and log: real-time fan-out between nodes is
    /// best-effort, durability comes from the journal.
    fn publish(&self, message: &Message);

    /// Tells every other node to disconnect the connections of `name`.
    fn disconnect(&self, name: &str);

    /// This node now hosts `room`: deliver its messages to the inbox.
    fn subscribe(&self, room: &RoomName);

    /// This node no longer hosts `room`.
    fn unsubscribe(&self, room: &RoomName);

    /// Resolves once every `subscribe`/`unsubscribe` issued before it has
    /// taken effect (on a live connection, for a networked bus).
    fn settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::ready(()))
    }

    /// Whether the bus can currently reach the other nodes (for `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// What the bus cannot reach now, named for `/readyz`: the bus itself
    /// (`redis`), or in a Redis Cluster each master that does not answer
    /// (`redis shard host:port (slots a-b)`). Empty when ready.
    fn unavailable(&self) -> Vec<String> {
        if self.is_ready() {
            Vec::new()
        } else {
            vec![self.kind().to_owned()]
        }
    }

    /// A short name for logs: `memory`, `redis`.
    fn kind(&self) -> &'static str;

    /// How many times the bus has re-established its subscriptions after
    /// losing them: messages published meanwhile were not received, and a
    /// node catches up on the rooms it hosts when this changes.
    fn resubscriptions(&self) -> u64 {
        0
    }

    /// The deployment's ordering point, when this bus is it (Redis): it
    /// gives each message its position and publishes it in one step, in
    /// place of [`Bus::publish`].
    fn sequencer(&self) -> Option<Arc<dyn Sequencer>> {
        None
    }

    /// Where the cluster keeps presence, when this bus does (Redis); a
    /// single node keeps it in its registry.
    fn presence(&self) -> Option<Arc<dyn Presences>> {
        None
    }
}

/// A cluster's presence: every node's names per room.
pub trait Presences: Send + Sync + 'static {
    /// This node has `connections` of `name` in `room` (0: none any more),
    /// the earliest since `since` (Unix ms). Applied in the background, in
    /// order; a name's first node publishes `join`, its last `leave`.
    fn set(&self, room: &RoomName, name: &str, connections: u32, since: i64);

    /// This node has no member in `room` any more.
    fn room_gone(&self, room: &RoomName);

    /// Calls `listener` with every `join`/`leave` this node's changes (or
    /// its sweep of a dead node) made in the cluster's view: each change
    /// once in the cluster, on the node that made it.
    fn listen(&self, listener: PresenceListener);

    /// Publishes this node's status (a JSON document with its `at` in Unix
    /// ms) for the operators of every node (the admin console).
    fn report(&self, status: String) -> BusFuture<()>;

    /// Every node's latest status, those older than `max_age_ms` left out
    /// (and removed).
    fn reports(&self, max_age_ms: i64) -> BusFuture<Vec<String>>;

    /// Resolves once everything `set` before it is in the cluster's view.
    fn settled(&self) -> BusFuture<()>;

    /// Everyone in `room`, across every node.
    fn members(&self, room: &RoomName) -> BusFuture<Vec<Member>>;

    /// How many names are in `room`, across every node.
    fn count(&self, room: &RoomName) -> BusFuture<u64>;

    /// A page of the rooms with members anywhere, with their names'
    /// count: about `count` of them from `cursor` (0 to begin), and the
    /// cursor of the next page (0 after the last).
    fn rooms(&self, cursor: u64, count: u32) -> BusFuture<RoomPage>;
}

/// What [`Presences::listen`] calls.
pub type PresenceListener = Arc<dyn Fn(PresenceChange) + Send + Sync>;

/// A page of rooms with members across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPage {
    /// Each room with how many names are in it.
    pub rooms: Vec<(RoomName, u64)>,
    /// Where the next page starts; 0 when this was the last.
    pub next: u64,
}

/// An ordering point could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("timed out")]
    Timeout,
}

/// What a [`Sequencer`] call resolves to.
pub type BusFuture<T> = Pin<Box<dyn Future<Output = Result<T, BusError>> + Send>>;

/// A position given by the ordering point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub epoch: String,
    /// False when the message's id had this position already (a resend):
    /// it was not published again.
    pub fresh: bool,
    /// For a resend, when the id was first accepted (Unix ms), so the
    /// message keeps one time wherever it is stored.
    pub ts: Option<i64>,
}

/// A room's hot window, as the ordering point holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// The room's epoch (empty when it has none) and last seq given.
    pub position: Position,
    /// The oldest seq still held, if any.
    pub oldest: Option<u64>,
    /// The messages asked for, in seq order, with their seq and epoch.
    pub messages: Vec<Message>,
}

/// One ordering point for a deployment: every message of a room gets
/// `seq` 1, 2, 3, ... in the room's epoch, whichever node accepted it.
pub trait Sequencer: Send + Sync + 'static {
    /// Gives `message` its room's next position (or the one its id already
    /// has), keeps it in the room's window and sends it to the nodes
    /// hosting the room, atomically.
    fn sequence(&self, message: &Message) -> BusFuture<Sequenced>;

    /// The room's position now, beginning an epoch when it has none.
    fn position(&self, room: &RoomName) -> BusFuture<Position>;

    /// At most `count` messages of the room's window after seq `after`
    /// (a deleted one as its tombstone).
    fn window(&self, room: &RoomName, after: u64, count: u32) -> BusFuture<Window>;

    /// Marks message `id` of the room's window deleted: the window gives
    /// its tombstone from now on. Its position, or `None` when the window
    /// does not hold it.
    fn erase(&self, room: &RoomName, id: uuid::Uuid) -> BusFuture<Option<Position>>;
}
