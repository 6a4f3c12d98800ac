//! A join's history: what the store holds, merged with what this node
//! delivered most recently, cut to fit one `joined` frame.

use switchboard_protocol::{Message, RoomName};

use crate::{Gateway, SETTLE_TIMEOUT};

impl Gateway {
    /// The join history: the latest `limit` messages of `room` from the store,
    /// merged with what this node delivered most recently (which the store may
    /// not have committed yet), oldest first, cut to fit [`JOINED_MAX_BYTES`].
    pub(crate) async fn history(
        &self,
        room: &RoomName,
        limit: u32,
        recent: Vec<Message>,
    ) -> Result<History, switchboard_store::StoreError> {
        // In cluster mode, make sure this node receives the room's live
        // messages before reading what is stored, so nothing falls between.
        // (While the bus is down there is nothing to wait for: the node
        // re-subscribes on reconnect, and the join is not held up.)
        if self.bus.is_ready()
            && tokio::time::timeout(SETTLE_TIMEOUT, self.bus.settled())
                .await
                .is_err()
        {
            tracing::warn!(%room, "bus subscription not confirmed; live messages from other nodes may be missed");
        }
        if limit == 0 {
            return Ok(History::default());
        }
        // Bounded like an ack: a stalled store must not hold a connection.
        let read = self.store.history(room, limit, None);
        let mut all = tokio::time::timeout(self.config.ack_timeout, read)
            .await
            .map_err(|_| switchboard_store::StoreError::Timeout)??;
        all.extend(recent);
        all.sort_by_key(|a| (a.ts, a.id));
        all.dedup_by_key(|m| m.id);
        let skip = all.len().saturating_sub(limit as usize);
        all.drain(..skip);
        Ok(History::within(all, JOINED_MAX_BYTES))
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
