//! Positions in a cluster: Redis is the ordering point. A client that comes
//! back on any node gets exactly what it missed, from the room's log in
//! Redis and the store for what is older; a node that misses messages on
//! the bus fills the gap from the log; a Redis that lost its keys starts a
//! new epoch and says so.

mod common;

use std::time::{Duration, Instant};

use common::redis::{PrivateRedis, await_numsub, free_port, shared_url};
use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

fn config(node: &str) -> GatewayConfig {
    GatewayConfig {
        node_id: node.into(),
        ..GatewayConfig::default()
    }
}

async fn pair(url: &str, window: usize) -> (String, Node, Node) {
    let prefix = unique("pos");
    let node = |name: &str| GatewayConfig {
        recovery_window: window,
        ..config(name)
    };
    let a = Node::clustered(url, &prefix, node("node-a")).await;
    let b = Node::clustered(url, &prefix, node("node-b")).await;
    (prefix, a, b)
}

fn channel(prefix: &str, room: &str) -> String {
    format!("{{{prefix}:{room}}}:ch")
}

fn since(joined: &Value) -> Value {
    assert!(joined["epoch"].is_string(), "{joined}");
    json!({"seq": joined["seq"], "epoch": joined["epoch"]})
}

async fn join_since(c: &mut Client, room: &str, since: &Value) -> Value {
    c.send(json!({"type": "join", "room": room, "since": since, "ref": "r"}))
        .await;
    let v = c.recv_type("joined").await;
    assert_eq!(v["ref"], "r");
    v
}

fn field<T>(joined: &Value, pick: impl Fn(&Value) -> T) -> Vec<T> {
    joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(pick)
        .collect()
}

fn texts(joined: &Value) -> Vec<String> {
    field(joined, |m| m["text"].as_str().unwrap().to_owned())
}

fn seqs(joined: &Value) -> Vec<u64> {
    field(joined, |m| m["seq"].as_u64().unwrap())
}

