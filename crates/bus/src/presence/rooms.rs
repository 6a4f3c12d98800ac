//! Paging the rooms that have names anywhere: a SCAN of their count keys,
//! over every master of a Redis Cluster in turn.

use std::time::Duration;

use switchboard_protocol::RoomName;

use super::Inner;
use crate::{BusError, RoomPage};

impl Inner {
    /// About `count` rooms with names from `cursor` (0 to begin), with
    /// their counts, and the cursor of the next page (0 after the last).
    pub(super) async fn rooms(&self, cursor: u64, count: u32) -> Result<RoomPage, BusError> {
        // Every room with names has its `{prefix:room}:pcount` hash.
        let head = format!("{{{}:", self.prefix);
        let pattern = format!("{}*}}:pcount", glob_escape(&head));
        let (next, keys) = self.scan(cursor, &pattern, count.max(1)).await?;
        let mut rooms = Vec::with_capacity(keys.len());
        for key in keys {
            let name = key
                .strip_prefix(&head)
                .and_then(|k| k.strip_suffix("}:pcount"));
            let Some(room) = name.and_then(|n| RoomName::parse(n).ok()) else {
                continue;
            };
            let names: u64 = self.read(redis::cmd("HLEN").arg(&key)).await?;
            if names > 0 {
                rooms.push((room, names));
            }
        }
        Ok(RoomPage { rooms, next })
    }

    /// One SCAN step over the keys matching `pattern`. In a cluster the
    /// masters are scanned one after the other (sorted by address): the
    /// cursor's top 16 bits are the master's index, the rest its own
    /// cursor. A page taken while the slot map changes may repeat or miss
    /// rooms.
    async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Vec<String>), BusError> {
        let mut cmd = redis::cmd("SCAN");
        let Some(cluster) = self.target.cluster() else {
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count);
            return self.read(&cmd).await;
        };
        const SHIFT: u32 = 48;
        let masters = cluster.masters();
        let index = (cursor >> SHIFT) as usize;
        let Some(master) = masters.get(index) else {
            return Ok((0, Vec::new()));
        };
        cmd.arg(cursor & ((1 << SHIFT) - 1))
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let reply = tokio::time::timeout(Duration::from_secs(2), cluster.on_master(master, cmd))
            .await
            .map_err(|_| BusError::Timeout)?
            .map_err(|e| BusError::Redis(e.to_string()))?;
        let (next, keys): (u64, Vec<String>) = redis::FromRedisValue::from_redis_value(reply)
            .map_err(|e| BusError::Redis(e.to_string()))?;
        let next = match next {
            0 if index + 1 < masters.len() => ((index as u64) + 1) << SHIFT,
            0 => 0,
            n => ((index as u64) << SHIFT) | n,
        };
        Ok((next, keys))
    }
}

/// `text` with Redis glob characters escaped, to match it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
