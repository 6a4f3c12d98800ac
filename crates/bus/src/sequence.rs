//! Redis as the cluster's ordering point: one Lua script per message gives
//! it the room's next seq, appends it to the room's capped stream (the hot
//! window a rejoining client or a node with a gap reads back) and publishes
//! it with its seq, atomically, so every node sees a room's messages in seq
//! order and nothing is published without a position.
//!
//! A room's keys and channel share one hash tag, `{prefix:room}`:
//! `{..}:meta` (hash: `epoch`, `seq`), `{..}:log` (stream, entry id
//! `seq-0`, field `m` the envelope), `{..}:ids` (sorted set: message id
//! scored by its seq, for the room's last `window` ids, so a resend keeps
//! its position), `{..}:gone` (hash: the seqs of the log's deleted
//! messages, read back as tombstones) and the channel `{..}:ch`. The keys
//! expire together after `ttl` without a message. When the meta hash is gone (Redis
//! restarted without persistence, or the room was idle past its expiry) the
//! next use starts a new epoch, with an empty log.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use switchboard_protocol::{Message, Position, RoomName};
use tokio::sync::OnceCell;

use crate::target::{Conn, Target};
use crate::{BusError, BusFuture, Sequenced, Sequencer, Window, envelope};

/// How long one ordering call may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new position waits for its replicas at most (ms).
const WAIT_MS: u64 = 1_000;

/// Gives the message its position, appends it to the window and publishes
/// it. KEYS: meta, log, ids, gone. ARGV: id, envelope, candidate epoch,
/// window, ttl (ms), channel, publish command (`PUBLISH`, or `SPUBLISH` in
/// a cluster). Returns {seq, epoch, fresh (1 or 0)} as strings, and for a
/// resend the envelope it was first sent with (its time is the message's). The
/// log is capped by `XADD MAXLEN`, the ids by score; the keys' expiry is
/// refreshed once half of it has run out, not on every message.
const SEQUENCE: &str = r"
local meta, log, ids, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, payload, window, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', log, ids, gone)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
end
local known = redis.call('ZSCORE', ids, id)
if known then
  local first = redis.call('XRANGE', log, known .. '-0', known .. '-0')
  if #first > 0 then
    return {known, epoch, '0', first[1][2][2]}
  end
  return {known, epoch, '0'}
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', window, seq .. '-0', 'm', payload)
redis.call('ZADD', ids, seq, id)
if seq > window then
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', seq - window)
end
if redis.call('PTTL', meta) < ttl / 2 then
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', ids, ttl)
  redis.call('PEXPIRE', gone, ttl)
end
redis.call(ARGV[7], ARGV[6], seq .. ' ' .. epoch .. ' ' .. payload)
return {tostring(seq), epoch, '1'}
";

/// The room's position, beginning its epoch when it has none. KEYS: meta,
/// log, ids, gone. ARGV: candidate epoch, ttl (ms). Returns {epoch, seq}.
const POSITION: &str = r"
local meta = KEYS[1]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', meta, ARGV[2])
end
return {epoch, redis.call('HGET', meta, 'seq')}
";

/// The log after a seq. KEYS: meta, log, gone. ARGV: after, count.
/// Returns {epoch, last seq, oldest entry id or '', then entry id,
/// envelope, '1' when deleted or '0', ...}; epoch '' when the room has none.
const WINDOW: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', '0', ''}
end
local out = {epoch, redis.call('HGET', KEYS[1], 'seq'), ''}
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #oldest > 0 then
  out[3] = oldest[1][1]
end
local after = tonumber(ARGV[1])
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+', 'COUNT', ARGV[2])) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
  out[#out + 1] = tostring(redis.call('HEXISTS', KEYS[3], string.match(entry[1], '^%d+')))
end
return out
";

/// Marks a message of the window deleted. KEYS: meta, ids, gone. ARGV:
/// id. Returns {seq, epoch} of the message, or {} when the window does not
/// hold it. The mark expires with the room's other keys.
const ERASE: &str = r"
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seq then
  return {}
end
redis.call('HSET', KEYS[3], seq, '1')
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {seq, redis.call('HGET', KEYS[1], 'epoch')}
";

/// The ordering point's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub prefix: String,
    pub node_id: String,
    /// Entries each room's log keeps (`RECOVERY_WINDOW`).
    pub window: usize,
    /// A room's keys expire after this long without a message
    /// (`RECOVERY_TTL`).
    pub ttl: Duration,
    /// Replicas that must confirm a new position (`REDIS_WAIT_REPLICAS`).
    pub wait_replicas: u32,
}

