//! A resent message keeps its first acceptance time, so it meets its own
//! row in the time-partitioned archive (whose key is room, id and time) and
//! is stored once: nodes journaling to Kafka (tansu), an archiver writing
//! PostgreSQL, positions from the node itself or from Redis.

mod common;

use std::time::Duration;

use common::pipeline::{
    Archiver, await_ready, await_rows, kafka, kafka_node_config, rows, setup, topic_records,
};
use common::redis::shared_url;
use common::{Client, unique};
use serde_json::json;
use switchboard_bus::RedisOptions;
use switchboard_gateway::GatewayConfig;

fn config(node: &str) -> GatewayConfig {
    GatewayConfig {
        node_id: node.into(),
        ack_timeout: Duration::from_secs(10),
        ..GatewayConfig::default()
    }
}

async fn send_id(c: &mut Client, room: &str, id: &str, text: &str) {
    c.send(json!({"type": "send", "room": room, "id": id, "text": text, "ref": text}))
        .await;
    let ack = c.recv_type("ack").await;
    assert_eq!(
        (ack["id"].as_str(), ack["ref"].as_str()),
        (Some(id), Some(text))
    );
}

/// Sends one id three times, 20 ms apart, and one other message; checks
/// the topic holds the id's records with one time and the archive one row.
async fn resend_stores_once(redis: impl Fn(&str) -> Option<RedisOptions>) {
    let s = setup().await;
    let node = kafka_node_config(&kafka(), &s, config("n1"), redis("n1")).await;
    await_ready(&node).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let room = unique("resend");
    let mut c = node.client("ann").await;
    c.join(&room).await;
    let id = uuid::Uuid::now_v7().to_string();
    for text in ["once", "twice", "thrice"] {
        send_id(&mut c, &room, &id, text).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = c.send_text(&room, "other").await;
    let records = topic_records(&s.topic);
    let times: Vec<i64> = records
        .iter()
        .filter(|r| r["id"] == id.as_str())
        .map(|r| r["ts"].as_i64().unwrap())
        .collect();
    assert_eq!(times.len(), 3, "each send was journaled: {records:?}");
    assert!(
        times.iter().all(|t| *t == times[0]),
        "every record of the id has its first time: {times:?}"
    );
    assert_eq!(await_rows(&s.schema, 2, Duration::from_secs(60)).await.0, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = rows(&s.schema).await;
    let ids: Vec<String> = stored.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(ids.len(), 2, "{stored:?}");
    assert!(ids.contains(&id) && ids.contains(&other), "{stored:?}");
    assert!(archiver.stop().success());
    node.stop().await;
}

#[tokio::test]
async fn a_resend_through_a_single_node_is_stored_once() {
    resend_stores_once(|_| None).await;
}

#[tokio::test]
async fn a_resend_through_a_clustered_node_is_stored_once() {
    let prefix = unique("rs");
    resend_stores_once(|node| Some(RedisOptions::new(shared_url(), &prefix, node))).await;
}
