//! The durable pipeline on real services: nodes produce to Kafka (tansu),
//! `switchboard archive` processes write PostgreSQL. Every test uses its own
//! topic, consumer group and schema.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::pipeline::{
    Archiver, PrivateTansu, Proxy, await_ready, await_rows, await_status, count, kafka, kafka_node,
    kafka_node_with, pg_base, rows, setup, with_schema,
};
use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_bus::RedisOptions;
use uuid::Uuid;

/// Sends `n` messages with client-chosen ids and returns the ids acked, in
/// send order, and how many were answered `unavailable`.
async fn send_all(c: &mut Client, room: &str, prefix: &str, n: usize) -> (Vec<Uuid>, usize) {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        c.send(json!({"type": "send", "room": room, "text": format!("{prefix}-{i}"), "id": id, "ref": i})).await;
    }
    let mut acked = HashSet::new();
    let mut unavailable = 0;
    while acked.len() + unavailable < n {
        let v = recv_reply(c).await;
        match v["type"].as_str() {
            Some("ack") => {
                acked.insert(Uuid::parse_str(v["id"].as_str().unwrap()).unwrap());
            }
            Some("error") => {
                assert_eq!(v["code"], "unavailable", "{v}");
                unavailable += 1;
            }
            _ => unreachable!(),
        }
    }
    (
        ids.into_iter().filter(|id| acked.contains(id)).collect(),
        unavailable,
    )
}

/// The next ack or error, skipping delivered messages.
async fn recv_reply(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] == "ack" || v["type"] == "error" {
            return v;
        }
    }
}

#[tokio::test]
async fn two_nodes_and_an_archiver_store_every_message_exactly_once_in_order() {
    let s = setup().await;
    let prefix = unique("p");
    let n1 = kafka_node(&kafka(), &s, "n1", Some(&prefix), Duration::from_secs(10)).await;
    let n2 = kafka_node(&kafka(), &s, "n2", Some(&prefix), Duration::from_secs(10)).await;
    await_ready(&n1).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let (room_a, room_b) = (unique("a"), unique("b"));
    let mut clients = [
        n1.client("c1").await,
        n2.client("c2").await,
        n1.client("c3").await,
        n2.client("c4").await,
    ];
    for (i, c) in clients.iter_mut().enumerate() {
        c.join(if i % 2 == 0 { &room_a } else { &room_b }).await;
    }
    const PER: usize = 50;
    let mut acked = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let room = if i % 2 == 0 { &room_a } else { &room_b };
        let (ids, unavailable) = send_all(c, room, &format!("c{}", i + 1), PER).await;
        assert_eq!(unavailable, 0);
        acked.extend(ids);
    }
    let total = (clients.len() * PER) as i64;
    assert_eq!(
        await_rows(&s.schema, total, Duration::from_secs(60)).await,
        (total, total)
    );
    let stored = rows(&s.schema).await;
    let stored_ids: HashSet<Uuid> = stored.iter().map(|r| r.0).collect();
    assert!(
        acked.iter().all(|id| stored_ids.contains(id)),
        "an acked message is missing"
    );
    // Within a room (one partition, key = room) each sender's rows are in send order.
    let mut seen: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (_, room, sender, body, _, _) in &stored {
        let i: usize = body.rsplit('-').next().unwrap().parse().unwrap();
        seen.entry((room.clone(), sender.clone()))
            .or_default()
            .push(i);
    }
    assert_eq!(seen.len(), 4);
    for order in seen.values() {
        assert_eq!(order, &(0..PER).collect::<Vec<_>>());
    }
    assert!(archiver.stop().success(), "the archiver exits 0 on SIGTERM");
    n1.stop().await;
    n2.stop().await;
}

/// Sends `n` messages in the background from a fresh client, returning
/// the task with the acked ids.
fn background_sender(node: &Node, room: String, n: usize) -> tokio::task::JoinHandle<Vec<Uuid>> {
    let addr = node.addr;
    tokio::spawn(async move {
        let mut c = Client::connect(addr, "bulk").await;
        c.join(&room).await;
        let mut acked = Vec::new();
        for chunk in 0..n / 50 {
            let (ids, _) = send_all(&mut c, &room, &format!("bulk{chunk}"), 50).await;
            acked.extend(ids);
        }
        acked
    })
}