/// [`Sequencer`] over Redis; clones share one connection.
#[derive(Clone)]
pub(crate) struct RedisSequencer(Arc<Inner>);

struct Inner {
    target: Target,
    conn: OnceCell<Conn>,
    settings: Settings,
    sequence: Script,
    position: Script,
    window: Script,
    erase: Script,
}

/// A room's keys and channel, sharing one hash tag.
pub(crate) struct Keys {
    meta: String,
    log: String,
    ids: String,
    gone: String,
    pub channel: String,
    /// Presence: `node\x1fname` -> `connections since`.
    pub pres: String,
    /// Presence: name -> nodes that have it.
    pub pcount: String,
}

impl Keys {
    pub fn new(prefix: &str, room: &RoomName) -> Self {
        let tag = format!("{{{prefix}:{room}}}");
        Self {
            meta: format!("{tag}:meta"),
            log: format!("{tag}:log"),
            ids: format!("{tag}:ids"),
            gone: format!("{tag}:gone"),
            channel: format!("{tag}:ch"),
            pres: format!("{tag}:pres"),
            pcount: format!("{tag}:pcount"),
        }
    }
}

impl RedisSequencer {
    pub fn new(target: Target, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            target,
            conn: OnceCell::new(),
            settings,
            sequence: Script::new(SEQUENCE),
            position: Script::new(POSITION),
            window: Script::new(WINDOW),
            erase: Script::new(ERASE),
        }))
    }
}

impl Inner {
    async fn conn(&self) -> Result<Conn, BusError> {
        let conn = self
            .conn
            .get_or_try_init(|| self.target.connect())
            .await
            .map_err(|e| BusError::Redis(e.to_string()))?;
        Ok(conn.clone())
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.ttl.as_millis().max(1) as u64
    }

