//! Positions on a single node: every message of a room gets seq 1, 2, 3, ...
//! in the room's epoch, live and in history; a resend keeps its position;
//! a restart continues the count in the same epoch.

mod common;

use common::{Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

fn position(m: &Value) -> (u64, String) {
    (
        m["seq"].as_u64().unwrap_or(0),
        m["epoch"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn messages_of_a_room_are_numbered_in_order_without_gaps() {
    let node = Node::memory().await;
    let (room, other) = (unique("pos"), unique("pos-other"));
    let mut a = node.client("a").await;
    let mut b = node.client("b").await;
    for c in [&mut a, &mut b] {
        c.join(&room).await;
        c.join(&other).await;
    }
    for i in 0..20 {
        a.send(json!({"type": "send", "room": room, "text": format!("a{i}")}))
            .await;
        b.send(json!({"type": "send", "room": room, "text": format!("b{i}")}))
            .await;
    }
    a.send_text(&other, "elsewhere").await;
    // Both members see the same 40 messages, numbered 1..=40 in the order
    // they arrive, in one epoch; the other room counts on its own.
    for c in [&mut a, &mut b] {
        let mut seen = Vec::new();
        let mut epoch = None;
        while seen.len() < 40 {
            let m = c.recv_type("message").await;
            if m["room"] != room.as_str() {
                assert_eq!(position(&m).0, 1, "{m}");
                continue;
            }
            let (seq, e) = position(&m);
            assert!(!e.is_empty(), "{m}");
            assert_eq!(epoch.get_or_insert(e.clone()), &e);
            seen.push(seq);
        }
        assert_eq!(seen, (1..=40).collect::<Vec<_>>());
    }
    // History carries the positions too.
    let mut late = node.client("late").await;
    let joined = late.join(&room).await;
    let history: Vec<u64> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| position(m).0)
        .collect();
    assert_eq!(history, (1..=40).collect::<Vec<_>>());
    node.stop().await;
}

#[tokio::test]
async fn a_resend_keeps_its_position_and_is_delivered_once() {
    let node = Node::memory().await;
    let room = unique("resend");
    let mut a = node.client("a").await;
    let mut b = node.client("b").await;
    a.join(&room).await;
    b.join(&room).await;
    let id = uuid::Uuid::now_v7().to_string();
    for r in ["first", "again"] {
        a.send(json!({"type": "send", "room": room, "text": "once", "id": id, "ref": r}))
            .await;
        let ack = a.recv_type("ack").await;
        assert_eq!(ack["id"], id.as_str());
    }
    a.send_text(&room, "next").await;
    let first = b.recv_type("message").await;
    assert_eq!(
        (first["id"].as_str(), position(&first).0),
        (Some(id.as_str()), 1)
    );
    let next = b.recv_type("message").await;
    assert_eq!(position(&next).0, 2, "the resend took no position: {next}");
    node.stop().await;
}

#[tokio::test]
async fn a_restart_continues_the_count_in_the_same_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("positions.db").display());
    let room = unique("restart");
    let node = Node::start(&url, GatewayConfig::default()).await;
    let mut a = node.client("a").await;
    a.join(&room).await;
    a.send_text(&room, "one").await;
    a.send_text(&room, "two").await;
    let before = position(&a.recv_type("message").await);
    node.stop().await;

    let node = Node::start(&url, GatewayConfig::default()).await;
    let mut b = node.client("b").await;
    b.join(&room).await;
    b.send_text(&room, "three").await;
    let after = position(&b.recv_type("message").await);
    assert_eq!(after, (3, before.1.clone()), "continues after {before:?}");
    node.stop().await;
}
