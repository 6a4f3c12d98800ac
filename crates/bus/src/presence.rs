//! Who is in a room across a cluster, kept in Redis.
//!
//! Per room (under the room's hash tag): `{..}:pres`, a hash of
//! `node\x1fname` -> `connections since` (this node's connections of that
//! name in the room), and `{..}:pcount`, a hash of name -> how many nodes
//! have it, whose length is the room's count. One script applies a node's
//! new state for a name and publishes `join`/`leave` on the room's channel
//! when the name's first node came or its last went, so events are of
//! names, not of connections. Per node: `{prefix}:pnode:{node}`, the rooms
//! where it has members, and `{prefix}:pnodes`, a sorted set of nodes by
//! when they count as dead unless they beat again. Every node beats every
//! `ttl / 3` and sweeps: a node past its time is claimed by the first to
//! remove it from the set, which takes its names out of every room (with
//! their leave events).
//!
//! A node's changes are coalesced per (room, name) and applied in the
//! background by one task, so joins never wait for Redis; the state applied
//! is absolute (a count, not a delta), so a retry or a replay after Redis
//! lost its data is harmless.
//!
//! `rooms` pages the rooms with names (over every master of a Redis
//! Cluster); `status` keeps each node's status for the admin console.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use switchboard_protocol::{Member, PresenceChange, PresenceEvent, RoomName, now_ms};
use tokio::sync::{Notify, OnceCell, watch};
use tokio_util::sync::CancellationToken;

mod rooms;
mod status;

use crate::sequence::Keys;
use crate::target::{Conn, Target};
use crate::{BusError, BusFuture, PresenceListener, Presences, RoomPage};

/// A node's state for one name in one room. KEYS: pres, pcount. ARGV:
/// node, name, connections, since, channel, room, publish command.
/// Returns what it published (0 nothing, 1 join, 2 leave) and the count.
const SET: &str = r"
local field = ARGV[1] .. '\31' .. ARGV[2]
if tonumber(ARGV[3]) > 0 then
  if redis.call('HSET', KEYS[1], field, ARGV[3] .. ' ' .. ARGV[4]) == 1
     and redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    local count = redis.call('HLEN', KEYS[2])
    redis.call(ARGV[7], ARGV[5], 'P join ' .. count .. ' ' .. ARGV[6] .. ' ' .. ARGV[2])
    return {1, count}
  end
elseif redis.call('HDEL', KEYS[1], field) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    local count = redis.call('HLEN', KEYS[2])
    redis.call(ARGV[7], ARGV[5], 'P leave ' .. count .. ' ' .. ARGV[6] .. ' ' .. ARGV[2])
    return {2, count}
  end
end
return {0, 0}
";

/// Changes applied in one pass at most before the task looks at its clock.
const PASS: usize = 1_000;

#[derive(Default)]
struct Pending {
    /// The latest state per (room, name): connections and since.
    states: HashMap<(RoomName, String), (u32, i64)>,
    order: VecDeque<(RoomName, String)>,
    /// Rooms this node no longer has members in.
    gone: Vec<RoomName>,
}

/// [`Presences`] over Redis.
#[derive(Clone)]
pub(crate) struct RedisPresence(Arc<Inner>);

struct Inner {
    target: Target,
    /// For reads (members, count), shared by every caller.
    reader: OnceCell<Conn>,
    prefix: String,
    node: String,
    ttl: Duration,
    set: Script,
    pending: Mutex<Pending>,
    wake: Notify,
    /// Counts the times the writer found nothing pending (everything given
    /// to it before was applied): what `settled` waits on.
    drained: watch::Sender<u64>,
    /// Told of every join and leave this node makes.
    listener: std::sync::OnceLock<PresenceListener>,
}

