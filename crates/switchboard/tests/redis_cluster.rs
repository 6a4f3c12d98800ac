//! The bus on a Redis Cluster (`REDIS_URL=redis+cluster://...`): sharded
//! Pub/Sub, one ordering script per room on the room's shard, and the
//! topology followed through a failover and a slot migration. Each test
//! runs its own six-process cluster (three masters, three replicas).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::redis_cluster::PrivateCluster;
use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

fn channel(prefix: &str, room: &str) -> String {
    format!("{{{prefix}:{room}}}:ch")
}

async fn node(cluster: &PrivateCluster, prefix: &str, id: &str) -> Node {
    // Operators' routes need the API key, so /readyz names shards to it only.
    let gateway = GatewayConfig {
        metrics_public: false,
        ..common::jwt::api_config(id)
    };
    // Positions count once a replica has them (REDIS_WAIT_REPLICAS=1), so
    // a failover cannot give an acked message's position to another.
    let redis = switchboard_bus::RedisOptions {
        wait_replicas: 1,
        ..switchboard_bus::RedisOptions::new(cluster.url(), prefix, id)
    };
    Node::clustered_with(redis, gateway).await
}

/// One room per master: room names picked until every master serves one.
fn room_per_master(cluster: &PrivateCluster, prefix: &str) -> Vec<(String, u16)> {
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    let mut rooms: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let room = format!("room-{i}");
        let master = cluster.master_of(&channel(prefix, &room));
        if !rooms.iter().any(|(_, m)| *m == master) {
            rooms.push((room, master));
        }
        if rooms.len() == masters.len() {
            break;
        }
    }
    rooms.sort_by_key(|(_, m)| *m);
    rooms
}