#[tokio::test]
async fn an_archiver_killed_mid_stream_and_a_second_in_the_group_lose_and_duplicate_nothing() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    const N: usize = 1_000;
    let first = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let sender = background_sender(&node, unique("kill"), N);
    await_rows(&s.schema, 100, Duration::from_secs(60)).await;
    first.kill9();
    // Two archivers share the group from here on.
    let second = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let third = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let acked = sender.await.unwrap();
    assert_eq!(acked.len(), N);
    assert_eq!(
        await_rows(&s.schema, N as i64, Duration::from_secs(90)).await,
        (N as i64, N as i64)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&s.schema).await,
        (N as i64, N as i64),
        "no duplicates appear later"
    );
    drop((second, third));
    node.stop().await;
}

#[tokio::test]
async fn an_archiver_restarted_one_second_after_a_kill_resumes_within_the_session_timeout() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let room = unique("restart");
    let mut c = Client::connect(node.addr, "c").await;
    c.join(&room).await;
    let first = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let (before, _) = send_all(&mut c, &room, "before", 20).await;
    await_rows(&s.schema, before.len() as i64, Duration::from_secs(60)).await;
    // What a supervisor does: the crashed archiver is back a second later,
    // while the broker still lists the dead member in the group.
    first.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let started = std::time::Instant::now();
    let (after, _) = send_all(&mut c, &room, "after", 20).await;
    let total = (before.len() + after.len()) as i64;
    assert_eq!(
        await_rows(&s.schema, total, Duration::from_secs(60)).await,
        (total, total)
    );
    let resumed = started.elapsed();
    println!("an archiver restarted 1 s after kill -9 archived again after {resumed:?}");
    // The session timeout is 10 s; a few seconds more to rejoin and fetch.
    assert!(
        resumed < Duration::from_secs(18),
        "resumed after {resumed:?}"
    );
    drop(restarted);
    node.stop().await;
}

#[tokio::test]
async fn the_archiver_rides_out_a_database_outage() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let base = pg_base().replace("127.0.0.1:5432", &proxy.addr.to_string());
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &with_schema(&base, &s.schema));
    let room = unique("pgdown");
    let mut c = node.client("c").await;
    c.join(&room).await;
    let (mut acked, _) = send_all(&mut c, &room, "before", 100).await;
    await_rows(&s.schema, 100, Duration::from_secs(60)).await;

    proxy.cut().await;
    let cut_at = Instant::now();
    let (during, unavailable) = send_all(&mut c, &room, "during", 500).await;
    assert_eq!(
        (during.len(), unavailable),
        (500, 0),
        "the journal (Kafka) keeps acking while the database is away"
    );
    acked.extend(during);
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed())).await;
    assert_eq!(
        count(&s.schema).await.0,
        100,
        "nothing is written while the database is away"
    );
    proxy.restore();

    let n = acked.len() as i64;
    assert_eq!(
        await_rows(&s.schema, n, Duration::from_secs(90)).await,
        (n, n)
    );
    let stored: HashSet<Uuid> = rows(&s.schema).await.iter().map(|r| r.0).collect();
    assert!(acked.iter().all(|id| stored.contains(id)));
    drop(archiver);
    node.stop().await;
}

