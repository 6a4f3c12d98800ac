//! A join's history: what the store holds, merged with what this node
//! delivered most recently, cut to fit one `joined` frame.

use std::time::Duration;

use switchboard_bus::BusError;
use switchboard_protocol::{Message, Position, RoomName};
use switchboard_store::StoreError;

use crate::policy::Policy;
use crate::{Gateway, Positions, SETTLE_TIMEOUT};

/// How long a recovery waits for the last positions given to reach the
/// store (the journal commits within milliseconds of delivery).
const RECOVERY_SETTLE: Duration = Duration::from_millis(500);

/// What a `joined` frame says besides the room.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    pub history: History,
    /// The room's position at the join; `None` while the cluster's
    /// ordering point is unreachable.
    pub position: Option<Position>,
    /// With `since`: whether `history` is exactly what came after it.
    pub recovered: Option<bool>,
}

/// Why a join's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ordering point: {0}")]
    Order(#[from] BusError),
}

impl Gateway {
    /// The join history: the latest `limit` messages of `room` from the store,
    /// merged with what this node delivered most recently (which the store may
    /// not have committed yet), oldest first, cut to fit [`JOINED_MAX_BYTES`].
    async fn history(
        &self,
        room: &RoomName,
        limit: u32,
        recent: Vec<Message>,
    ) -> Result<History, StoreError> {
        if limit == 0 {
            return Ok(History::default());
        }
        let mut all = self.bounded(self.store.history(room, limit, None)).await?;
        all.extend(recent);
        all.sort_by_key(|a| (a.ts, a.seq, a.id));
        all.dedup_by_key(|m| m.id);
        let skip = all.len().saturating_sub(limit as usize);
        all.drain(..skip);
        Ok(History::within(all, JOINED_MAX_BYTES))
    }

    /// In cluster mode, makes sure this node receives the room's live
    /// messages before its position and history are read, so nothing falls
    /// between. (While the bus is down there is nothing to wait for: the
    /// node re-subscribes on reconnect, and the join is not held up.)
    async fn settle(&self, room: &RoomName) {
        if self.bus.is_ready()
            && tokio::time::timeout(SETTLE_TIMEOUT, self.bus.settled())
                .await
                .is_err()
        {
            tracing::warn!(%room, "bus subscription not confirmed; live messages from other nodes may be missed");
        }
    }

    /// What a join answers: with `since`, exactly the messages after it
    /// when they can all be told (`recovered: true`), else the latest
    /// `limit` (`recovered: false`); without `since`, the latest `limit`.
    /// `recent` is what this node delivered lately in the room (the store
    /// may not have it yet).
    pub(crate) async fn joined(
        &self,
        room: &RoomName,
        limit: u32,
        since: Option<Position>,
        recent: Vec<Message>,
        policy: &Policy,
    ) -> Result<Joined, ReadError> {
        self.settle(room).await;
        let position = match self.room_position(room).await {
            Ok(position) => position,
            // The ordering point is down: the member joins with the stored
            // history and no position; sends are refused until it is back.
            Err(ReadError::Order(e)) => {
                tracing::warn!(error = %e, %room, "joined without a position: the ordering point is unavailable");
                return Ok(Joined {
                    history: self.history(room, limit, recent).await?,
                    position: None,
                    recovered: since.map(|_| false),
                });
            }
            Err(e) => return Err(e),
        };
        if let Positions::Cluster(flows) = &self.positions {
            flows.joined_at(room, &position);
        }
        let recovered = match &since {
            Some(since) if policy.recovery => {
                self.recover(room, since, &position, &recent, policy.recovery_max)
                    .await?
            }
            _ => None,
        };
        let (history, recovered) = match (recovered, since) {
            (Some(missed), _) => (History::within(missed, JOINED_MAX_BYTES), Some(true)),
            (None, since) => (
                self.history(room, limit, recent).await?,
                since.map(|_| false),
            ),
        };
        // Cut to fit a frame: then it is no longer exactly what was missed.
        let recovered = recovered.map(|r| r && !history.truncated);
        Ok(Joined {
            history,
            position: Some(position),
            recovered,
        })
    }

    /// The room's position now: its epoch and last seq.
    pub(crate) async fn room_position(&self, room: &RoomName) -> Result<Position, ReadError> {
        match &self.positions {
            Positions::Local(order) => Ok(self.bounded(order.position(room)).await?),
            Positions::Cluster(flows) => Ok(flows.sequencer().position(room).await?),
        }
    }

