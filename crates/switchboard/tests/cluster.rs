//! Cluster mode: several nodes in one test, sharing a real Redis.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::redis::{PrivateRedis, await_numsub, free_port, shared_url};
use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

async fn cluster_node(redis_url: &str, prefix: &str, node_id: &str) -> Node {
    let gateway = GatewayConfig {
        node_id: node_id.to_owned(),
        ..GatewayConfig::default()
    };
    Node::clustered(redis_url, prefix, gateway).await
}

async fn nodes(redis_url: &str, n: usize) -> (String, Vec<Node>) {
    let prefix = unique("t");
    let mut nodes = Vec::new();
    for i in 1..=n {
        nodes.push(cluster_node(redis_url, &prefix, &format!("node-{i}")).await);
    }
    (prefix, nodes)
}

fn channel(prefix: &str, room: &str) -> String {
    format!("{{{prefix}:{room}}}:ch")
}

/// Collects `n` message frames (skipping acks), then checks nothing more comes.
async fn messages(c: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(c.recv_type("message").await);
    }
    c.silent_for_type("message", Duration::from_millis(300))
        .await;
    got
}

#[tokio::test]
async fn three_nodes_deliver_every_message_once_in_sender_order() {
    let redis = shared_url();
    let (prefix, nodes) = nodes(&redis, 3).await;
    let (room_a, room_b) = (unique("a"), unique("b"));
    let mut a = [
        nodes[0].client("a1").await,
        nodes[1].client("a2").await,
        nodes[2].client("a3").await,
    ];
    let mut b = [nodes[0].client("b1").await, nodes[2].client("b2").await];
    for c in a.iter_mut() {
        c.join(&room_a).await;
    }
    for c in b.iter_mut() {
        c.join(&room_b).await;
    }
    await_numsub(&redis, &channel(&prefix, &room_a), 3).await;
    await_numsub(&redis, &channel(&prefix, &room_b), 2).await;

    const PER_SENDER: usize = 30;
    for i in 0..PER_SENDER {
        for (k, c) in a.iter_mut().enumerate() {
            c.send(json!({"type": "send", "room": room_a, "text": format!("a{}-{i}", k + 1)}))
                .await;
        }
        if i < 10 {
            for (k, c) in b.iter_mut().enumerate() {
                c.send(json!({"type": "send", "room": room_b, "text": format!("b{}-{i}", k + 1)}))
                    .await;
            }
        }
    }
    for c in a.iter_mut() {
        check(
            messages(c, 3 * PER_SENDER).await,
            &room_a,
            &["a1", "a2", "a3"],
            PER_SENDER,
        );
    }
    for c in b.iter_mut() {
        check(messages(c, 2 * 10).await, &room_b, &["b1", "b2"], 10);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Every id once, only `room`, and each sender's texts in the order sent.
fn check(got: Vec<Value>, room: &str, senders: &[&str], per_sender: usize) {
    let ids: HashSet<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "a message was delivered twice");
    let mut by_sender: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &got {
        assert_eq!(m["room"], room, "a message of another room: {m}");
        by_sender
            .entry(m["from"].as_str().unwrap())
            .or_default()
            .push(m["text"].as_str().unwrap());
    }
    for s in senders {
        let expected: Vec<String> = (0..per_sender).map(|i| format!("{s}-{i}")).collect();
        assert_eq!(
            by_sender.get(s).cloned().unwrap_or_default(),
            expected,
            "order from {s}"
        );
    }
}

#[tokio::test]
async fn nodes_subscribe_only_to_rooms_they_host() {
    let redis = shared_url();
    let (prefix, nodes) = nodes(&redis, 3).await;
    let room = unique("interest");
    let mut on1 = nodes[0].client("one").await;
    let mut on2 = nodes[1].client("two").await;
    let mut on3 = nodes[2].client("three").await;
    on1.join(&room).await;
    on2.join(&room).await;
    on3.join(&unique("elsewhere")).await;
    await_numsub(&redis, &channel(&prefix, &room), 2).await;
    // A second member on node 1 does not add a subscription.
    let mut also1 = nodes[0].client("also-one").await;
    also1.join(&room).await;
    on1.send(json!({"type": "leave", "room": room})).await;
    assert_eq!(on1.recv_type("left").await["room"], room.as_str());
    await_numsub(&redis, &channel(&prefix, &room), 2).await;
    also1.send(json!({"type": "leave", "room": room})).await;
    also1.recv_type("left").await;
    await_numsub(&redis, &channel(&prefix, &room), 1).await;
    drop(on2);
    await_numsub(&redis, &channel(&prefix, &room), 0).await;
    for node in nodes {
        node.stop().await;
    }
}

async fn ready(node: &Node) -> (u16, Value) {
    let res = reqwest::get(node.http("/readyz")).await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn await_ready(node: &Node, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = ready(node).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn delivery_resumes_after_redis_restarts_without_restarting_nodes() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let (prefix, nodes) = nodes(&url, 2).await;
    let room = unique("outage");
    let mut a = nodes[0].client("a").await;
    let mut local = nodes[0].client("local").await;
    let mut b = nodes[1].client("b").await;
    for c in [&mut a, &mut local, &mut b] {
        c.join(&room).await;
    }
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    a.send_text(&room, "before").await;
    assert_eq!(b.recv_type("message").await["text"], "before");
    assert_eq!(local.recv_type("message").await["text"], "before");
    await_ready(&nodes[0], 200).await;

    redis.kill();
    let body = await_ready(&nodes[0], 503).await;
    assert_eq!(body["down"], json!(["redis"]));
    let health = reqwest::get(nodes[0].http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on Redis");

    // Nothing is accepted without a position while Redis, the ordering
    // point, is away: the sender is told to retry.
    a.send(json!({"type": "send", "room": room, "text": "during", "ref": "during"}))
        .await;
    let refused = a.recv_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["ref"].as_str()),
        (Some("unavailable"), Some("during")),
        "{refused}"
    );
    local
        .silent_for_type("message", Duration::from_millis(300))
        .await;

    let redis = PrivateRedis::start_on(redis.port);
    let restarted = Instant::now();
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    let mut attempt = 0;
    let resumed = loop {
        attempt += 1;
        let text = format!("after-{attempt}");
        // The first sends after the restart may still be refused while the
        // node reconnects; a refused send is not delivered anywhere.
        a.send(json!({"type": "send", "room": room, "text": text, "ref": text}))
            .await;
        let answer = loop {
            let v = a.recv_wire().await;
            if v["ref"] == text.as_str() {
                break v;
            }
        };
        assert!(
            answer["type"] == "ack" || answer["code"] == "unavailable",
            "{answer}"
        );
        let got = tokio::time::timeout(Duration::from_millis(300), b.recv_type("message"))
            .await
            .ok();
        if let Some(m) = got {
            assert!(m["text"].as_str().unwrap().starts_with("after-"), "{m}");
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "delivery across nodes did not resume"
        );
    };
    println!(
        "cross-node delivery resumed {} ms after Redis restarted",
        resumed.as_millis()
    );
    await_ready(&nodes[0], 200).await;
    await_ready(&nodes[1], 200).await;
    for node in nodes {
        node.stop().await;
    }
    drop(redis);
}

#[tokio::test]
async fn a_node_started_while_redis_is_down_becomes_ready_when_it_is_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let (prefix, nodes) = nodes(&url, 2).await;
    let body = await_ready(&nodes[0], 503).await;
    assert_eq!(body["down"], json!(["redis"]));
    assert_eq!(
        reqwest::get(nodes[0].http("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let room = unique("late");
    let mut a = nodes[0].client("a").await;
    let mut b = nodes[1].client("b").await;
    a.join(&room).await;
    b.join(&room).await;

    let _redis = PrivateRedis::start_on(port);
    await_ready(&nodes[0], 200).await;
    await_ready(&nodes[1], 200).await;
    await_numsub(&url, &channel(&prefix, &room), 2).await;
    a.send_text(&room, "hello late").await;
    assert_eq!(b.recv_type("message").await["text"], "hello late");
    for node in nodes {
        node.stop().await;
    }
}