/// A counter's value on `node`'s `/metrics` (0 when not yet counted).
async fn metric(node: &Node, name: &str) -> u64 {
    let text = reqwest::get(node.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_recovers_on_either_node_from_the_redis_log() {
    let url = shared_url();
    let (_, a, b) = pair(&url, 1_000).await;
    let room = unique("back");
    let mut talker = b.client("talker").await;
    talker.join(&room).await;
    talker.send_text(&room, "before").await;
    let mut away = a.client("away").await;
    let joined = away.join(&room).await;
    assert_eq!(joined["seq"], 1, "{joined}");
    let position = since(&joined);
    drop(away);
    let missed: Vec<String> = (0..20).map(|i| format!("missed {i}")).collect();
    for text in &missed {
        talker.send_text(&room, text).await;
    }
    // Node a stored none of these (each node here has its own store): they
    // come from the room's log in Redis, on either node.
    let mut missed = missed;
    for (node, live) in [(&a, "live on a"), (&b, "live on b")] {
        let mut back = node.client("away").await;
        let v = join_since(&mut back, &room, &position).await;
        assert_eq!(v["recovered"], true, "{v}");
        assert_eq!(texts(&v), missed);
        let last = 1 + missed.len() as u64;
        assert_eq!(seqs(&v), (2..=last).collect::<Vec<_>>());
        assert_eq!(
            (v["seq"].as_u64(), &v["epoch"]),
            (Some(last), &position["epoch"])
        );
        talker.send_text(&room, live).await;
        let m = back.recv_type("message").await;
        assert_eq!(
            (m["text"].as_str(), m["seq"].as_u64()),
            (Some(live), Some(last + 1))
        );
        assert_eq!(m["epoch"], position["epoch"]);
        missed.push(live.to_owned());
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_gap_older_than_the_log_comes_from_the_store_or_is_refused() {
    let url = shared_url();
    // The log keeps 5 messages per room.
    let (_, a, b) = pair(&url, 5).await;
    let room = unique("old");
    let mut talker = b.client("talker").await;
    talker.join(&room).await;
    let mut away = a.client("away").await;
    let position = since(&away.join(&room).await);
    drop(away);
    let missed: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    for text in &missed {
        talker.send_text(&room, text).await;
    }
    // Node b's store has all 12 (it accepted them): the 7 the log no longer
    // holds come from it, the 5 newest from the log.
    let mut on_b = b.client("away").await;
    let v = join_since(&mut on_b, &room, &position).await;
    assert_eq!(v["recovered"], true, "{v}");
    assert_eq!(texts(&v), missed);
    // Node a's store has none of them: it says it cannot, with the latest
    // history it has, rather than hand out a gap.
    let mut on_a = a.client("away").await;
    let v = join_since(&mut on_a, &room, &position).await;
    assert_eq!(v["recovered"], false, "{v}");
    a.stop().await;
    b.stop().await;
}

/// Puts a message into `room`'s log and position the way the ordering
/// point does, without publishing it: a message the bus lost.
async fn lose_on_the_bus(url: &str, prefix: &str, room: &str, text: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let tag = format!("{{{prefix}:{room}}}");
    let seq: u64 = redis::cmd("HINCRBY")
        .arg(format!("{tag}:meta"))
        .arg("seq")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let envelope = json!({"v": 1, "node": "elsewhere", "msg": {
        "id": id, "room": room, "from": "ghost", "text": text, "ts": 1}});
    let _: String = redis::cmd("XADD")
        .arg(format!("{tag}:log"))
        .arg(format!("{seq}-0"))
        .arg("m")
        .arg(envelope.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_lost_on_the_bus_is_filled_from_the_log_in_order() {
    let url = shared_url();
    let (prefix, a, b) = pair(&url, 1_000).await;
    let room = unique("gap");
    let mut member = a.client("member").await;
    member.join(&room).await;
    let mut sender = b.client("sender").await;
    sender.join(&room).await;
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    sender.send_text(&room, "one").await;
    lose_on_the_bus(&url, &prefix, &room, "two").await;
    sender.send_text(&room, "three").await;
    for (text, seq) in [("one", 1), ("two", 2), ("three", 3)] {
        let m = member.recv_type("message").await;
        assert_eq!(
            (m["text"].as_str(), m["seq"].as_u64()),
            (Some(text), Some(seq)),
            "{m}"
        );
    }
    member
        .silent_for_type("message", Duration::from_millis(300))
        .await;
    assert!(metric(&a, "switchboard_gaps_filled_total").await >= 1);

    // A gap the log cannot fill (the position was given, the entry is
    // gone) holds what follows for at most a second, then it is delivered
    // and counted.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: u64 = redis::cmd("HINCRBY")
        .arg(format!("{{{prefix}:{room}}}:meta"))
        .arg("seq")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let sent = Instant::now();
    sender.send_text(&room, "five").await;
    let m = member.recv_type("message").await;
    assert_eq!(
        (m["text"].as_str(), m["seq"].as_u64()),
        (Some("five"), Some(5))
    );
    let held = sent.elapsed();
    assert!(held < Duration::from_secs(3), "held {held:?}");
    assert!(metric(&a, "switchboard_gaps_unfilled_total").await >= 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn every_message_arrives_once_in_order_when_the_bus_connections_are_killed() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let (prefix, a, b) = pair(&url, 1_000).await;
    let room = unique("kill");
    let mut member = a.client("member").await;
    member.join(&room).await;
    let mut sender = b.client("sender").await;
    sender.join(&room).await;
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut sent = 0u64;
    for round in 0..3 {
        // Every Pub/Sub connection is cut; what is published until the
        // nodes resubscribe never reaches them on the bus.
        let _: Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .map(|n: i64| json!(n))
            .unwrap();
        for i in 0..20 {
            let text = format!("r{round}-{i}");
            sender
                .send(json!({"type": "send", "room": room, "text": text}))
                .await;
            sent += 1;
        }
    }
    for seq in 1..=sent {
        let m = member.recv_type("message").await;
        assert_eq!(m["seq"].as_u64(), Some(seq), "{m}");
    }
    member
        .silent_for_type("message", Duration::from_millis(500))
        .await;
    println!(
        "gaps filled on the member's node: {}",
        metric(&a, "switchboard_gaps_filled_total").await
    );
    a.stop().await;
    b.stop().await;
}

/// Sends until the ordering point accepts (a node reconnecting to a
/// restarted Redis refuses the first sends with `unavailable`).
async fn send_until_acked(c: &mut Client, room: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = uuid::Uuid::now_v7().to_string();
    loop {
        c.send(json!({"type": "send", "room": room, "text": text, "id": id, "ref": text}))
            .await;
        let answer = loop {
            let v = c.recv_wire().await;
            if v["ref"] == text {
                break v;
            }
        };
        if answer["type"] == "ack" {
            return;
        }
        assert_eq!(answer["code"], "unavailable", "{answer}");
        assert!(Instant::now() < deadline, "never accepted: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Joins `room` on a node whose Redis just restarted, with `since`.
async fn rejoin(node: &Node, room: &str, position: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut c = node.client("back").await;
        let v = join_since(&mut c, room, position).await;
        if v["epoch"].is_string() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no position after the restart: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_restarted_without_its_data_starts_a_new_epoch_and_says_so() {
    let mut redis = PrivateRedis::start_on(free_port());
    let url = redis.url();
    let (_, a, b) = pair(&url, 1_000).await;
    let room = unique("epoch");
    let mut talker = b.client("talker").await;
    talker.join(&room).await;
    talker.send_text(&room, "before").await;
    let position = since(&a.client("away").await.join(&room).await);
    redis.kill();
    let redis = PrivateRedis::start_on(redis.port);
    send_until_acked(&mut talker, &room, "after").await;
    let v = rejoin(&a, &room, &position).await;
    assert_eq!(v["recovered"], false, "{v}");
    assert_ne!(v["epoch"], position["epoch"], "a new epoch");
    assert_eq!(v["seq"], 1, "the new epoch counts from 1");
    a.stop().await;
    b.stop().await;
    drop(redis);
}

#[tokio::test]
async fn redis_restarted_with_its_append_only_file_keeps_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = PrivateRedis::start_persistent(port, dir.path());
    let url = redis.url();
    let (_, a, b) = pair(&url, 1_000).await;
    let room = unique("aof");
    let mut talker = b.client("talker").await;
    talker.join(&room).await;
    talker.send_text(&room, "before").await;
    let position = since(&a.client("away").await.join(&room).await);
    redis.kill();
    let redis = PrivateRedis::start_persistent(port, dir.path());
    send_until_acked(&mut talker, &room, "after").await;
    let v = rejoin(&a, &room, &position).await;
    assert_eq!(v["recovered"], true, "{v}");
    assert_eq!(v["epoch"], position["epoch"]);
    assert_eq!(texts(&v), ["after"]);
    assert_eq!(seqs(&v), [2]);
    a.stop().await;
    b.stop().await;
    drop(redis);
}

/// Sends `text` with `id` and waits for its ack.
async fn send_id(c: &mut Client, room: &str, text: &str, id: &str) {
    c.send(json!({"type": "send", "room": room, "text": text, "id": id, "ref": text}))
        .await;
    loop {
        let v = c.recv_wire().await;
        if v["ref"] == text {
            assert_eq!(v["type"], "ack", "{v}");
            return;
        }
    }
}

#[tokio::test]
async fn a_resend_keeps_its_position_while_the_room_remembers_its_id() {
    let url = shared_url();
    // The room remembers its last 3 ids.
    let (prefix, a, b) = pair(&url, 3).await;
    let room = unique("resend");
    let mut member = a.client("member").await;
    member.join(&room).await;
    let mut sender = b.client("sender").await;
    sender.join(&room).await;
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    let first = uuid::Uuid::now_v7().to_string();
    send_id(&mut sender, &room, "first", &first).await;
    for text in ["second", "third"] {
        sender.send_text(&room, text).await;
    }
    // Resent (on the other node too): acked, same position, not delivered again.
    send_id(&mut sender, &room, "first", &first).await;
    let mut on_a = a.client("sender").await;
    on_a.join(&room).await;
    send_id(&mut on_a, &room, "first", &first).await;
    sender.send_text(&room, "fourth").await;
    let got: Vec<(String, u64)> = {
        let mut got = Vec::new();
        for _ in 0..4 {
            let m = member.recv_type("message").await;
            got.push((
                m["text"].as_str().unwrap().to_owned(),
                m["seq"].as_u64().unwrap(),
            ));
        }
        got
    };
    assert_eq!(
        got,
        [("first", 1), ("second", 2), ("third", 3), ("fourth", 4)].map(|(t, s)| (t.to_owned(), s))
    );
    member
        .silent_for_type("message", Duration::from_millis(300))
        .await;
    a.stop().await;
    b.stop().await;
}

/// The last message of a burst whose publish was lost (written to the
/// room's log, never published: what a Redis blip can do) has nothing
/// after it to reveal the gap: a room that goes quiet asks its position and
/// fills it, on every node.
#[tokio::test]
async fn a_lost_last_message_is_filled_once_the_room_goes_quiet() {
    let url = shared_url();
    let (prefix, a, b) = pair(&url, 1000).await;
    let room = unique("tail");
    let mut on_a = a.client("ann").await;
    let mut on_b = b.client("ben").await;
    on_a.join(&room).await;
    on_b.join(&room).await;
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    on_a.send_text(&room, "one").await;
    on_a.send_text(&room, "two").await;
    for c in [&mut on_a, &mut on_b] {
        for text in ["one", "two"] {
            assert_eq!(c.recv_type("message").await["text"], text);
        }
    }
    // Seq 3 enters the log the way the ordering script writes it, unpublished.
    let key = |part: &str| format!("{{{prefix}:{room}}}:{part}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let epoch: String = redis::cmd("HGET")
        .arg(key("meta"))
        .arg("epoch")
        .query_async(&mut conn)
        .await
        .unwrap();
    let seq: u64 = redis::cmd("HINCRBY")
        .arg(key("meta"))
        .arg("seq")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(seq, 3);
    let id = uuid::Uuid::new_v4();
    let envelope = json!({"v": 1, "node": "elsewhere", "msg": {
        "id": id, "room": room, "from": "cat", "text": "three", "ts": 1, "seq": 3, "epoch": epoch,
    }});
    let _: String = redis::cmd("XADD")
        .arg(key("log"))
        .arg("3-0")
        .arg("m")
        .arg(envelope.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    for c in [&mut on_a, &mut on_b] {
        let m = c.recv_type("message").await;
        assert_eq!(
            (m["text"].as_str(), m["seq"].as_u64()),
            (Some("three"), Some(3)),
            "{m}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    a.stop().await;
    b.stop().await;
}
