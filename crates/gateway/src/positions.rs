//! Positions: every message of a room gets `seq` 1, 2, 3, ... within the
//! room's epoch, with no gaps and no repeats, from one ordering point. A
//! single node is its own ordering point: a counter per room in the
//! process, continued from the store. The counter is taken under its lock
//! together with the local fan-out, so members see a room's messages in seq
//! order.
//!
//! The epoch: with the embedded journal, the store's, kept across runs that
//! end cleanly (every position given is then stored) and replaced after a
//! crash (positions given to messages that never became durable could
//! otherwise be given again). With the Kafka journal the store is the
//! archive, which may lag the log, so each run counts in an epoch of its
//! own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use switchboard_protocol::{Position, RoomName};
use switchboard_store::{Store, StoreError};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Rooms kept in memory before idle ones are forgotten (and read again from
/// the store when next used).
const SWEEP_ABOVE: usize = 10_000;
/// How long a room must have been quiet to be forgotten: far longer than a
/// message takes to become durable, so the store has all its positions.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Where a run's epoch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochSource {
    /// The store's own, kept across clean runs (the embedded journal).
    Store,
    /// A new one per run (the Kafka journal: the store lags the log).
    Fresh,
}

/// A single node's ordering point.
pub(crate) struct LocalOrder {
    store: Arc<dyn Store>,
    source: EpochSource,
    epoch: OnceCell<String>,
    /// Resends recognised per room: the last this many ids keep their seq.
    window: usize,
    rooms: Mutex<Rooms>,
    /// Positions given whose message the journal has not confirmed.
    unstored: Arc<AtomicU64>,
}

/// A position given and not yet stored: counted until [`Unstored::stored`]
/// (a message whose write failed, timed out or was never made stays
/// counted, and the run does not end cleanly).
pub(crate) struct Unstored(Arc<AtomicU64>);

impl Unstored {
    /// The journal has the message.
    pub fn stored(self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Rooms {
    counters: HashMap<RoomName, Arc<Mutex<Counter>>>,
    swept: Option<Instant>,
}

/// One room's counter.
pub(crate) struct Counter {
    last: u64,
    /// Ids given a position lately, with it and their acceptance time: a
    /// resend gets the same ones (the archive's key includes the time).
    ids: HashMap<Uuid, (u64, i64)>,
    order: VecDeque<Uuid>,
    used: Instant,
}

/// A position given to an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Assigned {
    pub seq: u64,
    /// When the id was first accepted (Unix ms).
    pub ts: i64,
    /// False when the id had this position already (a resend).
    pub fresh: bool,
}

impl LocalOrder {
    pub fn new(store: Arc<dyn Store>, source: EpochSource, window: usize) -> Self {
        Self {
            store,
            source,
            epoch: OnceCell::new(),
            window: window.max(1),
            rooms: Mutex::new(Rooms::default()),
            unstored: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts a position just given until its message is stored.
    pub fn given(&self) -> Unstored {
        self.unstored.fetch_add(1, Ordering::Relaxed);
        Unstored(self.unstored.clone())
    }

    /// This run's epoch, begun on first use.
    pub async fn epoch(&self) -> Result<&str, StoreError> {
        let epoch = self
            .epoch
            .get_or_try_init(|| async {
                match self.source {
                    EpochSource::Store => self.store.begin_epoch().await,
                    EpochSource::Fresh => Ok(switchboard_store::new_epoch()),
                }
            })
            .await?;
        Ok(epoch)
    }

    /// The room's counter and the epoch it counts in; read from the store
    /// the first time the room is used in this run (or after it was
    /// forgotten).
    pub async fn counter(
        &self,
        room: &RoomName,
    ) -> Result<(Arc<Mutex<Counter>>, &str), StoreError> {
        let epoch = self.epoch().await?;
        if let Some(counter) = self.lock().counters.get(room) {
            return Ok((counter.clone(), epoch));
        }
        let last = self.store.last_seq(room, epoch).await?;
        let mut rooms = self.lock();
        rooms.sweep();
        // Another task may have read it meanwhile: the first one stays,
        // with whatever it has given since.
        let counter = rooms
            .counters
            .entry(room.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Counter::after(last))))
            .clone();
        Ok((counter, epoch))
    }

    /// The room's position now: the epoch and the last seq given.
    pub async fn position(&self, room: &RoomName) -> Result<Position, StoreError> {
        let (counter, epoch) = self.counter(room).await?;
        let seq = lock(&counter).last;
        Ok(Position {
            epoch: epoch.to_owned(),
            seq,
        })
    }

    /// Ends the run cleanly (after the journal's last write): the next run
    /// on this store keeps the epoch. Not when a position given may not be
    /// stored: the next run could give it again, so it starts a new epoch.
    pub async fn end(&self) {
        if self.source != EpochSource::Store {
            return;
        }
        let unstored = self.unstored.load(Ordering::Relaxed);
        if unstored > 0 {
            tracing::warn!(
                unstored,
                "positions given to messages not known to be stored; the next run starts a new epoch"
            );
            return;
        }
        if let Some(epoch) = self.epoch.get()
            && let Err(e) = self.store.end_epoch(epoch).await
        {
            tracing::warn!(error = %e, "could not record a clean end of the epoch; the next run starts a new one");
        }
    }