impl RedisPresence {
    /// Starts the node's presence task (beats, sweeps, applies changes).
    pub fn start(
        target: Target,
        prefix: String,
        node: String,
        ttl: Duration,
        stop: CancellationToken,
    ) -> Self {
        let inner = Arc::new(Inner {
            target,
            reader: OnceCell::new(),
            prefix,
            node,
            ttl: ttl.max(Duration::from_millis(300)),
            set: Script::new(SET),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            drained: watch::Sender::new(0),
            listener: std::sync::OnceLock::new(),
        });
        tokio::spawn(run(inner.clone(), stop));
        Self(inner)
    }
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn reader(&self) -> redis::RedisResult<Conn> {
        let conn = self
            .reader
            .get_or_try_init(|| self.target.connect())
            .await?;
        Ok(conn.clone())
    }

    /// One read on the shared connection, bounded like every Redis call.
    async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BusError> {
        let read = async { cmd.query_async::<T>(&mut self.reader().await?).await };
        tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .map_err(|_| BusError::Timeout)?
            .map_err(|e| BusError::Redis(e.to_string()))
    }

    fn node_rooms(&self, node: &str) -> String {
        format!("{}:pnode:{node}", self.prefix)
    }

    fn nodes(&self) -> String {
        format!("{}:pnodes", self.prefix)
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        node: &str,
        room: &RoomName,
        name: &str,
        state: (u32, i64),
    ) -> redis::RedisResult<()> {
        let keys = Keys::new(&self.prefix, room);
        let (event, count): (u8, u64) = self
            .set
            .key(&keys.pres)
            .key(&keys.pcount)
            .arg(node)
            .arg(name)
            .arg(state.0)
            .arg(state.1)
            .arg(&keys.channel)
            .arg(room.as_str())
            .arg(self.target.publish_command())
            .invoke_async(conn)
            .await?;
        let event = match event {
            1 => Some(PresenceEvent::Join),
            2 => Some(PresenceEvent::Leave),
            _ => None,
        };
        if let (Some(event), Some(listener)) = (event, self.listener.get()) {
            listener(PresenceChange {
                room: room.clone(),
                event,
                name: Some(name.to_owned()),
                count,
            });
        }
        if state.0 > 0 && node == self.node {
            let _: i64 = redis::cmd("SADD")
                .arg(self.node_rooms(node))
                .arg(room.as_str())
                .query_async(conn)
                .await?;
        }
        Ok(())
    }

    /// Applies what is pending; on failure puts back what was not applied
    /// (unless a newer state replaced it meanwhile).
    async fn flush(&self, conn: &mut Conn) -> redis::RedisResult<()> {
        loop {
            let (batch, gone) = {
                let mut p = self.pending();
                if p.order.is_empty() && p.gone.is_empty() {
                    // Under the lock: whatever was set before a `settled`
                    // read the count is applied by now.
                    self.drained.send_modify(|n| *n += 1);
                    p.states.shrink_to(64);
                    p.order.shrink_to(64);
                    return Ok(());
                }
                let n = p.order.len().min(PASS);
                let mut batch = Vec::with_capacity(n);
                for key in p.order.drain(..n).collect::<Vec<_>>() {
                    if let Some(state) = p.states.remove(&key) {
                        batch.push((key, state));
                    }
                }
                (batch, std::mem::take(&mut p.gone))
            };
            if batch.is_empty() && gone.is_empty() {
                continue;
            }
            for (i, ((room, name), state)) in batch.iter().enumerate() {
                if let Err(e) = self.apply(conn, &self.node, room, name, *state).await {
                    let mut p = self.pending();
                    for (key, state) in batch.into_iter().skip(i) {
                        if !p.states.contains_key(&key) {
                            p.states.insert(key.clone(), state);
                            p.order.push_front(key);
                        }
                    }
                    p.gone.extend(gone);
                    return Err(e);
                }
            }
            for room in &gone {
                let _: i64 = redis::cmd("SREM")
                    .arg(self.node_rooms(&self.node))
                    .arg(room.as_str())
                    .query_async(conn)
                    .await?;
            }
        }
    }

