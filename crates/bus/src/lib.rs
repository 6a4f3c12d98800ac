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
//! nodes in one process); [`RedisBus`] is cluster mode over Redis Pub/Sub.

mod envelope;
mod memory;
mod redis;

use std::future::Future;
use std::pin::Pin;

use switchboard_protocol::{Message, RoomName};
use tokio::sync::mpsc;

pub use memory::{MemoryBus, MemoryHub};

/// True for the 1st, 2nd, 4th, 8th... call on `counter`: for logging an
/// event that can repeat at message rate (a drop) without flooding the log.
pub fn sampled(counter: &std::sync::atomic::AtomicU64) -> Option<u64> {
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}
pub use redis::{RedisBus, RedisOptions, RedisSetupError, valid_prefix};

/// Where a bus puts the messages other nodes published; the node's fan-out
/// task drains it.
pub type Inbox = mpsc::Sender<Message>;

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

    /// A short name for logs: `memory`, `redis`.
    fn kind(&self) -> &'static str;
}