    /// The position `id` has or gets in `counter`'s room, and its
    /// acceptance time: `now` for a new id, the first one for a resend.
    pub fn assign(&self, counter: &mut Counter, id: Uuid, now: i64) -> Assigned {
        counter.used = Instant::now();
        if let Some(&(seq, ts)) = counter.ids.get(&id) {
            return Assigned {
                seq,
                ts,
                fresh: false,
            };
        }
        counter.last += 1;
        counter.ids.insert(id, (counter.last, now));
        counter.order.push_back(id);
        while counter.order.len() > self.window {
            if let Some(old) = counter.order.pop_front() {
                counter.ids.remove(&old);
            }
        }
        Assigned {
            seq: counter.last,
            ts: now,
            fresh: true,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Rooms {
    /// Forgets rooms quiet for a while, when there are many (at most once
    /// a minute).
    fn sweep(&mut self) {
        if self.counters.len() < SWEEP_ABOVE
            || self
                .swept
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.swept = Some(Instant::now());
        self.counters.retain(|_, counter| {
            Arc::strong_count(counter) > 1 || lock(counter).used.elapsed() < FORGET_AFTER
        });
    }
}

impl Counter {
    fn after(last: u64) -> Self {
        Self {
            last,
            ids: HashMap::new(),
            order: VecDeque::new(),
            used: Instant::now(),
        }
    }
}

/// Locks a counter (a panic elsewhere leaves it usable).
pub(crate) fn lock(counter: &Mutex<Counter>) -> MutexGuard<'_, Counter> {
    counter.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory() -> Arc<dyn Store> {
        switchboard_store::open_with("sqlite::memory:", true)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn positions_count_up_and_a_resend_keeps_its_own() {
        let order = LocalOrder::new(memory().await, EpochSource::Store, 2);
        let room = RoomName::parse("r").unwrap();
        let (counter, _) = order.counter(&room).await.unwrap();
        let mut c = lock(&counter);
        let (a, b, d) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            order.assign(&mut c, a, 100),
            Assigned {
                seq: 1,
                ts: 100,
                fresh: true
            }
        );
        assert_eq!(
            order.assign(&mut c, b, 101),
            Assigned {
                seq: 2,
                ts: 101,
                fresh: true
            }
        );
        // A resend keeps its position and its first acceptance time.
        assert_eq!(
            order.assign(&mut c, a, 150),
            Assigned {
                seq: 1,
                ts: 100,
                fresh: false
            }
        );
        assert_eq!(order.assign(&mut c, d, 160).seq, 3);
        // Past the window the oldest id is forgotten.
        assert!(order.assign(&mut c, a, 170).fresh);
    }

    #[tokio::test]
    async fn a_room_continues_from_the_store() {
        let store = memory().await;
        let epoch = store.begin_epoch().await.unwrap();
        store.end_epoch(&epoch).await.unwrap();
        let room = RoomName::parse("r").unwrap();
        let stored: Vec<_> = (1..=4)
            .map(|seq| switchboard_protocol::Message {
                id: Uuid::now_v7(),
                room: room.clone(),
                from: "a".into(),
                text: "t".into(),
                ts: 1,
                seq,
                epoch: epoch.clone(),
                data: None,
                deleted: false,
            })
            .collect();
        store.insert(&stored).await.unwrap();
        let order = LocalOrder::new(store.clone(), EpochSource::Store, 10);
        let (counter, at) = order.counter(&room).await.unwrap();
        assert_eq!(at, epoch, "a clean end keeps the epoch");
        assert_eq!(order.assign(&mut lock(&counter), Uuid::now_v7(), 1).seq, 5);
        let fresh = LocalOrder::new(store, EpochSource::Fresh, 10);
        let (counter, other) = fresh.counter(&room).await.unwrap();
        assert_ne!(other, epoch);
        assert_eq!(fresh.assign(&mut lock(&counter), Uuid::now_v7(), 1).seq, 1);
    }

    #[tokio::test]
    async fn a_run_with_positions_not_known_stored_does_not_keep_its_epoch() {
        let store = memory().await;
        let order = LocalOrder::new(store.clone(), EpochSource::Store, 10);
        let first = order.epoch().await.unwrap().to_owned();
        let lost = order.given();
        order.end().await;
        assert_ne!(store.begin_epoch().await.unwrap(), first);
        drop(lost);
        let order = LocalOrder::new(store.clone(), EpochSource::Store, 10);
        let second = order.epoch().await.unwrap().to_owned();
        order.given().stored();
        order.end().await;
        assert_eq!(
            store.begin_epoch().await.unwrap(),
            second,
            "all stored: kept"
        );
    }
}
