//! Ephemeral messages through the durable pipeline: two clustered nodes
//! journaling to Kafka (tansu) and an archiver writing PostgreSQL. Members
//! on both nodes get the ephemeral messages; the Kafka topic and the store
//! hold only the stored ones.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::pipeline::{
    Archiver, await_ready, await_rows, kafka, kafka_node_config, rows, setup, topic_records,
};
use common::redis::{await_numsub, shared_url};
use common::unique;
use serde_json::{Value, json};
use switchboard_bus::RedisOptions;
use switchboard_gateway::{GatewayConfig, Policies};

fn config(node: &str) -> GatewayConfig {
    let file = "[namespaces.typing]\nstore = false\nhistory = 0\n";
    let base = GatewayConfig::default();
    GatewayConfig {
        node_id: node.into(),
        ack_timeout: Duration::from_secs(10),
        policies: Some(Policies::parse("t.toml", file, base.policy_bounds()).unwrap()),
        ..base
    }
}

#[tokio::test]
async fn ephemeral_messages_reach_both_nodes_and_never_the_topic_or_the_store() {
    let s = setup().await;
    let prefix = unique("pp");
    let redis = |node: &str| Some(RedisOptions::new(shared_url(), &prefix, node));
    let n1 = kafka_node_config(&kafka(), &s, config("n1"), redis("n1")).await;
    let n2 = kafka_node_config(&kafka(), &s, config("n2"), redis("n2")).await;
    await_ready(&n1).await;
    await_ready(&n2).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let (typing, chat) = (format!("typing:{}", unique("t")), unique("chat"));
    let mut a = n1.client("ann").await;
    let mut b = n2.client("ben").await;
    for room in [&typing, &chat] {
        a.join(room).await;
        b.join(room).await;
        await_numsub(&shared_url(), &format!("{{{prefix}:{room}}}:ch"), 2).await;
    }
    for i in 0..5 {
        a.send(json!({"type": "send", "room": typing, "text": format!("typing {i}")}))
            .await;
    }
    let mut stored_ids = HashSet::new();
    for i in 0..3 {
        let id = a.send_text(&chat, &format!("said {i}")).await;
        stored_ids.insert(id);
    }
    let mut live = 0;
    let mut said = 0;
    while live < 5 || said < 3 {
        let m = b.recv_type("message").await;
        if m["room"] == typing.as_str() {
            assert!(m.get("seq").is_none(), "{m}");
            live += 1;
        } else {
            said += 1;
        }
    }
    assert_eq!(
        await_rows(&s.schema, 3, Duration::from_secs(60)).await,
        (3, 3)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored: HashSet<String> = rows(&s.schema)
        .await
        .iter()
        .map(|r| r.0.to_string())
        .collect();
    assert_eq!(
        stored, stored_ids,
        "the store holds the stored messages only"
    );
    let records = topic_records(&s.topic);
    assert!(
        records.iter().all(|r| r["room"] == chat.as_str()),
        "only the stored room's messages in the topic: {records:?}"
    );
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, stored_ids);
    assert!(archiver.stop().success());
    n1.stop().await;
    n2.stop().await;
}

/// The `data` column of every row, by message id.
async fn stored_data(schema: &str) -> std::collections::HashMap<String, (String, Option<Value>)> {
    let pool = sqlx::PgPool::connect(&common::pipeline::pg_base())
        .await
        .unwrap();
    let rows: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT id, body, data::text FROM {schema}.messages"),
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, body, data)| {
            let data = data.map(|d| serde_json::from_str(&d).unwrap());
            (id.to_string(), (body, data))
        })
        .collect()
}

#[tokio::test]
async fn json_data_goes_through_the_topic_into_jsonb_and_history_and_deletions_too() {
    let s = setup().await;
    let file = "[namespaces.game]\ndata = true\n";
    let base = common::jwt::api_config("n1");
    let gateway = GatewayConfig {
        ack_timeout: Duration::from_secs(10),
        policies: Some(Policies::parse("t.toml", file, base.policy_bounds()).unwrap()),
        ..base
    };
    let n1 = kafka_node_config(&kafka(), &s, gateway, None).await;
    await_ready(&n1).await;
    let archiver = Archiver::start(&kafka(), &s.topic, &s.group, &s.db);
    let room = format!("game:{}", unique("g"));
    let mut a = n1.client("ann").await;
    let mut b = n1.client("ben").await;
    let plain = unique("plain");
    a.join(&plain).await;
    a.join(&room).await;
    b.join(&room).await;
    let board = json!({"move": "e2e4", "clock": [300, 297.5], "check": false, "note": "ünï \"q\""});
    a.send(json!({"type": "send", "room": room, "data": board, "ref": 1}))
        .await;
    let first = a.recv_type("ack").await["id"].as_str().unwrap().to_owned();
    a.send(
        json!({"type": "send", "room": room, "text": "with a move", "data": [1, null], "ref": 2}),
    )
    .await;
    let second = a.recv_type("ack").await["id"].as_str().unwrap().to_owned();
    // Text-only rooms refuse data.
    a.send(json!({"type": "send", "room": plain, "data": 1, "ref": 3}))
        .await;
    let refused = a.recv_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["ref"].as_i64()),
        (Some("forbidden"), Some(3))
    );
    let m1 = b.recv_type("message").await;
    assert_eq!((&m1["data"], &m1["text"]), (&board, &json!("")));
    let m2 = b.recv_type("message").await;
    assert_eq!(
        (&m2["data"], m2["text"].as_str()),
        (&json!([1, null]), Some("with a move"))
    );
    await_rows(&s.schema, 2, Duration::from_secs(60)).await;
    let stored = stored_data(&s.schema).await;
    assert_eq!(
        stored[&first],
        (String::new(), Some(board.clone())),
        "jsonb holds the value"
    );
    assert_eq!(
        stored[&second],
        ("with a move".into(), Some(json!([1, null])))
    );
    let records = topic_records(&s.topic);
    assert!(records.iter().all(|r| r["v"] == 2), "{records:?}");
    assert!(records.iter().any(|r| r["data"] == board));
    let history: Value = reqwest::get(n1.http(&format!("/api/rooms/{room}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = history.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{history}");
    assert_eq!(
        (&listed[0]["data"], &listed[1]["data"]),
        (&board, &json!([1, null]))
    );
    // A join's history carries it too.
    let mut c = n1.client("cat").await;
    let joined = c.join(&room).await;
    assert_eq!(joined["history"][0]["data"], board);
    // Deleted: the tombstone goes through the topic, the archiver empties
    // the row and keeps its id and position.
    let status = reqwest::Client::new()
        .delete(n1.http(&format!("/api/rooms/{room}/messages/{first}")))
        .bearer_auth(common::jwt::API_KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert_eq!(c.recv_type("deleted").await["id"], first.as_str());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stored_data(&s.schema).await[&first].1.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the archiver applies the tombstone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = sqlx::PgPool::connect(&common::pipeline::pg_base())
        .await
        .unwrap();
    let (body, gone, seq): (String, bool, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT body, deleted_at IS NOT NULL, seq FROM {}.messages WHERE id = '{first}'",
        s.schema
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!((body.as_str(), gone, seq), ("", true, 1));
    assert_eq!(stored_data(&s.schema).await.len(), 2, "no row added");
    let records = topic_records(&s.topic);
    assert!(
        records
            .iter()
            .any(|r| r["id"] == first.as_str() && r["deleted"] == true)
    );
    assert!(archiver.stop().success());
    n1.stop().await;
}
