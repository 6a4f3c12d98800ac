//! Presence across a cluster: names and connection counts from every node,
//! events of names (a second connection on another node is no event), and
//! a node killed without cleaning up has its members removed, with leave
//! events, within PRESENCE_TTL.

mod common;

use std::time::{Duration, Instant};

use common::process::NodeProcess;
use common::redis::shared_url;
use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_bus::RedisOptions;
use switchboard_gateway::GatewayConfig;

const TTL: Duration = Duration::from_secs(3);

async fn node(prefix: &str, id: &str) -> Node {
    let gateway = GatewayConfig {
        node_id: id.into(),
        ..GatewayConfig::default()
    };
    let redis = RedisOptions {
        presence_ttl: TTL,
        ..RedisOptions::new(shared_url(), prefix, id)
    };
    Node::clustered_with(redis, gateway).await
}

async fn watch(c: &mut Client, room: &str) -> Value {
    c.send(json!({"type": "join", "room": room, "presence": true}))
        .await;
    c.recv_type("joined").await
}

/// The next presence change, as (event, name, count), past the watcher's
/// own arrival: in a cluster its event may be published before the
/// watcher's node is subscribed (the `joined` count has it either way).
async fn change(c: &mut Client, me: &str) -> (String, String, u64) {
    loop {
        let v = c.recv_type("presence_change").await;
        if v["event"] == "join" && v["name"] == me {
            continue;
        }
        return (
            v["event"].as_str().unwrap().to_owned(),
            v["name"].as_str().unwrap_or_default().to_owned(),
            v["count"].as_u64().unwrap(),
        );
    }
}

fn event(e: &str, name: &str, count: u64) -> (String, String, u64) {
    (e.to_owned(), name.to_owned(), count)
}

/// The members (name, connections) a presence answer lists, by name.
fn names(v: &Value) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn three_nodes_see_one_presence_with_events_of_names() {
    let prefix = unique("pres");
    let (a, b, c) = (
        node(&prefix, "node-a").await,
        node(&prefix, "node-b").await,
        node(&prefix, "node-c").await,
    );
    let room = unique("room");
    let mut watcher = c.client("watcher").await;
    assert_eq!(watch(&mut watcher, &room).await["count"], 1);

    let mut ann_a = a.client("ann").await;
    ann_a.join(&room).await;
    assert_eq!(
        change(&mut watcher, "watcher").await,
        event("join", "ann", 2)
    );
    // Ann again, on another node: one more connection, no event.
    let mut ann_b = b.client("ann").await;
    ann_b.join(&room).await;
    let mut bob = b.client("bob").await;
    let joined = bob.join(&room).await;
    assert_eq!(
        change(&mut watcher, "watcher").await,
        event("join", "bob", 3)
    );
    assert_eq!(joined["count"], 3, "{joined}");

    let expected = vec![
        ("ann".to_owned(), 2),
        ("bob".to_owned(), 1),
        ("watcher".to_owned(), 1),
    ];
    ann_a.send(json!({"type": "presence", "room": room})).await;
    let v = ann_a.recv_type("presence").await;
    assert_eq!(
        (v["count"].as_u64(), names(&v)),
        (Some(3), expected.clone())
    );
    let http: Value = reqwest::get(b.http(&format!("/api/rooms/{room}/presence")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&http), expected);

    // Ann's first node goes: she is still on the other, no event.
    ann_a.send(json!({"type": "leave", "room": room})).await;
    ann_a.recv_type("left").await;
    watcher
        .silent_for_type("presence_change", Duration::from_millis(500))
        .await;
    drop(ann_b);
    assert_eq!(
        change(&mut watcher, "watcher").await,
        event("leave", "ann", 2)
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_killed_nodes_members_leave_within_the_presence_ttl() {
    // Three nodes: two in this process, and one of its own to kill -9.
    let prefix = unique("dead");
    let survivors = [
        node(&prefix, "survivor-1").await,
        node(&prefix, "survivor-2").await,
    ];
    let ttl = TTL.as_secs().to_string();
    let doomed = NodeProcess::start(
        &[
            ("REDIS_URL", shared_url().as_str()),
            ("REDIS_PREFIX", prefix.as_str()),
            ("NODE_ID", "doomed"),
            ("PRESENCE_TTL", ttl.as_str()),
        ],
        None,
    )
    .await;
    let room = unique("room");
    let mut watchers = Vec::new();
    for (i, survivor) in survivors.iter().enumerate() {
        let mut w = survivor.client(&format!("watcher{i}")).await;
        watch(&mut w, &room).await;
        watchers.push(w);
    }
    // The first watcher sees the second arrive.
    assert_eq!(
        change(&mut watchers[0], "watcher0").await,
        event("join", "watcher1", 2)
    );
    let mut dee = Client::connect(doomed.addr, "dee").await;
    dee.join(&room).await;
    let mut eve = Client::connect(doomed.addr, "eve").await;
    eve.join(&room).await;
    for (i, w) in watchers.iter_mut().enumerate() {
        let me = format!("watcher{i}");
        assert_eq!(change(w, &me).await, event("join", "dee", 3));
        assert_eq!(change(w, &me).await, event("join", "eve", 4));
    }

    doomed.kill();
    let killed = Instant::now();
    for (i, w) in watchers.iter_mut().enumerate() {
        let me = format!("watcher{i}");
        let first = change(w, &me).await;
        let second = change(w, &me).await;
        let took = killed.elapsed();
        let mut gone = [first.1.as_str(), second.1.as_str()];
        gone.sort_unstable();
        assert_eq!(gone, ["dee", "eve"]);
        assert_eq!(
            (first.0.as_str(), first.2, second.0.as_str(), second.2),
            ("leave", 3, "leave", 2)
        );
        assert!(took < TTL, "members of the dead node left after {took:?}");
        println!("a killed node's members left after {took:?} (PRESENCE_TTL {TTL:?})");
    }
    // Cleared once: no second round of leave events.
    for w in &mut watchers {
        w.silent_for_type("presence_change", Duration::from_millis(500))
            .await;
    }
    watchers[0]
        .send(json!({"type": "presence", "room": room}))
        .await;
    let v = watchers[0].recv_type("presence").await;
    assert_eq!(
        names(&v),
        [("watcher0".to_owned(), 1), ("watcher1".to_owned(), 1)]
    );
    for survivor in survivors {
        survivor.stop().await;
    }
}