    /// Takes every name of `node` out of every room it had members in.
    async fn clear(&self, conn: &mut Conn, node: &str) -> redis::RedisResult<usize> {
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.node_rooms(node))
            .query_async(conn)
            .await?;
        let mut names = 0;
        let prefix = format!("{node}\u{1f}");
        for room in rooms {
            let Ok(room) = RoomName::parse(&room) else {
                continue;
            };
            let keys = Keys::new(&self.prefix, &room);
            let fields: Vec<String> = redis::cmd("HKEYS")
                .arg(&keys.pres)
                .query_async(conn)
                .await?;
            for name in fields.iter().filter_map(|f| f.strip_prefix(&prefix)) {
                self.apply(conn, node, &room, name, (0, 0)).await?;
                names += 1;
            }
        }
        let _: i64 = redis::cmd("DEL")
            .arg(self.node_rooms(node))
            .query_async(conn)
            .await?;
        Ok(names)
    }

    /// Beats for this node, and clears the nodes whose time ran out.
    async fn beat(&self, conn: &mut Conn) -> redis::RedisResult<()> {
        let now = now_ms();
        let deadline = now + (self.ttl.as_millis() as i64) * 2 / 3;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.nodes())
            .arg(deadline)
            .arg(&self.node)
            .query_async(conn)
            .await?;
        let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.nodes())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(10)
            .query_async(conn)
            .await?;
        for node in dead {
            // The first survivor to remove it clears it.
            let claimed: i64 = redis::cmd("ZREM")
                .arg(self.nodes())
                .arg(&node)
                .query_async(conn)
                .await?;
            if claimed == 1 {
                match self.clear(conn, &node).await {
                    Ok(names) => {
                        tracing::warn!(%node, names, "a node stopped beating: its members were removed from presence");
                        metrics::counter!("switchboard_presence_nodes_cleared_total").increment(1);
                    }
                    Err(e) => {
                        // Put back as already dead, so a later sweep (here
                        // or on another node) finishes the job.
                        let _: redis::RedisResult<i64> = redis::cmd("ZADD")
                            .arg(self.nodes())
                            .arg(0)
                            .arg(&node)
                            .query_async(conn)
                            .await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let mut conn: Option<Conn> = None;
    let mut started = false;
    let mut failing = false;
    let mut every = tokio::time::interval(inner.ttl / 6);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let beat = tokio::select! {
            () = stop.cancelled() => break,
            _ = every.tick() => true,
            () = inner.wake.notified() => false,
        };
        let done = async {
            if conn.is_none() {
                conn = Some(inner.target.connect().await?);
            }
            let Some(c) = conn.as_mut() else {
                unreachable!("connected above")
            };
            if !started {
                // What a previous run under this node id left behind.
                inner.clear(c, &inner.node.clone()).await?;
                started = true;
            }
            if beat {
                inner.beat(c).await?;
            }
            inner.flush(c).await
        };
        match tokio::time::timeout(inner.ttl / 3, done)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from(std::io::Error::other("timed out"))))
        {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("presence is written to redis again");
                }
            }
            Err(e) => {
                // Once per outage in the log; retried every 200 ms.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "presence could not be written to redis; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                inner.wake.notify_one();
            }
        }
    }
    // A clean stop takes this node's names out at once.
    if let Some(c) = conn.as_mut() {
        let node = inner.node.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = inner.clear(c, &node).await;
            let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(inner.nodes())
                .arg(&node)
                .query_async(c)
                .await;
            let _: redis::RedisResult<i64> = redis::cmd("HDEL")
                .arg(inner.statuses())
                .arg(&node)
                .query_async(c)
                .await;
        })
        .await;
    }
}

impl Presences for RedisPresence {
    fn listen(&self, listener: PresenceListener) {
        let _ = self.0.listener.set(listener);
    }

    fn report(&self, status: String) -> BusFuture<()> {
        let inner = self.0.clone();
        Box::pin(async move { inner.report(status).await })
    }

    fn reports(&self, max_age_ms: i64) -> BusFuture<Vec<String>> {
        let inner = self.0.clone();
        Box::pin(async move { inner.reports(max_age_ms).await })
    }

    fn set(&self, room: &RoomName, name: &str, connections: u32, since: i64) {
        let mut p = self.0.pending();
        let key = (room.clone(), name.to_owned());
        if p.states.insert(key.clone(), (connections, since)).is_none() {
            p.order.push_back(key);
        }
        drop(p);
        self.0.wake.notify_one();
    }

