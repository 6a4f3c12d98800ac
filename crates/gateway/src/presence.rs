//! Presence: who is in a room, by name, across every node.
//!
//! The registry counts each name's connections per room on this node and
//! reports every change ([`PresenceUpdate`]). A single node is the whole
//! picture: a name's first connection or last is a `join` or `leave` for
//! the room's watchers (members that joined with `presence: true`). In a
//! cluster every change goes to Redis ([`Presences`]), which publishes a
//! name's first node and last as `join`/`leave` on the room's channel; the
//! nodes relay those to their watchers. Rooms with more names than
//! `PRESENCE_EVENTS_MAX` get the count alone, at most once a second.
//!
//! Every `join`/`leave` also goes to the journal once, from the node that
//! made it (a single node's registry, or the Redis script's answer), for
//! the webhooks' presence events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use switchboard_bus::{BusError, Presences, RoomPage};
use switchboard_journal::Journal;
use switchboard_protocol::{Member, PresenceChange, PresenceEvent, RoomName};

use crate::registry::{PresenceUpdate, Registry};

/// At most one count event per room this often, past the event limit.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Names one presence answer lists at most (the earliest); the count is
/// always complete.
pub(crate) const LIST_MAX: usize = 1_000;

/// A room's presence as answered.
pub(crate) struct Listing {
    pub count: u64,
    pub members: Vec<Member>,
    pub truncated: bool,
}

pub(crate) struct Presence {
    cluster: Option<Arc<dyn Presences>>,
    /// Where changes go for the webhooks (the events topic).
    journal: Arc<dyn Journal>,
    registry: OnceLock<Weak<Registry>>,
    events_max: usize,
    counts: Mutex<HashMap<RoomName, Throttle>>,
}

/// Count events of one large room.
#[derive(Default)]
struct Throttle {
    sent_at: Option<Instant>,
    /// The latest count not yet sent, when one is scheduled.
    pending: Option<u64>,
}

impl Presence {
    pub fn new(
        cluster: Option<Arc<dyn Presences>>,
        journal: Arc<dyn Journal>,
        events_max: usize,
    ) -> Arc<Self> {
        if let Some(cluster) = &cluster {
            let journal = journal.clone();
            cluster.listen(Arc::new(move |change| journal.presence(&change)));
        }
        Arc::new(Self {
            cluster,
            journal,
            registry: OnceLock::new(),
            events_max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The registry whose watchers get the events.
    pub fn attach(&self, registry: &Arc<Registry>) {
        let _ = self.registry.set(Arc::downgrade(registry));
    }

    fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.get().and_then(Weak::upgrade)
    }

    /// The registry's report of a change on this node.
    pub fn changed(self: &Arc<Self>, update: PresenceUpdate) {
        match &self.cluster {
            Some(cluster) => {
                cluster.set(&update.room, &update.name, update.connections, update.since);
                if update.room_gone {
                    cluster.room_gone(&update.room);
                }
            }
            None if update.transition => {
                let change = PresenceChange {
                    room: update.room,
                    event: if update.connections > 0 {
                        PresenceEvent::Join
                    } else {
                        PresenceEvent::Leave
                    },
                    name: Some(update.name.to_string()),
                    count: update.names_here as u64,
                };
                self.journal.presence(&change);
                self.relay(change);
            }
            None => {}
        }
    }

    /// Tells the room's watchers on this node of `change` (or, past the
    /// event limit, of the room's count, at most once a second).
    pub fn relay(self: &Arc<Self>, change: PresenceChange) {
        if change.count as usize <= self.events_max {
            self.deliver(&change);
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() > 10_000 {
            counts.retain(|_, t| {
                t.pending.is_some() || t.sent_at.is_some_and(|at| at.elapsed() < COUNT_EVERY)
            });
        }
        let throttle = counts.entry(change.room.clone()).or_default();
        if throttle.pending.is_some() {
            throttle.pending = Some(change.count);
            return;
        }
        let wait = throttle.sent_at.map_or(Duration::ZERO, |at| {
            COUNT_EVERY.saturating_sub(at.elapsed())
        });
        throttle.pending = Some(change.count);
        drop(counts);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let count = {
                let mut counts = this.counts.lock().unwrap_or_else(PoisonError::into_inner);
                let throttle = counts.entry(change.room.clone()).or_default();
                throttle.sent_at = Some(Instant::now());
                throttle.pending.take()
            };
            if let Some(count) = count {
                this.deliver(&PresenceChange {
                    room: change.room,
                    event: PresenceEvent::Count,
                    name: None,
                    count,
                });
            }
        });
    }

    fn deliver(&self, change: &PresenceChange) {
        if let Some(registry) = self.registry() {
            for cut in registry.deliver_presence(change) {
                crate::sio::cut(&registry, cut);
            }
        }
    }

    /// Who is in `room`, across every node, earliest first (at most
    /// [`LIST_MAX`] of them).
    pub async fn members(&self, room: &RoomName) -> Result<Listing, BusError> {
        let mut members = match &self.cluster {
            Some(cluster) => cluster.members(room).await?,
            None => self.registry().map_or_else(Vec::new, |r| r.names(room)),
        };
        members.sort_by(|a, b| (a.since, &a.name).cmp(&(b.since, &b.name)));
        let count = members.len() as u64;
        let truncated = members.len() > LIST_MAX;
        members.truncate(LIST_MAX);
        Ok(Listing {
            count,
            members,
            truncated,
        })
    }

    /// A page of the rooms with members (across the cluster) and how many
    /// names each has: about `limit` from `cursor`, and where the next page
    /// starts (0 after the last). A single node pages its sorted rooms by
    /// offset; a cluster follows Redis's scan, whose pages may repeat a room.
    pub async fn rooms(&self, cursor: u64, limit: u32) -> Result<RoomPage, BusError> {
        if let Some(cluster) = &self.cluster {
            return cluster.rooms(cursor, limit).await;
        }
        let Some(registry) = self.registry() else {
            return Ok(RoomPage::default());
        };
        let names = registry.room_names();
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(names.len());
        let end = start.saturating_add(limit as usize).min(names.len());
        let rooms = names[start..end]
            .iter()
            .map(|room| (room.clone(), registry.name_count(room) as u64))
            .collect();
        let next = if end < names.len() { end as u64 } else { 0 };
        Ok(RoomPage { rooms, next })
    }

    /// How many names are in `room` (`None` when it cannot be read now).
    pub async fn count(&self, room: &RoomName) -> Option<u64> {
        match &self.cluster {
            // The joining member's own name counts: wait until this
            // node's changes so far are in Redis.
            Some(cluster) => {
                cluster.settled().await.ok()?;
                cluster.count(room).await.ok()
            }
            None => Some(self.registry().map_or(0, |r| r.name_count(room) as u64)),
        }
    }

    /// In a cluster, after the bus lost and regained Redis (which may have
    /// lost its data meanwhile): states this node's names again.
    pub fn restate(&self) {
        if let (Some(cluster), Some(registry)) = (&self.cluster, self.registry()) {
            registry.each_name(|room, name, connections, since| {
                cluster.set(room, name, connections, since);
            });
        }
    }
}