#[tokio::test]
async fn a_poison_record_goes_to_dead_letters_and_the_stream_goes_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .create()
        .unwrap();
    let room = unique("poison");
    producer
        .send(
            FutureRecord::to(&s.topic)
                .key(room.as_str())
                .payload(b"{not a message"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut c = node.client("after").await;
    c.join(&room).await;
    let (acked, _) = send_all(&mut c, &room, "after", 5).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    await_rows(&s.schema, 5, Duration::from_secs(60)).await;
    let stored: HashSet<Uuid> = rows(&s.schema).await.iter().map(|r| r.0).collect();
    assert_eq!(stored, acked.into_iter().collect());
    let pool = sqlx::PgPool::connect(&s.db).await.unwrap();
    let dead: Vec<(Vec<u8>, Vec<u8>, String)> =
        sqlx::query_as("SELECT key, payload, error FROM dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, room.as_bytes());
    assert_eq!(dead[0].1, b"{not a message");
    assert!(!dead[0].2.is_empty());
    drop(archiver);
    node.stop().await;
}

#[tokio::test]
async fn an_archiver_started_before_the_topic_exists_archives_what_comes() {
    let s = setup().await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let room = unique("early");
    let mut c = node.client("c").await;
    c.join(&room).await;
    let (acked, _) = send_all(&mut c, &room, "early", 3).await;
    assert_eq!(
        await_rows(&s.schema, 3, Duration::from_secs(30)).await,
        (3, 3)
    );
    let stored: HashSet<Uuid> = rows(&s.schema).await.iter().map(|r| r.0).collect();
    assert_eq!(stored, acked.into_iter().collect());
    drop(archiver);
    node.stop().await;
}

#[tokio::test]
async fn a_gap_older_than_the_redis_log_is_recovered_from_postgres() {
    let s = setup().await;
    let prefix = unique("arch");
    // Redis keeps the last 5 messages of a room; the rest is PostgreSQL's.
    let redis = |id: &str| RedisOptions {
        window: 5,
        ..RedisOptions::new(common::redis::shared_url(), prefix.clone(), id)
    };
    let wait = Duration::from_secs(10);
    let a = kafka_node_with(&kafka(), &s, "a", Some(redis("a")), wait).await;
    let b = kafka_node_with(&kafka(), &s, "b", Some(redis("b")), wait).await;
    await_ready(&a).await;
    await_ready(&b).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let room = unique("old");
    let mut talker = b.client("talker").await;
    talker.join(&room).await;
    let mut away = a.client("away").await;
    let joined = away.join(&room).await;
    let since = json!({"seq": joined["seq"], "epoch": joined["epoch"]});
    drop(away);
    let (acked, _) = send_all(&mut talker, &room, "m", 12).await;
    await_rows(&s.schema, 12, Duration::from_secs(60)).await;
    let mut back = a.client("away").await;
    back.send(json!({"type": "join", "room": room, "since": since}))
        .await;
    let v = back.recv_type("joined").await;
    assert_eq!(v["recovered"], true, "{v}");
    let ids: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, acked.iter().map(Uuid::to_string).collect::<Vec<_>>());
    let seqs: Vec<u64> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    drop(archiver);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn history_comes_from_postgres() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let room = unique("hist");
    let mut a = node.client("a").await;
    a.join(&room).await;
    let (acked, _) = send_all(&mut a, &room, "h", 3).await;
    await_rows(&s.schema, 3, Duration::from_secs(60)).await;
    let http: Vec<Value> = reqwest::get(node.http(&format!("/api/rooms/{room}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = http
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, acked.iter().map(Uuid::to_string).collect::<Vec<_>>());
    // A node whose own memory of the room is empty: history from the table only.
    let fresh = kafka_node(&kafka(), &s, "n2", None, Duration::from_secs(10)).await;
    let mut b = fresh.client("b").await;
    let joined = b.join(&room).await;
    let texts: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["h-0", "h-1", "h-2"]);
    drop(archiver);
    node.stop().await;
    fresh.stop().await;
}

#[tokio::test]
async fn a_broker_outage_answers_unavailable_and_every_acked_message_is_archived() {
    let mut broker = PrivateTansu::start();
    let s = setup().await;
    let node = kafka_node(
        &broker.brokers(),
        &s,
        "n1",
        None,
        Duration::from_millis(1500),
    )
    .await;
    await_ready(&node).await;
    let archiver = Archiver::start(&broker.brokers(), &s.topic, &s.group, &s.db);
    let room = unique("kdown");
    let mut c = node.client("c").await;
    c.join(&room).await;
    let (mut acked, unavailable) = send_all(&mut c, &room, "before", 20).await;
    assert_eq!((acked.len(), unavailable), (20, 0));

    broker.kill();
    let (during, unavailable) = send_all(&mut c, &room, "during", 5).await;
    assert!(
        unavailable > 0,
        "sends during the outage are answered unavailable"
    );
    acked.extend(during);
    await_status(&node, 503).await;

    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, _) = send_all(&mut c, &room, "after", 5).await;
        let done = !ok.is_empty();
        acked.extend(ok);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sends were never acked again after the broker restarted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    await_status(&node, 200).await;
    // Sends answered `unavailable` may still reach Kafka (librdkafka retries
    // them after the restart), so wait for the acked ids themselves.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored: HashSet<Uuid> = rows(&s.schema).await.iter().map(|r| r.0).collect();
        let missing = acked.iter().filter(|id| !stored.contains(id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acked messages are not in the table"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (n, distinct) = count(&s.schema).await;
    assert_eq!(n, distinct, "no duplicate ids");
    drop(archiver);
    node.stop().await;
}