/// Waits until `channel` has `n` sharded subscribers on the master at
/// `port`; panics after 10 s.
async fn await_shard_numsub(port: u16, channel: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = PrivateCluster::shard_numsub(port, channel);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} has {now} sharded subscribers on {port}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects `n` message frames, then checks nothing more comes.
async fn messages(c: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(c.recv_type("message").await);
    }
    c.silent_for_type("message", Duration::from_millis(300))
        .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_cluster_deliver_once_in_order_through_each_rooms_shard() {
    let cluster = PrivateCluster::start();
    let prefix = unique("rc");
    let nodes = [
        node(&cluster, &prefix, "node-1").await,
        node(&cluster, &prefix, "node-2").await,
        node(&cluster, &prefix, "node-3").await,
    ];
    let rooms = room_per_master(&cluster, &prefix);
    // Node 1 hosts all three rooms, node 2 the first two, node 3 the first.
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut c = node.client(&format!("c{}", n + 1)).await;
        for (room, _) in &rooms[..3 - n] {
            c.join(room).await;
        }
        clients.push(c);
    }
    for (r, (room, master)) in rooms.iter().enumerate() {
        let ch = channel(&prefix, room);
        await_shard_numsub(*master, &ch, 3 - r as i64).await;
        // Interest-based and sharded: no other master has the channel.
        for other in cluster.masters().into_iter().filter(|m| m != master) {
            assert_eq!(
                PrivateCluster::shard_numsub(other, &ch),
                0,
                "{ch} on {other}"
            );
        }
    }

    const PER_SENDER: usize = 20;
    for i in 0..PER_SENDER {
        for (n, c) in clients.iter_mut().enumerate() {
            for (room, _) in &rooms[..3 - n] {
                c.send(json!({"type": "send", "room": room, "text": format!("c{}-{i}", n + 1)}))
                    .await;
            }
        }
    }
    for (n, c) in clients.iter_mut().enumerate() {
        // Room r has 3 - r members, each sending PER_SENDER.
        let expected: usize = (0..3 - n).map(|r| (3 - r) * PER_SENDER).sum();
        let got = messages(c, expected).await;
        let ids: HashSet<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), got.len(), "a message was delivered twice");
        let mut by_room_sender: HashMap<(String, String), Vec<String>> = HashMap::new();
        for m in &got {
            by_room_sender
                .entry((
                    m["room"].as_str().unwrap().into(),
                    m["from"].as_str().unwrap().into(),
                ))
                .or_default()
                .push(m["text"].as_str().unwrap().into());
        }
        for (r, (room, _)) in rooms[..3 - n].iter().enumerate() {
            for s in 0..3 - r {
                let sender = format!("c{}", s + 1);
                let want: Vec<String> = (0..PER_SENDER).map(|i| format!("{sender}-{i}")).collect();
                assert_eq!(
                    by_room_sender.get(&(room.clone(), sender.clone())),
                    Some(&want),
                    "{room} from {sender}, as c{} got it",
                    n + 1
                );
            }
        }
    }
    // The server API lists the rooms of every shard (one master after the
    // other), a page of one room at a time, names counted across nodes.
    let mut listed = HashMap::new();
    let mut cursor = 0u64;
    for _ in 0..100 {
        let page: Value = reqwest::Client::new()
            .get(nodes[2].http(&format!("/api/rooms?cursor={cursor}&limit=1")))
            .bearer_auth(common::jwt::API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in page["rooms"].as_array().unwrap() {
            listed.insert(
                r["room"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            );
        }
        cursor = page["next"].as_u64().unwrap();
        if cursor == 0 {
            break;
        }
    }
    let want: HashMap<String, u64> = rooms
        .iter()
        .enumerate()
        .map(|(r, (room, _))| (room.clone(), 3 - r as u64))
        .collect();
    assert_eq!(listed, want);
    // Leaving drops the node's subscription on that shard only.
    clients[2]
        .send(json!({"type": "leave", "room": rooms[0].0}))
        .await;
    clients[2].recv_type("left").await;
    await_shard_numsub(rooms[0].1, &channel(&prefix, &rooms[0].0), 2).await;
    for node in nodes {
        node.stop().await;
    }
}

/// `/readyz` as an operator (with the API key).
async fn ready(node: &Node) -> (u16, Value) {
    let res = reqwest::Client::new()
        .get(node.http("/readyz"))
        .bearer_auth(common::jwt::API_KEY)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Sends `text` with `id` until it is acked, retrying on errors; the time
/// it took.
async fn send_until_acked(c: &mut Client, room: &str, id: &str, text: &str) -> Duration {
    let started = Instant::now();
    loop {
        c.send(json!({"type": "send", "room": room, "id": id, "text": text, "ref": text}))
            .await;
        loop {
            let v = c.recv_wire().await;
            if v["type"] == "ack" && v["ref"] == text {
                return started.elapsed();
            }
            if v["type"] == "error" && v["ref"] == text {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{text} never acked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins `room` with `since` and returns the texts of the history.
async fn rejoin_texts(node: &Node, room: &str, since: &Value) -> Vec<String> {
    let mut c = node.client("late").await;
    c.send(json!({"type": "join", "room": room, "since": since, "ref": "r"}))
        .await;
    let joined = c.recv_type("joined").await;
    assert_ne!(joined["recovered"], false, "{joined}");
    joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn since(joined: &Value) -> Value {
    json!({"seq": joined["seq"], "epoch": joined["epoch"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_fails_over_and_every_acked_message_is_recovered() {
    let mut cluster = PrivateCluster::start();
    let prefix = unique("rcf");
    let a = node(&cluster, &prefix, "node-a").await;
    let b = node(&cluster, &prefix, "node-b").await;
    let rooms = room_per_master(&cluster, &prefix);
    let (room, master) = rooms[0].clone();
    let mut sender = a.client("sender").await;
    sender.join(&room).await;
    let mut receiver = b.client("receiver").await;
    let start = since(&receiver.join(&room).await);
    await_shard_numsub(master, &channel(&prefix, &room), 2).await;

    const TOTAL: usize = 60;
    const KILL_AT: usize = 20;
    let mut killed_at = None;
    let mut resumed = None;
    let mut failed_over = None;
    for i in 0..TOTAL {
        if i == KILL_AT {
            cluster.kill(master);
            let killed = Instant::now();
            killed_at = Some(killed);
            // Before the failover, /readyz names the shard it cannot reach.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let (status, body) = ready(&a).await;
                if status == 503 {
                    let down = body["down"].to_string();
                    assert!(down.contains(&format!(":{master}")), "{body}");
                    // Anyone else is told only that Redis is down.
                    let public: Value = reqwest::get(a.http("/readyz"))
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert_eq!(public["down"], json!(["redis"]), "{public}");
                    break;
                }
                assert!(Instant::now() < deadline, "readyz still says {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Its replica takes over; then the killed node comes back (as a
            // supervisor would restart it) and rejoins as the new master's
            // replica, so positions are replicated again.
            let deadline = Instant::now() + Duration::from_secs(20);
            while cluster.master_of(&channel(&prefix, &room)) == master {
                assert!(Instant::now() < deadline, "no failover");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failed_over = Some(killed.elapsed());
            cluster.restart(master);
        }
        let id = uuid::Uuid::new_v4().to_string();
        send_until_acked(&mut sender, &room, &id, &format!("m-{i}")).await;
        if i == KILL_AT {
            resumed = Some(killed_at.unwrap().elapsed());
        }
    }
    eprintln!(
        "failover: the replica took over {:?} after the master's SIGKILL; the first send after it was acked after {:?}",
        failed_over.unwrap(),
        resumed.unwrap()
    );
    // Every acked message reaches a client that rejoins from before them,
    // on either node, exactly once and in order.
    let want: Vec<String> = (0..TOTAL).map(|i| format!("m-{i}")).collect();
    for node in [&a, &b] {
        assert_eq!(rejoin_texts(node, &room, &start).await, want);
    }
    // Live delivery resumed on the other node too: the last message came.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = receiver.recv_type("message").await;
        if m["text"] == format!("m-{}", TOTAL - 1) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&a).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "readyz after the failover: {:?}",
            ready(&a).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_rooms_slots_under_load_loses_nothing_acked() {
    let cluster = PrivateCluster::start();
    let prefix = unique("rcm");
    let a = node(&cluster, &prefix, "node-a").await;
    let b = node(&cluster, &prefix, "node-b").await;
    let rooms = room_per_master(&cluster, &prefix);
    let (room, from) = rooms[0].clone();
    let to = rooms[1].1;
    let mut sender = a.client("sender").await;
    sender.join(&room).await;
    let mut receiver = b.client("receiver").await;
    let start = since(&receiver.join(&room).await);
    await_shard_numsub(from, &channel(&prefix, &room), 2).await;

    // Every slot of the room's master moves to another master while the
    // sender goes on.
    let slots: u32 = 16384 / 3;
    let reshard = tokio::task::spawn_blocking(move || PrivateCluster::reshard(from, to, slots + 1));
    let mut sent = 0;
    while !reshard.is_finished() || sent < 20 {
        let id = uuid::Uuid::new_v4().to_string();
        send_until_acked(&mut sender, &room, &id, &format!("m-{sent}")).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = reshard.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    cluster.await_ok();
    assert_eq!(
        cluster.master_of(&channel(&prefix, &room)),
        to,
        "the room moved"
    );
    // A few more after the move.
    for i in sent..sent + 10 {
        let id = uuid::Uuid::new_v4().to_string();
        send_until_acked(&mut sender, &room, &id, &format!("m-{i}")).await;
    }
    let total = sent + 10;
    eprintln!("resharding: {total} messages acked while and after {slots} slots moved");
    let want: Vec<String> = (0..total).map(|i| format!("m-{i}")).collect();
    for node in [&a, &b] {
        assert_eq!(rejoin_texts(node, &room, &start).await, want);
    }
    // The subscriptions followed the room to its new shard, and live
    // delivery goes on there.
    await_shard_numsub(to, &channel(&prefix, &room), 2).await;
    assert_eq!(
        PrivateCluster::shard_numsub(from, &channel(&prefix, &room)),
        0
    );
    let id = uuid::Uuid::new_v4().to_string();
    send_until_acked(&mut sender, &room, &id, "after").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if receiver.recv_type("message").await["text"] == "after" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    a.stop().await;
    b.stop().await;
}
