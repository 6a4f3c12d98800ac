//! The in-process bus: nodes in one process share a [`MemoryHub`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use switchboard_protocol::{Message, RoomName};
use tokio::sync::mpsc::error::TrySendError;

use crate::{Bus, Inbound, Inbox};

#[derive(Default)]
struct Node {
    inbox: Option<Inbox>,
    rooms: HashSet<RoomName>,
}

/// The meeting point of the nodes of one process. With a single node (the
/// embedded mode) publishing reaches nobody, which is correct: the node has
/// already delivered to its own members.
#[derive(Clone, Default)]
pub struct MemoryHub {
    nodes: Arc<Mutex<HashMap<u64, Node>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches a node whose remote messages go to `inbox`.
    pub fn attach(&self, inbox: Inbox) -> MemoryBus {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(
            id,
            Node {
                inbox: Some(inbox),
                rooms: HashSet::new(),
            },
        );
        MemoryBus {
            hub: self.clone(),
            id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Node>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's handle on a [`MemoryHub`]; dropping it detaches the node.
pub struct MemoryBus {
    hub: MemoryHub,
    id: u64,
}

impl Bus for MemoryBus {
    fn publish(&self, message: &Message) {
        let nodes = self.hub.lock();
        for (id, node) in nodes.iter() {
            if *id == self.id || !node.rooms.contains(&message.room) {
                continue;
            }
            let Some(inbox) = &node.inbox else { continue };
            match inbox.try_send(Inbound::Message(message.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("switchboard_bus_dropped_total", "reason" => "inbox_full")
                        .increment(1);
                    static DROPS: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    if let Some(n) = crate::sampled(&DROPS) {
                        tracing::warn!(
                            dropped_so_far = n,
                            "bus inbox full: messages dropped for a node"
                        );
                    }
                }
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }

    fn disconnect(&self, name: &str) {
        let nodes = self.hub.lock();
        for (id, node) in nodes.iter() {
            if *id == self.id {
                continue;
            }
            if let Some(inbox) = &node.inbox
                && let Err(TrySendError::Full(_)) =
                    inbox.try_send(Inbound::Disconnect(name.to_owned()))
            {
                metrics::counter!("switchboard_bus_dropped_total", "reason" => "inbox_full")
                    .increment(1);
            }
        }
    }

    fn subscribe(&self, room: &RoomName) {
        if let Some(node) = self.hub.lock().get_mut(&self.id) {
            node.rooms.insert(room.clone());
        }
    }

    fn unsubscribe(&self, room: &RoomName) {
        if let Some(node) = self.hub.lock().get_mut(&self.id) {
            node.rooms.remove(room);
        }
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

impl Drop for MemoryBus {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.id);
    }
}
