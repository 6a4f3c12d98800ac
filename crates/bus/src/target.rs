//! Where the bus's Redis is: one server (`redis://host:port`) or a Redis
//! Cluster (`redis+cluster://host:port,host:port`, the seeds).
//!
//! Everything the bus sends goes through a [`Conn`]: a reconnecting
//! connection to the one server, or a cluster connection that routes each
//! command by its key's slot (every key of a room shares the room's hash
//! tag, so each script runs on one shard). In a cluster, a watcher
//! ([`Cluster::watch`]) reads the slot map every second from any node that
//! answers and pings every master: a failover or a slot migration changes
//! the map, which drops the cached command connection (the next command
//! routes by the new map) and tells the subscriber to move its
//! subscriptions; a master that does not answer is named by `/readyz`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::redis::{OP_TIMEOUT, RedisSetupError};

/// How often a cluster's slot map is read and its masters pinged.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The URL scheme that names a Redis Cluster by its seeds.
const CLUSTER_SCHEME: &str = "redis+cluster://";
const CLUSTER_TLS_SCHEME: &str = "rediss+cluster://";

/// One Redis server or a cluster.
#[derive(Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    Cluster(Arc<Cluster>),
}

impl Target {
    /// `redis://`, `rediss://`, `redis+cluster://h:p,h:p` or
    /// `rediss+cluster://h:p,h:p`.
    pub fn parse(url: &str) -> Result<Self, RedisSetupError> {
        let seeds = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            seeds("redis://", rest)?
        } else if let Some(rest) = url.strip_prefix(CLUSTER_TLS_SCHEME) {
            seeds("rediss://", rest)?
        } else {
            return Ok(Self::Single(
                redis::Client::open(info(url)?).map_err(|e| RedisSetupError::Url(e.to_string()))?,
            ));
        };
        Ok(Self::Cluster(Arc::new(Cluster::new(seeds)?)))
    }

    /// A connection for commands; clones share it.
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        match self {
            Self::Single(client) => Ok(Conn::Single(connect_manager(client).await?)),
            Self::Cluster(cluster) => Ok(Conn::Cluster(cluster.clone())),
        }
    }

    /// The publish command: sharded Pub/Sub in a cluster, so a room's
    /// messages go through its own shard only.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Self::Single(_) => None,
            Self::Cluster(cluster) => Some(cluster),
        }
    }
}

/// The seeds of a cluster URL's `h:p,h:p` (with optional `user:pass@`
/// before the first, applying to all, and an optional path or query after
/// the last).
fn seeds(scheme: &str, rest: &str) -> Result<Vec<redis::ConnectionInfo>, RedisSetupError> {
    let (hosts, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match hosts.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), hosts),
    };
    let seeds = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| info(&format!("{scheme}{userinfo}{host}{tail}")))
        .collect::<Result<Vec<_>, _>>()?;
    if seeds.is_empty() {
        return Err(RedisSetupError::Url(
            "a cluster URL names at least one seed: redis+cluster://host:port,host:port".into(),
        ));
    }
    Ok(seeds)
}

