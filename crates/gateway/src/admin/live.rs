//! What the console shows, once a second: every node's status (its own,
//! and in a cluster every node's from Redis, where each node writes its
//! own every second), the busiest rooms, the journal, the consumer
//! processes' heartbeats (from the store) and readiness. One task per node
//! builds the snapshot, only while someone watches; every viewer's stream
//! sends the same JSON text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Gateway;

/// How often the snapshot (and a cluster node's status) is made.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// A node status older than this is a node gone.
const NODE_GONE_MS: i64 = 5_000;
/// A consumer process silent for this long is gone (three beats).
const PROCESS_GONE_MS: u64 = 6_000;
/// How long one Redis call of the console may take.
const BOUND: Duration = Duration::from_secs(2);
/// Rooms a node reports, and the console shows, at most.
const TOP_ROOMS: usize = 10;

/// Slow consumers cut in this process (both protocols), for the console.
pub(crate) static SLOW_CUTS: AtomicU64 = AtomicU64::new(0);

/// A node's counters the console turns into rates.
#[derive(Default)]
pub(crate) struct Tally {
    accepted: AtomicU64,
    journal_waits: AtomicU64,
    journal_micros: AtomicU64,
    journal_max_micros: AtomicU64,
}

impl Tally {
    /// A message accepted here (not a resend).
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// One message made durable (or refused) by the journal in `took`.
    pub fn journal_wait(&self, took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.journal_waits.fetch_add(1, Ordering::Relaxed);
        self.journal_micros.fetch_add(micros, Ordering::Relaxed);
        self.journal_max_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

/// The previous reading of the counters, for rates.
pub(crate) struct Before {
    at: Instant,
    accepted: u64,
    delivered: u64,
}

impl Before {
    pub fn now(gateway: &Gateway) -> Self {
        Self {
            at: Instant::now(),
            accepted: gateway.admin.tally.accepted.load(Ordering::Relaxed),
            delivered: gateway.registry.delivered(),
        }
    }
}

/// This process's resident memory, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn per_second(n: u64, seconds: f64) -> f64 {
    (n as f64 / seconds * 10.0).round() / 10.0
}

/// This node's status now, and the counters for the next one.
pub(crate) fn node_status(gateway: &Gateway, before: &Before) -> (Value, Before) {
    let now = Before::now(gateway);
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(0.001);
    let mut rooms = gateway.registry.activity();
    rooms.sort_by(|a, b| {
        b.messages
            .cmp(&a.messages)
            .then(b.connections.cmp(&a.connections))
            .then_with(|| a.room.as_str().cmp(b.room.as_str()))
    });
    rooms.truncate(TOP_ROOMS);
    let tally = &gateway.admin.tally;
    let waits = tally.journal_waits.swap(0, Ordering::Relaxed);
    let micros = tally.journal_micros.swap(0, Ordering::Relaxed);
    let max = tally.journal_max_micros.swap(0, Ordering::Relaxed);
    let status = json!({
        "id": gateway.config.node_id,
        "address": gateway.admin.address.get().map(ToString::to_string),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": gateway.admin.started_at,
        "at": crate::now_ms(),
        "connections": gateway.admission.open(),
        "rooms": gateway.registry.room_count(),
        "in_per_s": per_second(now.accepted - before.accepted, seconds),
        "out_per_s": per_second(now.delivered - before.delivered, seconds),
        "slow_cuts": SLOW_CUTS.load(Ordering::Relaxed),
        "rss_bytes": rss_bytes(),
        "journal": {
            "kind": gateway.journal.kind(),
            "ready": gateway.journal.is_ready(),
            "queued": gateway.journal.queued(),
            "writes_per_s": per_second(waits, seconds),
            "avg_ms": if waits == 0 { 0.0 } else { (micros as f64 / waits as f64 / 100.0).round() / 10.0 },
            "max_ms": (max as f64 / 100.0).round() / 10.0,
        },
        "bus": {
            "kind": gateway.bus.kind(),
            "down": gateway.bus.unavailable(),
        },
        "store": gateway.store.kind(),
        "top_rooms": rooms.iter().map(|r| json!({
            "room": r.room.as_str(),
            "names": r.names,
            "connections": r.connections,
            "per_s": per_second(r.messages, seconds),
        })).collect::<Vec<_>>(),
    });
    (status, now)
}

/// The console's snapshot: every node, the busiest rooms over all of
/// them, the consumer processes and readiness.
pub(crate) async fn snapshot(gateway: &Gateway, own: &Value) -> Value {
    let mut down: Vec<String> = Vec::new();
    let mut nodes = match gateway.bus.presence() {
        Some(cluster) => match tokio::time::timeout(BOUND, cluster.reports(NODE_GONE_MS)).await {
            Ok(Ok(reports)) => reports
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(r).ok())
                .collect(),
            _ => {
                down.push(gateway.bus.kind().to_owned());
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    // Its own status is always the freshest.
    nodes.retain(|n| n["id"] != own["id"]);
    nodes.push(own.clone());
    nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let processes = match gateway.bounded(gateway.store.beats(PROCESS_GONE_MS)).await {
        Ok(beats) => beats
            .into_iter()
            .map(|b| {
                json!({
                    "kind": b.kind,
                    "id": b.process,
                    "at": b.at,
                    "status": serde_json::from_str::<Value>(&b.status).unwrap_or(Value::Null),
                })
            })
            .collect(),
        _ => {
            down.push(gateway.store.kind().to_owned());
            Vec::new()
        }
    };
    down.extend(gateway.bus.unavailable());
    if !gateway.journal.is_ready() {
        down.push(gateway.journal.kind().to_owned());
    }
    down.sort();
    down.dedup();
    json!({
        "at": crate::now_ms(),
        "node": gateway.config.node_id,
        "nodes": nodes,
        "rooms": busiest(&nodes),
        "processes": processes,
        "ready": {
            "bus": gateway.bus.kind(),
            "journal": gateway.journal.kind(),
            "store": gateway.store.kind(),
            "down": down,
        },
    })
}

/// The busiest rooms over every node's top rooms: messages per second
/// (the highest a node saw: each node delivers every message of a room
/// it hosts), names and connections summed.
fn busiest(nodes: &[Value]) -> Vec<Value> {
    let mut rooms: HashMap<&str, (f64, u64, u64)> = HashMap::new();
    for room in nodes
        .iter()
        .filter_map(|n| n["top_rooms"].as_array())
        .flatten()
    {
        let Some(name) = room["room"].as_str() else {
            continue;
        };
        let entry = rooms.entry(name).or_default();
        entry.0 = entry.0.max(room["per_s"].as_f64().unwrap_or(0.0));
        entry.1 += room["names"].as_u64().unwrap_or(0);
        entry.2 += room["connections"].as_u64().unwrap_or(0);
    }
    let mut list: Vec<_> = rooms.into_iter().collect();
    list.sort_by(|a, b| {
        b.1.0
            .total_cmp(&a.1.0)
            .then(b.1.2.cmp(&a.1.2))
            .then(a.0.cmp(b.0))
    });
    list.truncate(TOP_ROOMS);
    list.into_iter()
        .map(|(room, (per_s, names, connections))| {
            json!({"room": room, "per_s": per_s, "names": names, "connections": connections})
        })
        .collect()
}

/// Runs until shutdown: once a second, this node's status (written to
/// Redis in a cluster, for the consoles of every node) and, while anyone
/// watches, the snapshot. A single node without a console has nothing to
/// do.
pub(crate) async fn run(gateway: std::sync::Weak<Gateway>) {
    if gateway
        .upgrade()
        .is_none_or(|g| g.config.admin_token.is_none() && g.bus.presence().is_none())
    {
        return;
    }
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before = match gateway.upgrade() {
        Some(g) => Before::now(&g),
        None => return,
    };
    loop {
        every.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        if gateway.shutdown.is_cancelled() {
            return;
        }
        let (own, now) = node_status(&gateway, &before);
        before = now;
        if let Some(cluster) = gateway.bus.presence() {
            // A failure shows as this node missing from the others' view.
            let _ = tokio::time::timeout(BOUND, cluster.report(own.to_string())).await;
        }
        if gateway.admin.live.receiver_count() > 0 {
            let snapshot = snapshot(&gateway, &own).await;
            gateway
                .admin
                .live
                .send_replace(Arc::from(snapshot.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_rooms_merge_every_nodes_view() {
        let nodes = [
            json!({"top_rooms": [
                {"room": "a", "per_s": 5.0, "names": 2, "connections": 3},
                {"room": "b", "per_s": 1.0, "names": 1, "connections": 1},
            ]}),
            json!({"top_rooms": [{"room": "a", "per_s": 4.0, "names": 1, "connections": 1}]}),
            json!({"id": "no rooms"}),
        ];
        let rooms = busiest(&nodes);
        assert_eq!(
            rooms,
            [
                json!({"room": "a", "per_s": 5.0, "names": 3, "connections": 4}),
                json!({"room": "b", "per_s": 1.0, "names": 1, "connections": 1}),
            ]
        );
    }
}
