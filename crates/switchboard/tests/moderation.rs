//! `DELETE /api/rooms/{room}/messages/{id}`: a deleted message leaves the
//! store (a tombstone keeps its id and position), every member on every
//! node gets `deleted`, and a recovery or history read that spans it
//! returns the tombstone. On one node, and across two nodes on Redis.

mod common;

use std::time::Duration;

use common::jwt::API_KEY;
use common::redis::{await_numsub, shared_url};
use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

fn config(node: &str) -> GatewayConfig {
    common::jwt::api_config(node)
}

async fn delete(node: &Node, room: &str, id: &str, key: Option<&str>) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().delete(node.http(&format!("/api/rooms/{room}/messages/{id}")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn history(node: &Node, room: &str, query: &str) -> Vec<Value> {
    let v: Value = reqwest::get(node.http(&format!("/api/rooms/{room}/messages{query}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().unwrap().clone()
}

/// Waits for the `deleted` frame of `id`.
async fn told_deleted(c: &mut Client, room: &str, id: &str) {
    let v = c.recv_type("deleted").await;
    assert_eq!(v, json!({"type": "deleted", "room": room, "id": id}));
}

#[tokio::test]
async fn a_deleted_message_is_a_tombstone_everywhere_on_one_node() {
    let node = Node::start("sqlite::memory:", config("n1")).await;
    let room = unique("mod");
    let mut a = node.client("ann").await;
    let mut b = node.client("ben").await;
    let first = a.join(&room).await;
    b.join(&room).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(a.send_text(&room, text).await);
    }
    for _ in 0..3 {
        b.recv_type("message").await;
    }
    // Refusals first: they change nothing.
    assert_eq!(delete(&node, &room, &ids[1], None).await.0, 401);
    assert_eq!(delete(&node, &room, &ids[1], Some("wrong")).await.0, 401);
    let (status, body) = delete(&node, &room, "not-a-uuid", Some(API_KEY)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = delete(
        &node,
        &room,
        &uuid::Uuid::now_v7().to_string(),
        Some(API_KEY),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = delete(&node, "other-room", &ids[1], Some(API_KEY)).await;
    assert_eq!(status, 404, "a message is deleted in its own room only");
    let (status, body) = delete(&node, "bad room!", &ids[1], Some(API_KEY)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_room")));
    b.silent_for_type("deleted", Duration::from_millis(200))
        .await;

    assert_eq!(delete(&node, &room, &ids[1], Some(API_KEY)).await.0, 204);
    told_deleted(&mut a, &room, &ids[1]).await;
    told_deleted(&mut b, &room, &ids[1]).await;
    // Idempotent: again is 204, and says it again.
    assert_eq!(delete(&node, &room, &ids[1], Some(API_KEY)).await.0, 204);
    told_deleted(&mut b, &room, &ids[1]).await;

    let stored = history(&node, &room, "").await;
    assert_eq!(stored.len(), 3, "the tombstone keeps its place: {stored:?}");
    assert_eq!(stored[0]["text"], "one");
    assert_eq!(stored[1]["id"], ids[1].as_str());
    assert_eq!(stored[1]["deleted"], true);
    assert_eq!(stored[1]["text"], "", "the text is gone from the store");
    assert_eq!(stored[1]["seq"], 2);
    let by_seq = history(&node, &room, "?after_seq=1").await;
    assert_eq!(by_seq[0]["deleted"], true, "{by_seq:?}");
    // A recovery across it gets the tombstone in its place.
    let mut c = node.client("cat").await;
    c.send(json!({"type": "join", "room": room, "since": {"seq": 1, "epoch": first["epoch"]}}))
        .await;
    let joined = c.recv_type("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let h = joined["history"].as_array().unwrap();
    assert_eq!(h.len(), 2, "{joined}");
    assert_eq!(
        (h[0]["deleted"].as_bool(), h[0]["seq"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(h[1]["text"], "three");
    // A plain join's history too.
    let mut d = node.client("dan").await;
    let joined = d.join(&room).await;
    let h = joined["history"].as_array().unwrap();
    assert!(
        h.iter()
            .any(|m| m["id"] == ids[1].as_str() && m["deleted"] == true)
    );
    assert!(!h.iter().any(|m| m["text"] == "two"), "{joined}");
    node.stop().await;
}

#[tokio::test]
async fn a_deletion_reaches_every_node_and_the_cluster_window() {
    let prefix = unique("mod");
    let n1 = Node::clustered(&shared_url(), &prefix, config("n1")).await;
    let n2 = Node::clustered(&shared_url(), &prefix, config("n2")).await;
    let room = unique("mod");
    let mut a = n1.client("ann").await;
    let mut b = n2.client("ben").await;
    let joined = a.join(&room).await;
    b.join(&room).await;
    await_numsub(&shared_url(), &format!("{{{prefix}:{room}}}:ch"), 2).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(a.send_text(&room, text).await);
    }
    for _ in 0..3 {
        b.recv_type("message").await;
    }
    // Deleted through the other node: the window (Redis) knows the message.
    assert_eq!(delete(&n2, &room, &ids[0], Some(API_KEY)).await.0, 204);
    told_deleted(&mut a, &room, &ids[0]).await;
    told_deleted(&mut b, &room, &ids[0]).await;
    // A rejoin on either node recovers the tombstone from the window.
    for node in [&n1, &n2] {
        let mut c = node.client("cat").await;
        c.send(
            json!({"type": "join", "room": room, "since": {"seq": 0, "epoch": joined["epoch"]}}),
        )
        .await;
        let back = c.recv_type("joined").await;
        assert_eq!(back["recovered"], true, "{back}");
        let h = back["history"].as_array().unwrap();
        assert_eq!(h.len(), 3, "{back}");
        assert_eq!(
            (h[0]["id"].as_str(), h[0]["deleted"].as_bool()),
            (Some(ids[0].as_str()), Some(true))
        );
        assert_eq!(h[0]["text"], "");
        assert_eq!(
            (h[1]["text"].as_str(), h[2]["text"].as_str()),
            (Some("two"), Some("three"))
        );
    }
    // (Each node here has a store of its own; a shared store behind Kafka
    // is tested in pipeline_policies.rs.)
    n1.stop().await;
    n2.stop().await;
}

async fn disconnect(node: &Node, name: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(node.http(&format!("/api/users/{name}/disconnect")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_user_is_disconnected_on_every_node() {
    let prefix = unique("dis");
    let n1 = Node::clustered(&shared_url(), &prefix, config("n1")).await;
    let n2 = Node::clustered(&shared_url(), &prefix, config("n2")).await;
    let mut ann_here = n1.client("ann").await;
    let mut ann_there = n2.client("ann").await;
    let mut ann_again = n2.client("ann").await;
    let mut ben = n1.client("ben").await;
    let room = unique("dis");
    ben.join(&room).await;
    ann_there.join(&room).await;
    // Refusals close nothing.
    assert_eq!(disconnect(&n1, "ann", None).await.0, 401);
    let (status, body) = disconnect(&n1, "%0A", Some(API_KEY)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_name")),
        "{body}"
    );
    ann_here.send(json!({"type": "ping", "ref": 1})).await;
    assert_eq!(ann_here.recv_type("pong").await["ref"], 1);

    let (status, body) = disconnect(&n1, "ann", Some(API_KEY)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"name": "ann", "disconnected_here": 1}));
    for c in [&mut ann_here, &mut ann_there, &mut ann_again] {
        let code = tokio::time::timeout(Duration::from_secs(5), c.close_code())
            .await
            .expect("closed within 5 s");
        assert_eq!(code, Some(4002));
    }
    // Others stay, and see ann leave.
    ben.send(json!({"type": "ping", "ref": 2})).await;
    assert_eq!(ben.recv_type("pong").await["ref"], 2);
    let (status, body) = disconnect(&n2, "nobody", Some(API_KEY)).await;
    assert_eq!((status, body["disconnected_here"].as_u64()), (202, Some(0)));
    // A new connection of the name is fine afterwards.
    let mut back = n2.client("ann").await;
    back.join(&room).await;
    n1.stop().await;
    n2.stop().await;
}

/// Hostile use of both routes (with the key: a leaked key is the worst
/// case): unknown ids and names leave nothing behind and are answered in
/// bounded time; without the key nothing is done at all.
#[tokio::test]
async fn unknown_ids_and_names_leave_nothing_behind() {
    let node = Node::start("sqlite::memory:", config("n1")).await;
    let room = unique("hostile");
    let mut a = node.client("ann").await;
    a.join(&room).await;
    let kept = a.send_text(&room, "kept").await;
    let started = std::time::Instant::now();
    for i in 0..300 {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(delete(&node, &room, &id, Some(API_KEY)).await.0, 404);
        let (status, _) = disconnect(&node, &format!("ghost {i}"), Some(API_KEY)).await;
        assert_eq!(status, 202);
        // Without the key: refused before anything is looked at.
        assert_eq!(delete(&node, &room, &kept, None).await.0, 401);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "900 requests took {:?}",
        started.elapsed()
    );
    // Nothing was stored for the unknown ids, the real message is intact,
    // and its member was told of no deletion.
    let stored = history(&node, &room, "").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (stored[0]["text"].as_str(), stored[0].get("deleted")),
        (Some("kept"), None)
    );
    a.silent_for_type("deleted", Duration::from_millis(200))
        .await;
    // A path longer than any name, and a name of control characters.
    let long = "n".repeat(4000);
    assert_eq!(disconnect(&node, &long, Some(API_KEY)).await.0, 400);
    assert_eq!(disconnect(&node, "%01%02", Some(API_KEY)).await.0, 400);
    a.send(json!({"type": "ping", "ref": 1})).await;
    assert_eq!(a.recv_type("pong").await["ref"], 1);
    node.stop().await;
}