/// A URL's connection info, sending at once (`TCP_NODELAY`): every send
/// waits for its ordering script's reply, and Nagle's algorithm would hold
/// a small request behind an unacknowledged one (up to the peer's delayed
/// ACK, tens of milliseconds).
fn info(url: &str) -> Result<redis::ConnectionInfo, RedisSetupError> {
    Ok(url
        .into_connection_info()
        .map_err(|e| RedisSetupError::Url(e.to_string()))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

pub(crate) async fn connect_manager(
    client: &redis::Client,
) -> redis::RedisResult<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OP_TIMEOUT))
        .set_response_timeout(Some(OP_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    client.get_connection_manager_with_config(config).await
}

/// A connection for commands, to the one server or the cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

impl Conn {
    /// `WAIT replicas timeout` on the master of `key`'s slot: how many
    /// replicas have every write this connection made there.
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> redis::RedisResult<i64> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            Self::Cluster(cluster) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let reply = cluster
                    .commands()
                    .await?
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::FromRedisValue::from_redis_value(reply).map_err(Into::into)
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster.commands().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster.commands().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// One master of a cluster and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// `host:port`.
    pub master: String,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

impl Shard {
    /// `host:port (slots a-b, c-d)`, for logs and `/readyz`.
    pub fn describe(&self) -> String {
        let ranges: Vec<String> = self
            .slots
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("redis shard {} (slots {})", self.master, ranges.join(", "))
    }
}

/// What the watcher last saw of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    /// The masters, by address; empty until a node has answered.
    pub shards: Vec<Shard>,
    /// The masters that did not answer a ping, described.
    pub unreachable: Vec<String>,
    /// Bumped whenever the slot map changes after the first reading: a
    /// failover or a slot migration.
    pub generation: u64,
}

/// A Redis Cluster: its seeds, the shared command connection and what the
/// watcher sees.
pub(crate) struct Cluster {
    seeds: Vec<redis::ConnectionInfo>,
    client: ClusterClient,
    /// The shared command connection, made on first use and dropped when
    /// the slot map changes.
    commands: tokio::sync::Mutex<Option<ClusterConnection>>,
    topology: watch::Sender<Topology>,
}

impl Cluster {
    fn new(seeds: Vec<redis::ConnectionInfo>) -> Result<Self, RedisSetupError> {
        let client = Self::builder(&seeds)
            .build()
            .map_err(|e| RedisSetupError::Url(e.to_string()))?;
        Ok(Self {
            seeds,
            client,
            commands: tokio::sync::Mutex::new(None),
            topology: watch::Sender::new(Topology::default()),
        })
    }

    /// A client builder for the seeds, with the bus's timeouts.
    pub fn builder(seeds: &[redis::ConnectionInfo]) -> ClusterClientBuilder {
        ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(OP_TIMEOUT)
            .response_timeout(OP_TIMEOUT)
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
    }

    pub fn seeds(&self) -> &[redis::ConnectionInfo] {
        &self.seeds
    }

    pub fn topology(&self) -> watch::Receiver<Topology> {
        self.topology.subscribe()
    }

    /// The masters by address, as last seen.
    pub fn masters(&self) -> Vec<String> {
        self.topology
            .borrow()
            .shards
            .iter()
            .map(|s| s.master.clone())
            .collect()
    }

    async fn commands(&self) -> redis::RedisResult<ClusterConnection> {
        let mut cached = self.commands.lock().await;
        if let Some(conn) = cached.as_ref() {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(OP_TIMEOUT, self.client.get_async_connection())
            .await
            .map_err(|_| std::io::Error::other("connecting to the redis cluster timed out"))??;
        *cached = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `cmd` on the master at `addr` (`host:port`).
    pub async fn on_master(&self, addr: &str, cmd: Cmd) -> redis::RedisResult<Value> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let (host, port) = split_addr(addr)
            .ok_or_else(|| std::io::Error::other(format!("not an address: {addr}")))?;
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        self.commands().await?.route_command(cmd, routing).await
    }

    /// Reads the slot map and pings the masters every second until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut probes: HashMap<String, MultiplexedConnection> = HashMap::new();
        let mut every = tokio::time::interval(WATCH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let shards = self.read_slots(&mut probes).await;
            let mut unreachable = Vec::new();
            if let Some(shards) = &shards {
                for shard in shards {
                    if probe(&mut probes, &shard.master, redis::cmd("PING"))
                        .await
                        .is_err()
                    {
                        unreachable.push(shard.describe());
                    }
                }
            }
            let mut changed = false;
            self.topology.send_if_modified(|seen| {
                let mut modified = seen.unreachable != unreachable;
                if modified {
                    if unreachable.is_empty() {
                        tracing::info!("every redis cluster master answers again");
                    } else {
                        tracing::warn!(unreachable = ?unreachable, "redis cluster masters do not answer");
                    }
                    seen.unreachable = unreachable;
                }
                if let Some(shards) = shards
                    && shards != seen.shards
                {
                    if !seen.shards.is_empty() {
                        seen.generation += 1;
                        changed = true;
                        tracing::info!(
                            masters = ?shards.iter().map(|s| &s.master).collect::<Vec<_>>(),
                            "redis cluster slot map changed: following it"
                        );
                    }
                    seen.shards = shards;
                    modified = true;
                }
                modified
            });
            if changed {
                metrics::counter!("switchboard_bus_topology_changes_total").increment(1);
                *self.commands.lock().await = None;
            }
        }
    }

    /// The slot map from the first node that answers (a known master, then
    /// the seeds), as shards sorted by address.
    async fn read_slots(
        &self,
        probes: &mut HashMap<String, MultiplexedConnection>,
    ) -> Option<Vec<Shard>> {
        let mut candidates = self.masters();
        for seed in &self.seeds {
            let addr = seed.addr().to_string();
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        for addr in candidates {
            let Ok(reply) = probe(probes, &addr, redis::cmd("CLUSTER").arg("SLOTS").clone()).await
            else {
                continue;
            };
            if let Some(shards) = parse_slots(&reply, &addr) {
                return Some(shards);
            }
        }
        None
    }
}

/// Runs `cmd` on the node at `addr` through a probe connection of its own
/// (made on first use, forgotten on failure).
async fn probe(
    probes: &mut HashMap<String, MultiplexedConnection>,
    addr: &str,
    cmd: Cmd,
) -> redis::RedisResult<Value> {
    let run = async {
        let conn = match probes.get(addr) {
            Some(conn) => conn.clone(),
            None => {
                let client = redis::Client::open(
                    info(&format!("redis://{addr}"))
                        .map_err(|e| std::io::Error::other(e.to_string()))?,
                )?;
                let conn = client.get_multiplexed_async_connection().await?;
                probes.insert(addr.to_owned(), conn.clone());
                conn
            }
        };
        cmd.query_async::<Value>(&mut conn.clone()).await
    };
    let outcome = tokio::time::timeout(OP_TIMEOUT / 2, run)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out").into()));
    if outcome.is_err() {
        probes.remove(addr);
    }
    outcome
}

/// `CLUSTER SLOTS` -> shards: `[[start, end, [host, port, id, ..], replicas..], ..]`.
/// A master reported without a host is at `answered_by`'s host.
fn parse_slots(reply: &Value, answered_by: &str) -> Option<Vec<Shard>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let default_host = split_addr(answered_by).map_or("127.0.0.1", |(h, _)| h);
    let mut by_master: HashMap<String, Vec<(u16, u16)>> = HashMap::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = fields.as_slice()
        else {
            return None;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) if !h.is_empty() => String::from_utf8_lossy(h).into_owned(),
            _ => default_host.to_owned(),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return None;
        };
        by_master
            .entry(format!("{host}:{port}"))
            .or_default()
            .push((u16::try_from(*start).ok()?, u16::try_from(*end).ok()?));
    }
    let mut shards: Vec<Shard> = by_master
        .into_iter()
        .map(|(master, mut slots)| {
            slots.sort_unstable();
            Shard { master, slots }
        })
        .collect();
    shards.sort_by(|a, b| a.master.cmp(&b.master));
    Some(shards)
}

