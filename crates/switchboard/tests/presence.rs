//! Presence on a single node: who is in a room (by name, with connection
//! counts), over `/ws`, Socket.IO's frame path and HTTP; join and leave
//! events of names, not connections; counts only in large rooms, at most
//! once a second.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

async fn watch(c: &mut Client, room: &str) -> Value {
    c.send(json!({"type": "join", "room": room, "presence": true}))
        .await;
    c.recv_type("joined").await
}

async fn presence(c: &mut Client, room: &str) -> Value {
    c.send(json!({"type": "presence", "room": room, "ref": "p"}))
        .await;
    let v = c.recv_type("presence").await;
    assert_eq!(v["ref"], "p");
    v
}

fn names(v: &Value) -> Vec<(String, u64)> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn members_are_names_with_their_connections_and_events_are_of_names() {
    let node = Node::memory().await;
    let room = unique("pres");
    let mut watcher = node.client("watcher").await;
    let joined = watch(&mut watcher, &room).await;
    assert_eq!(joined["count"], 1, "{joined}");
    // A watcher is told of its own arrival too.
    let own = watcher.recv_type("presence_change").await;
    assert_eq!(
        (own["event"].as_str(), own["name"].as_str()),
        (Some("join"), Some("watcher"))
    );

    let mut ann1 = node.client("ann").await;
    ann1.join(&room).await;
    let event = watcher.recv_type("presence_change").await;
    assert_eq!(
        event,
        json!({"type": "presence_change", "room": room, "event": "join", "name": "ann", "count": 2})
    );
    // A second connection of the same name: no event, one more connection.
    let mut ann2 = node.client("ann").await;
    let joined = ann2.join(&room).await;
    assert_eq!(joined["count"], 2);
    let v = presence(&mut watcher, &room).await;
    assert_eq!(v["count"], 2);
    assert_eq!(names(&v), [("watcher".into(), 1), ("ann".into(), 2)]);
    assert!(v["members"][0]["since"].as_i64().unwrap() > 0);
    assert!(v.get("truncated").is_none(), "{v}");

    // The same over HTTP.
    let http: Value = reqwest::get(node.http(&format!("/api/rooms/{room}/presence")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (http["count"].as_u64(), http["truncated"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(names(&http), names(&v));

    drop(ann2);
    watcher
        .silent_for_type("presence_change", Duration::from_millis(300))
        .await;
    ann1.send(json!({"type": "leave", "room": room})).await;
    let event = watcher.recv_type("presence_change").await;
    assert_eq!(
        (
            event["event"].as_str(),
            event["name"].as_str(),
            event["count"].as_u64()
        ),
        (Some("leave"), Some("ann"), Some(1))
    );
    assert_eq!(
        names(&presence(&mut watcher, &room).await),
        [("watcher".into(), 1)]
    );

    // Members that did not ask for presence get no events.
    let mut quiet = node.client("quiet").await;
    quiet.join(&room).await;
    let mut bob = node.client("bob").await;
    bob.join(&room).await;
    quiet
        .silent_for_type("presence_change", Duration::from_millis(300))
        .await;
    node.stop().await;
}

#[tokio::test]
async fn presence_is_refused_with_its_code_outside_the_room_and_for_bad_input() {
    let node = Node::memory().await;
    let mut c = node.client("c").await;
    c.send(json!({"type": "presence", "room": "elsewhere", "ref": 1}))
        .await;
    let err = c.recv_type("error").await;
    assert_eq!(
        (err["code"].as_str(), &err["ref"]),
        (Some("not_joined"), &json!(1))
    );
    c.send(json!({"type": "presence", "ref": 2})).await;
    assert_eq!(c.recv_type("error").await["code"], "bad_frame");
    c.send(json!({"type": "join", "room": "r", "presence": 1}))
        .await;
    assert_eq!(c.recv_type("error").await["code"], "bad_frame");
    let bad = reqwest::get(node.http("/api/rooms/bad%20room/presence"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "bad_room", "{body}");
    node.stop().await;
}

#[tokio::test]
async fn a_large_room_sends_counts_at_most_once_a_second() {
    let node = Node::start(
        "sqlite::memory:",
        GatewayConfig {
            presence_events_max: 3,
            ..GatewayConfig::default()
        },
    )
    .await;
    let room = unique("big");
    let mut watcher = node.client("watcher").await;
    watch(&mut watcher, &room).await;
    let mut others = Vec::new();
    for i in 0..2 {
        let mut c = node.client(&format!("small{i}")).await;
        c.join(&room).await;
        others.push(c);
    }
    // The watcher itself and the two small ones.
    for _ in 0..3 {
        assert_eq!(watcher.recv_type("presence_change").await["event"], "join");
    }
    // Past three names: a churn of 40 joins and leaves within a second or
    // two gives at most one count a second, the last one exact.
    let started = Instant::now();
    for i in 0..20 {
        let mut c = node.client(&format!("big{i}")).await;
        c.join(&room).await;
        others.push(c);
    }
    for c in others.drain(2..12) {
        drop(c);
    }
    let churned = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut counts = Vec::new();
    while let Ok(v) = tokio::time::timeout(
        Duration::from_millis(300),
        watcher.recv_type("presence_change"),
    )
    .await
    {
        assert_eq!(v["event"], "count", "{v}");
        assert!(v.get("name").is_none(), "{v}");
        counts.push(v["count"].as_u64().unwrap());
    }
    let allowed = 2 + (churned.as_millis() / 1000) as usize;
    assert!(
        !counts.is_empty() && counts.len() <= allowed,
        "{} count events over {churned:?}: {counts:?}",
        counts.len()
    );
    assert_eq!(
        *counts.last().unwrap(),
        13,
        "watcher + 2 small + 10 big left"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_presence_flood_is_cut_at_the_frame_budget() {
    let node = Node::start(
        "sqlite::memory:",
        GatewayConfig {
            send_rate: switchboard_gateway::Rate {
                per_second: 5,
                burst: 5,
            },
            ..GatewayConfig::default()
        },
    )
    .await;
    let room = unique("flood");
    let mut c = node.client("flooder").await;
    c.join(&room).await;
    let started = Instant::now();
    for _ in 0..200 {
        c.send(json!({"type": "presence", "room": room})).await;
    }
    // Ten times the rate's burst of frames, then the connection is closed.
    assert_eq!(c.close_code().await, Some(1008));
    assert!(started.elapsed() < Duration::from_secs(5));
    node.stop().await;
}