    async fn run_sequence(&self, message: Message) -> Result<Sequenced, BusError> {
        let keys = Keys::new(&self.settings.prefix, &message.room);
        let payload = envelope::encode(&self.settings.node_id, &message);
        let mut conn = self.conn().await?;
        let reply: Vec<Vec<u8>> = self
            .sequence
            .key(&keys.meta)
            .key(&keys.log)
            .key(&keys.ids)
            .key(&keys.gone)
            .arg(message.id.to_string())
            .arg(payload)
            .arg(new_epoch())
            .arg(self.settings.window.max(1))
            .arg(self.ttl_ms())
            .arg(&keys.channel)
            .arg(self.target.publish_command())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BusError::Redis(e.to_string()))?;
        if self.settings.wait_replicas > 0 {
            // The position counts once a replica has it: a failover then
            // cannot give it to another message.
            let confirmed = conn
                .wait_replicas(&keys.meta, self.settings.wait_replicas, WAIT_MS)
                .await
                .map_err(|e| BusError::Redis(e.to_string()))?;
            if confirmed < i64::from(self.settings.wait_replicas) {
                metrics::counter!("switchboard_bus_replica_wait_failed_total").increment(1);
                return Err(BusError::Redis(format!(
                    "{confirmed} of {} replicas confirmed the position",
                    self.settings.wait_replicas
                )));
            }
        }
        match reply.as_slice() {
            [seq, epoch, fresh, first @ ..] => {
                let fresh = fresh == b"1";
                if fresh {
                    metrics::counter!("switchboard_bus_published_total").increment(1);
                }
                let ts = match first {
                    [envelope] => Some(envelope::decode(envelope).map_err(BusError::Redis)?.1.ts),
                    _ => None,
                };
                Ok(Sequenced {
                    seq: parse_seq(&String::from_utf8_lossy(seq))?,
                    epoch: String::from_utf8_lossy(epoch).into_owned(),
                    fresh,
                    ts,
                })
            }
            _ => Err(BusError::Redis(
                "unexpected reply to the sequence script".into(),
            )),
        }
    }

    async fn run_position(&self, room: RoomName) -> Result<Position, BusError> {
        let keys = Keys::new(&self.settings.prefix, &room);
        let mut conn = self.conn().await?;
        let reply: Vec<String> = self
            .position
            .key(&keys.meta)
            .key(&keys.log)
            .key(&keys.ids)
            .key(&keys.gone)
            .arg(new_epoch())
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BusError::Redis(e.to_string()))?;
        match reply.as_slice() {
            [epoch, seq] => Ok(Position {
                epoch: epoch.clone(),
                seq: parse_seq(seq)?,
            }),
            _ => Err(BusError::Redis(
                "unexpected reply to the position script".into(),
            )),
        }
    }

    async fn run_window(&self, room: RoomName, after: u64, count: u32) -> Result<Window, BusError> {
        let keys = Keys::new(&self.settings.prefix, &room);
        let mut conn = self.conn().await?;
        let reply: Vec<Vec<u8>> = self
            .window
            .key(&keys.meta)
            .key(&keys.log)
            .key(&keys.gone)
            .arg(after)
            .arg(count.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BusError::Redis(e.to_string()))?;
        let [epoch, last, oldest, entries @ ..] = reply.as_slice() else {
            return Err(BusError::Redis(
                "unexpected reply to the window script".into(),
            ));
        };
        let epoch = String::from_utf8_lossy(epoch).into_owned();
        let mut window = Window {
            position: Position {
                seq: parse_seq(&String::from_utf8_lossy(last))?,
                epoch,
            },
            oldest: match oldest.as_slice() {
                b"" => None,
                id => Some(parse_entry_id(id)?),
            },
            messages: Vec::with_capacity(entries.len() / 3),
        };
        for entry in entries.chunks_exact(3) {
            let (_, mut message) = envelope::decode(&entry[1]).map_err(BusError::Redis)?;
            message.seq = parse_entry_id(&entry[0])?;
            message.epoch.clone_from(&window.position.epoch);
            if entry[2] == b"1" {
                message = message.tombstone();
            }
            window.messages.push(message);
        }
        Ok(window)
    }

    async fn run_erase(
        &self,
        room: RoomName,
        id: uuid::Uuid,
    ) -> Result<Option<Position>, BusError> {
        let keys = Keys::new(&self.settings.prefix, &room);
        let mut conn = self.conn().await?;
        let reply: Vec<String> = self
            .erase
            .key(&keys.meta)
            .key(&keys.ids)
            .key(&keys.gone)
            .arg(id.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BusError::Redis(e.to_string()))?;
        match reply.as_slice() {
            [] => Ok(None),
            [seq, epoch] => Ok(Some(Position {
                seq: parse_seq(seq)?,
                epoch: epoch.clone(),
            })),
            _ => Err(BusError::Redis(
                "unexpected reply to the erase script".into(),
            )),
        }
    }
}

fn parse_seq(s: &str) -> Result<u64, BusError> {
    s.parse()
        .map_err(|_| BusError::Redis(format!("not a seq: {s:?}")))
}

/// `seq-0` -> seq.
fn parse_entry_id(id: &[u8]) -> Result<u64, BusError> {
    let id = String::from_utf8_lossy(id);
    parse_seq(id.split_once('-').map_or(&*id, |(seq, _)| seq))
}

/// A new epoch: short, random, and free of the spaces that separate the
/// channel payload's header.
pub(crate) fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Bounds a call by [`OP_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(OP_TIMEOUT, call)
        .await
        .unwrap_or(Err(BusError::Timeout))
}

impl Sequencer for RedisSequencer {
    fn sequence(&self, message: &Message) -> BusFuture<Sequenced> {
        let this = self.0.clone();
        let message = message.clone();
        Box::pin(async move { bounded(this.run_sequence(message)).await })
    }

    fn position(&self, room: &RoomName) -> BusFuture<Position> {
        let this = self.0.clone();
        let room = room.clone();
        Box::pin(async move { bounded(this.run_position(room)).await })
    }

    fn window(&self, room: &RoomName, after: u64, count: u32) -> BusFuture<Window> {
        let this = self.0.clone();
        let room = room.clone();
        Box::pin(async move { bounded(this.run_window(room, after, count)).await })
    }

    fn erase(&self, room: &RoomName, id: uuid::Uuid) -> BusFuture<Option<Position>> {
        let this = self.0.clone();
        let room = room.clone();
        Box::pin(async move { bounded(this.run_erase(room, id)).await })
    }
}