/// `host:port` -> (host, port).
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// Groups channels (or keys) by their cluster slot: one sharded
/// subscription command may only name channels of one slot.
pub(crate) fn by_slot(channels: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: HashMap<redis::cluster_routing::Slot, Vec<String>> = HashMap::new();
    for channel in channels {
        groups
            .entry(redis::cluster_routing::Slot::for_key(channel.as_bytes()))
            .or_default()
            .push(channel);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seeds() {
        let Target::Cluster(cluster) =
            Target::parse("redis+cluster://u:p@127.0.0.1:7100,10.0.0.2:7101/?protocol=2").unwrap()
        else {
            panic!("a cluster URL is a cluster");
        };
        let seeds: Vec<String> = cluster
            .seeds()
            .iter()
            .map(|s| s.addr().to_string())
            .collect();
        assert_eq!(seeds, ["127.0.0.1:7100", "10.0.0.2:7101"]);
        assert_eq!(cluster.seeds()[1].redis_settings().password(), Some("p"));
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379").unwrap(),
            Target::Single(_)
        ));
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://host:notaport").is_err());
        assert!(Target::parse("http://x").is_err());
    }

    #[test]
    fn slot_maps_group_ranges_by_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.1".to_vec()),
                    Value::Int(7100),
                ]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                Value::Array(vec![Value::BulkString(Vec::new()), Value::Int(7101)]),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.1".to_vec()),
                    Value::Int(7100),
                ]),
            ]),
        ]);
        let shards = parse_slots(&reply, "127.0.0.1:7101").unwrap();
        assert_eq!(
            shards,
            [
                Shard {
                    master: "10.0.0.1:7100".into(),
                    slots: vec![(0, 5460), (10923, 16383)]
                },
                Shard {
                    master: "127.0.0.1:7101".into(),
                    slots: vec![(5461, 10922)]
                },
            ]
        );
        assert_eq!(
            shards[0].describe(),
            "redis shard 10.0.0.1:7100 (slots 0-5460, 10923-16383)"
        );
        assert!(parse_slots(&Value::Int(1), "h:1").is_none());
    }

    #[test]
    fn channels_of_one_room_share_a_slot() {
        let groups = by_slot(vec![
            "{p:a}:ch".into(),
            "{p:b}:ch".into(),
            "{p:a}:other".into(),
        ]);
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().any(|g| g.len() == 2));
    }
}