    /// A store read bounded like an ack: a stalled store must not hold a
    /// connection or a sender.
    pub(crate) async fn bounded<T>(
        &self,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.config.ack_timeout, read)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// The messages after `since` up to `now`, in seq order, when the epoch
    /// is the same, they are at most `RECOVERY_MAX`, and the hot window (the
    /// room's Redis stream, or what this node delivered lately) with the
    /// store for what is older has every one of them; `None` otherwise.
    async fn recover(
        &self,
        room: &RoomName,
        since: &Position,
        now: &Position,
        recent: &[Message],
        most: u64,
    ) -> Result<Option<Vec<Message>>, ReadError> {
        if since.epoch != now.epoch || since.seq > now.seq || now.seq - since.seq > most {
            return Ok(None);
        }
        let missed = now.seq - since.seq;
        let deadline = tokio::time::Instant::now() + RECOVERY_SETTLE;
        loop {
            let mut got: Vec<Message> = recent
                .iter()
                .filter(|m| m.epoch == now.epoch && m.seq > since.seq && m.seq <= now.seq)
                .cloned()
                .collect();
            if let Positions::Cluster(flows) = &self.positions {
                let window = flows
                    .sequencer()
                    .window(room, since.seq, missed as u32)
                    .await?;
                if window.position.epoch != now.epoch {
                    return Ok(None);
                }
                got.extend(window.messages);
            }
            got.sort_by_key(|m| m.seq);
            got.dedup_by_key(|m| m.seq);
            // What the hot window does not reach back to comes from the
            // store (in Kafka mode the archive, which lags the log: the
            // newest positions are in the window, the older ones stored).
            if got.first().is_none_or(|m| m.seq > since.seq + 1) {
                let older = got.first().map_or(missed, |m| m.seq - since.seq - 1);
                let read = self
                    .store
                    .after_seq(room, &now.epoch, since.seq, older as u32);
                got.extend(self.bounded(read).await?);
                got.sort_by_key(|m| m.seq);
                got.dedup_by_key(|m| m.seq);
            }
            got.retain(|m| m.seq <= now.seq);
            let complete = got
                .iter()
                .zip(since.seq + 1..)
                .all(|(m, want)| m.seq == want)
                && got.len() as u64 == missed;
            if complete {
                return Ok(Some(got));
            }
            // The newest positions may still be on their way to the store.
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(%room, since = since.seq, now = now.seq, have = got.len(), "cannot recover: positions missing from the store");
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The most a `joined` frame's history may take, encoded: half the write
/// buffer of a `/ws` connection (the rest is for frames queued beside it),
/// whatever `HISTORY_MAX` and `MAX_MESSAGE_BYTES` allow.
pub(crate) const JOINED_MAX_BYTES: usize = 512 * 1024;

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A join's history, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub messages: Vec<Message>,
    /// Older messages were left out to fit the frame.
    pub truncated: bool,
}

impl History {
    /// The newest of `messages` whose encodings fit in `budget` bytes.
    fn within(mut messages: Vec<Message>, budget: usize) -> Self {
        let mut used = 0;
        let mut keep = 0;
        for m in messages.iter().rev() {
            // The message object plus its comma, counted as it would be
            // written, without writing it anywhere.
            let mut counted = ByteCount(0);
            let size =
                serde_json::to_writer(&mut counted, m).map_or(usize::MAX, |()| counted.0 + 1);
            if used + size > budget {
                break;
            }
            used += size;
            keep += 1;
        }
        let cut = messages.len() - keep;
        messages.drain(..cut);
        Self {
            messages,
            truncated: cut > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn history_keeps_the_newest_that_fit() {
        let room = RoomName::parse("r").unwrap();
        let messages: Vec<Message> = (0..100)
            .map(|i| Message {
                id: Uuid::now_v7(),
                room: room.clone(),
                from: "a".into(),
                text: format!("{i:0>1000}"),
                ts: i,
                seq: 0,
                epoch: String::new(),
                data: None,
                deleted: false,
            })
            .collect();
        let one = serde_json::to_string(&messages[0]).unwrap().len() + 1;
        let h = History::within(messages.clone(), 10 * one + one / 2);
        assert!(h.truncated);
        assert_eq!(h.messages.len(), 10);
        assert_eq!(h.messages.last().unwrap().ts, 99, "the newest are kept");
        assert_eq!(h.messages.first().unwrap().ts, 90);
        let all = History::within(messages, usize::MAX);
        assert!(!all.truncated);
        assert_eq!(all.messages.len(), 100);
    }
}
