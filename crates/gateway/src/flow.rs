//! In-order delivery of a room's messages on one node of a cluster.
//!
//! The ordering point (Redis) gives every message of a room its seq and
//! publishes it, so a node normally sees a room's messages in seq order:
//! its own from the script's reply, the others' from its subscription. A
//! room's *flow* delivers them to local members strictly in seq order,
//! once each: a seq at or below the last delivered is a duplicate and is
//! dropped; a seq past the next one waits while the node fills the gap
//! (a Pub/Sub message lost in a Redis blip or a resubscribe, an inbox drop
//! under load) from the room's window, for at most [`GAP_WAIT`]. What the
//! window no longer has is skipped and counted.
//!
//! A gap is seen when a later message arrives; a room whose *last*
//! messages were lost has none to reveal it, so a room that went quiet is
//! asked its position once ([`Flows::probe_quiet`]) and catches up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use switchboard_bus::Sequencer;
use switchboard_protocol::{Message, Position, RoomName};

use crate::registry::Registry;

/// How long a flow waits for the missing messages before a fill is tried:
/// a message published just before arrives on the other connection.
const GAP_GRACE: Duration = Duration::from_millis(50);
/// How long a gap may hold up the messages behind it.
const GAP_WAIT: Duration = Duration::from_secs(1);
/// Pause between fill attempts.
const FILL_RETRY: Duration = Duration::from_millis(100);
/// Messages a flow holds back at most while filling; past it the gap is
/// given up at once, so a flood cannot grow memory.
const HOLD_MAX: usize = 10_000;
/// Flows kept before idle ones are forgotten.
const SWEEP_ABOVE: usize = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// A room quiet this long after its last message is probed once...
const QUIET_AFTER: Duration = Duration::from_secs(1);
/// ...if that message came within this long (older quiet rooms were).
const QUIET_WITHIN: Duration = Duration::from_secs(10);

/// The flows of every room this node has delivered in.
pub(crate) struct Flows {
    sequencer: Arc<dyn Sequencer>,
    registry: Arc<Registry>,
    rooms: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    flows: HashMap<RoomName, Arc<Mutex<Flow>>>,
    /// When idle flows were last forgotten.
    swept: Option<Instant>,
}

#[derive(Default)]
struct Flow {
    /// Empty until the first message or join sets it.
    epoch: String,
    /// The last seq delivered.
    last: u64,
    /// Messages past a gap, waiting.
    held: BTreeMap<u64, Message>,
    /// A seq known to be given (after the subscription was lost and
    /// regained): what is missing up to it is filled even with nothing held.
    target: u64,
    /// A fill task is running.
    filling: bool,
    used: Option<Instant>,
    /// Its position was asked since its last message (see `probe_quiet`).
    probed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Flows {
    pub fn new(sequencer: Arc<dyn Sequencer>, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Self {
            sequencer,
            registry,
            rooms: Mutex::new(Rooms::default()),
        })
    }

    pub fn sequencer(&self) -> &Arc<dyn Sequencer> {
        &self.sequencer
    }