    fn room_gone(&self, room: &RoomName) {
        self.0.pending().gone.push(room.clone());
        self.0.wake.notify_one();
    }

    fn settled(&self) -> BusFuture<()> {
        let inner = self.0.clone();
        Box::pin(async move {
            let mut drained = inner.drained.subscribe();
            let seen = {
                let _pending = inner.pending();
                *drained.borrow_and_update()
            };
            inner.wake.notify_one();
            tokio::time::timeout(Duration::from_secs(2), drained.wait_for(|n| *n > seen))
                .await
                .map_err(|_| BusError::Timeout)?
                .map_err(|_| BusError::Redis("the presence writer stopped".into()))?;
            Ok(())
        })
    }

    fn members(&self, room: &RoomName) -> BusFuture<Vec<Member>> {
        let inner = self.0.clone();
        let keys = Keys::new(&inner.prefix, room);
        Box::pin(async move {
            let fields: Vec<(String, String)> =
                inner.read(redis::cmd("HGETALL").arg(&keys.pres)).await?;
            Ok(aggregate(&fields))
        })
    }

    fn count(&self, room: &RoomName) -> BusFuture<u64> {
        let inner = self.0.clone();
        let keys = Keys::new(&inner.prefix, room);
        Box::pin(async move { inner.read(redis::cmd("HLEN").arg(&keys.pcount)).await })
    }

    fn rooms(&self, cursor: u64, count: u32) -> BusFuture<RoomPage> {
        let inner = self.0.clone();
        Box::pin(async move { inner.rooms(cursor, count).await })
    }
}

/// Every node's `node\x1fname` -> `connections since`, by name: the
/// connections summed, the earliest since.
fn aggregate(fields: &[(String, String)]) -> Vec<Member> {
    let mut by_name: HashMap<&str, (u64, i64)> = HashMap::new();
    for (field, value) in fields {
        let Some((_, name)) = field.split_once('\u{1f}') else {
            continue;
        };
        let mut parts = value.split(' ');
        let connections: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let since: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let entry = by_name.entry(name).or_insert((0, i64::MAX));
        entry.0 += connections;
        entry.1 = entry.1.min(since);
    }
    let mut members: Vec<Member> = by_name
        .into_iter()
        .map(|(name, (connections, since))| Member {
            name: name.to_owned(),
            connections,
            since,
        })
        .collect();
    members.sort_by(|a, b| (a.since, &a.name).cmp(&(b.since, &b.name)));
    members
}

/// Decodes a presence event from the room's channel:
/// `P {join|leave} {count} {room} {name}`.
pub(crate) fn decode(payload: &[u8]) -> Option<PresenceChange> {
    let text = std::str::from_utf8(payload.strip_prefix(b"P ")?).ok()?;
    let mut parts = text.splitn(4, ' ');
    let event = match parts.next()? {
        "join" => PresenceEvent::Join,
        "leave" => PresenceEvent::Leave,
        _ => return None,
    };
    let count = parts.next()?.parse().ok()?;
    let room = RoomName::parse(parts.next()?).ok()?;
    let name = parts.next()?.to_owned();
    Some(PresenceChange {
        room,
        event,
        name: Some(name),
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_and_members_add_up_across_nodes() {
        let change = decode(b"P leave 2 lobby ann lee").unwrap();
        assert_eq!(change.event, PresenceEvent::Leave);
        assert_eq!((change.count, change.name.as_deref()), (2, Some("ann lee")));
        assert!(decode(b"P wave 2 lobby ann").is_none());
        assert!(decode(b"7 e {}").is_none());
        let fields = vec![
            ("n1\u{1f}ann".to_owned(), "2 100".to_owned()),
            ("n2\u{1f}ann".to_owned(), "1 50".to_owned()),
            ("n2\u{1f}bob".to_owned(), "1 70".to_owned()),
        ];
        let members = aggregate(&fields);
        assert_eq!(members.len(), 2);
        assert_eq!(
            (
                members[0].name.as_str(),
                members[0].connections,
                members[0].since
            ),
            ("ann", 3, 50)
        );
    }
}
