//! Archivers scale with the topic's partitions: three `switchboard archive`
//! processes in one consumer group on a 12-partition topic (tansu) under
//! steady load, one killed with SIGKILL and restarted, one added later.
//! Every acked message is stored in PostgreSQL exactly once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::pipeline::{Archiver, await_ready, await_rows, count, kafka, kafka_node, setup};
use common::{Client, unique};
use serde_json::json;
use uuid::Uuid;

const PARTITIONS: i32 = 12;

/// Three rooms for each of the 12 partitions. A room is its records' key,
/// and the producer's default partitioner (librdkafka's
/// `consistent_random`) puts a key on CRC-32(key) mod partitions.
fn rooms_on_every_partition() -> Vec<String> {
    let tag = unique("a");
    let mut per = [0; PARTITIONS as usize];
    let mut rooms = Vec::new();
    for i in 0.. {
        let room = format!("{tag}-{i}");
        let p = (crc32fast::hash(room.as_bytes()) % PARTITIONS as u32) as usize;
        if per[p] < 3 {
            per[p] += 1;
            rooms.push(room);
        }
        if per.iter().all(|n| *n == 3) {
            return rooms;
        }
    }
    unreachable!()
}

/// Sends `n` messages over the rooms, 60 in flight at a time, retrying
/// what is refused with the same id; returns every acked id.
async fn send(c: &mut Client, rooms: &[String], first: usize, n: usize) -> Vec<Uuid> {
    let mut acked = Vec::new();
    for chunk in (first..first + n).collect::<Vec<_>>().chunks(60) {
        let mut pending: Vec<(Uuid, String, usize)> = chunk
            .iter()
            .map(|&i| (Uuid::now_v7(), rooms[i % rooms.len()].clone(), i))
            .collect();
        while !pending.is_empty() {
            for (id, room, i) in &pending {
                c.send(json!({"type": "send", "room": room, "text": format!("m{i}"), "id": id, "ref": i}))
                    .await;
            }
            let mut refused = Vec::new();
            for _ in 0..pending.len() {
                let v = loop {
                    let v = c.recv().await;
                    if v["type"] == "ack" || v["type"] == "error" {
                        break v;
                    }
                };
                let i = v["ref"].as_u64().unwrap() as usize;
                let entry = pending.iter().find(|p| p.2 == i).unwrap().clone();
                if v["type"] == "ack" {
                    acked.push(entry.0);
                } else {
                    assert_eq!(v["code"], "unavailable", "{v}");
                    refused.push(entry);
                }
            }
            pending = refused;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_archivers_on_twelve_partitions_through_a_kill_and_a_late_one_store_each_message_once()
 {
    let mut s = setup().await;
    s.partitions = PARTITIONS;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let rooms = rooms_on_every_partition();
    let mut c = node.client("load").await;
    for room in &rooms {
        c.join(room).await;
    }
    const PHASE: usize = 1_200;
    let a = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let b = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let mut acked = send(&mut c, &rooms, 0, PHASE).await;
    await_rows(&s.schema, 200, Duration::from_secs(60)).await;
    // One of the two dies mid-stream and comes back while the load goes on,
    // once its session (10 s) has ended: tansu 0.6 keeps a member killed
    // with SIGKILL in the group until a request comes after its session,
    // and a rebalance before that may hand the dead member partitions that
    // then nobody reads (docs/reliability.md). Kafka expires it on a timer.
    a.kill9();
    let killed = std::time::Instant::now();
    acked.extend(send(&mut c, &rooms, PHASE, PHASE / 2).await);
    tokio::time::sleep(Duration::from_secs(13).saturating_sub(killed.elapsed())).await;
    let a = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    acked.extend(send(&mut c, &rooms, PHASE * 3 / 2, PHASE / 2).await);
    // A third joins the group later.
    let third = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    acked.extend(send(&mut c, &rooms, PHASE * 2, PHASE).await);
    let n = acked.len() as i64;
    assert_eq!(n, 3 * PHASE as i64);
    assert_eq!(
        await_rows(&s.schema, n, Duration::from_secs(120)).await,
        (n, n),
        "every acked message once"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&s.schema).await, (n, n), "no duplicates appear later");
    // Every acked id is there, and the messages used all 12 partitions.
    let pool = sqlx::PgPool::connect(&common::pipeline::pg_base())
        .await
        .unwrap();
    let stored: Vec<(Uuid, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, kafka_partition FROM {}.messages",
        s.schema
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let ids: HashSet<Uuid> = stored.iter().map(|r| r.0).collect();
    assert!(acked.iter().all(|id| ids.contains(id)));
    let partitions: HashSet<i32> = stored.iter().map(|r| r.1).collect();
    assert_eq!(partitions.len(), PARTITIONS as usize, "{partitions:?}");
    for archiver in [a, b, third] {
        assert!(archiver.stop().success(), "archivers exit 0 on SIGTERM");
    }
    node.stop().await;
}