    fn flow(&self, room: &RoomName) -> Arc<Mutex<Flow>> {
        let mut rooms = lock(&self.rooms);
        if let Some(flow) = rooms.flows.get(room) {
            return flow.clone();
        }
        // Forgets idle flows when there are many, at most once a minute.
        if rooms.flows.len() >= SWEEP_ABOVE
            && rooms
                .swept
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            rooms.swept = Some(Instant::now());
            rooms.flows.retain(|_, flow| {
                let flow = lock(flow);
                flow.filling || flow.used.is_some_and(|at| at.elapsed() < FORGET_AFTER)
            });
        }
        rooms.flows.entry(room.clone()).or_default().clone()
    }

    /// A member joined at `position`: a room new to this node delivers what
    /// comes after it (what came before is the join's history).
    pub fn joined_at(&self, room: &RoomName, position: &Position) {
        let flow = self.flow(room);
        let mut flow = lock(&flow);
        if flow.epoch.is_empty() {
            flow.epoch.clone_from(&position.epoch);
            flow.last = position.seq;
            flow.used = Some(Instant::now());
        }
    }

    /// The node's subscription was lost and regained (messages published
    /// meanwhile never arrived): every room it delivers in catches up to
    /// the position the ordering point gives it.
    pub async fn catch_up_all(self: &Arc<Self>) {
        let rooms: Vec<RoomName> = lock(&self.rooms).flows.keys().cloned().collect();
        tracing::info!(rooms = rooms.len(), "subscription regained: catching up");
        for room in rooms {
            if let Ok(position) = self.sequencer.position(&room).await {
                self.catch_up(&room, &position);
            }
        }
    }

    /// Rooms that went quiet lately (no message for [`QUIET_AFTER`], the
    /// last within [`QUIET_WITHIN`]) are asked their position once per
    /// quiet spell: messages lost at the end of a burst, with nothing after
    /// them to reveal the gap, are filled from the log. One position read
    /// per room that goes quiet, none for busy or idle rooms.
    pub async fn probe_quiet(self: &Arc<Self>) {
        let quiet: Vec<RoomName> = {
            let rooms = lock(&self.rooms);
            rooms
                .flows
                .iter()
                .filter_map(|(room, flow)| {
                    let mut f = lock(flow);
                    let idle = f.used?.elapsed();
                    if f.probed || f.filling || idle < QUIET_AFTER || idle > QUIET_WITHIN {
                        return None;
                    }
                    f.probed = true;
                    Some(room.clone())
                })
                .collect()
        };
        for room in quiet {
            if let Ok(position) = self.sequencer.position(&room).await {
                self.catch_up(&room, &position);
            }
        }
    }

    /// The ordering point has given `position`: fill up to it.
    fn catch_up(self: &Arc<Self>, room: &RoomName, position: &Position) {
        let flow = self.flow(room);
        let mut f = lock(&flow);
        if f.epoch != position.epoch || position.seq <= f.last {
            return;
        }
        f.target = f.target.max(position.seq);
        if !f.filling {
            f.filling = true;
            let this = self.clone();
            let room = room.clone();
            let flow = flow.clone();
            tokio::spawn(async move { this.fill(room, flow).await });
        }
    }

    /// A positioned message, from this node or another: delivered in seq
    /// order, once.
    pub fn arrive(self: &Arc<Self>, message: Message) {
        let flow = self.flow(&message.room);
        let mut guard = lock(&flow);
        let flow_state = &mut *guard;
        flow_state.used = Some(Instant::now());
        flow_state.probed = false;
        if flow_state.epoch != message.epoch {
            if !flow_state.epoch.is_empty() {
                // The ordering point lost the room: what was held is
                // delivered as it is, and the new epoch counts from 1.
                tracing::warn!(room = %message.room, old = %flow_state.epoch, new = %message.epoch, "the room's epoch changed");
                metrics::counter!("switchboard_epoch_changes_total").increment(1);
                for (_, held) in std::mem::take(&mut flow_state.held) {
                    self.deliver(&held);
                }
                flow_state.last = 0;
            } else {
                flow_state.last = message.seq.saturating_sub(1);
            }
            flow_state.epoch.clone_from(&message.epoch);
        }
        if message.seq <= flow_state.last {
            metrics::counter!("switchboard_bus_duplicates_total").increment(1);
            return;
        }
        if message.seq == flow_state.last + 1 {
            flow_state.last = message.seq;
            self.deliver(&message);
            self.release(flow_state);
            return;
        }
        flow_state.held.insert(message.seq, message.clone());
        if flow_state.held.len() > HOLD_MAX {
            self.skip_gap(flow_state, &message.room);
            return;
        }
        if !flow_state.filling {
            flow_state.filling = true;
            let this = self.clone();
            let room = message.room.clone();
            let flow = flow.clone();
            tokio::spawn(async move { this.fill(room, flow).await });
        }
    }

    /// Delivers what was held and is now next.
    fn release(&self, flow: &mut Flow) {
        while let Some(entry) = flow.held.first_entry() {
            if *entry.key() != flow.last + 1 {
                break;
            }
            let message = entry.remove();
            flow.last = message.seq;
            self.deliver(&message);
        }
    }

    /// Gives up on the gap before the first held message.
    fn skip_gap(&self, flow: &mut Flow, room: &RoomName) {
        let Some(&first) = flow.held.keys().next() else {
            return;
        };
        let missing = first - flow.last - 1;
        tracing::warn!(%room, after = flow.last, missing, "gap not filled in time; delivering what follows");
        metrics::counter!("switchboard_gaps_unfilled_total").increment(1);
        metrics::counter!("switchboard_gap_messages_lost_total").increment(missing);
        flow.last = first - 1;
        self.release(flow);
    }

    /// Fills `room`'s gaps from the window until none is left, or gives up
    /// on one after [`GAP_WAIT`].
    async fn fill(self: Arc<Self>, room: RoomName, flow: Arc<Mutex<Flow>>) {
        // When the gap at the front was first seen.
        let mut since = Instant::now();
        tokio::time::sleep(GAP_GRACE).await;
        loop {
            let Some((after, missing, epoch)) = self.front_gap(&flow) else {
                return;
            };
            let got = self
                .sequencer
                .window(&room, after, missing.min(u64::from(u32::MAX)) as u32)
                .await;
            let window = got.ok().filter(|w| w.position.epoch == epoch);
            if !self.filled(&flow, &room, after, window, &mut since) {
                return;
            }
            tokio::time::sleep(FILL_RETRY).await;
        }
    }

    /// The gap at the front of the flow (last delivered, how many missing,
    /// the epoch), or `None` (and the fill ends) when there is none.
    fn front_gap(&self, flow: &Mutex<Flow>) -> Option<(u64, u64, String)> {
        let mut f = lock(flow);
        let end = match f.held.keys().next() {
            Some(&first) => first - 1,
            None if f.target > f.last => f.target,
            None => {
                f.filling = false;
                return None;
            }
        };
        Some((f.last, end - f.last, f.epoch.clone()))
    }

    /// Delivers what `window` fills of the gap after `after`, gives the gap
    /// up once it has waited [`GAP_WAIT`]; false when nothing is held any
    /// more (the fill ends).
    fn filled(
        &self,
        flow: &Mutex<Flow>,
        room: &RoomName,
        after: u64,
        window: Option<switchboard_bus::Window>,
        since: &mut Instant,
    ) -> bool {
        let mut f = lock(flow);
        if let Some(window) = window
            && window.position.epoch == f.epoch
        {
            let before = f.last;
            for m in window.messages {
                if m.seq == f.last + 1 {
                    f.last = m.seq;
                    self.deliver(&m);
                    self.release(&mut f);
                }
            }
            if f.last > before {
                metrics::counter!("switchboard_gaps_filled_total").increment(1);
            }
        }
        if f.last > after {
            // Progress: what is left is a gap of its own.
            *since = Instant::now();
        }
        if since.elapsed() >= GAP_WAIT {
            if f.held.is_empty() {
                // Only a catch-up was pending: what the log lacks is lost.
                let missing = f.target.saturating_sub(f.last);
                if missing > 0 {
                    tracing::warn!(%room, after = f.last, missing, "messages missed while unsubscribed are no longer in the log");
                    metrics::counter!("switchboard_gaps_unfilled_total").increment(1);
                    metrics::counter!("switchboard_gap_messages_lost_total").increment(missing);
                    f.last = f.target;
                }
            } else {
                self.skip_gap(&mut f, room);
            }
            *since = Instant::now();
        }
        if f.held.is_empty() && f.target <= f.last {
            f.filling = false;
            return false;
        }
        true
    }

    fn deliver(&self, message: &Message) {
        for cut in self.registry.deliver(message) {
            crate::sio::cut(&self.registry, cut);
        }
    }
}
