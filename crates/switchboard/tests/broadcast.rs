//! `POST /api/broadcast`: one server message to many rooms, each room's
//! policy checked before anything is sent, idempotent by the broadcast's
//! id, bounded in size and time; data and live-only rooms (202).

mod common;

use common::jwt::API_KEY;
use common::policies::{join, node, stored};
use common::{Node, unique};
use serde_json::{Value, json};

async fn post_broadcast(node: &Node, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(node.http("/api/broadcast"))
        .json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_broadcast_reaches_every_room_once_even_when_retried_and_bad_ones_send_nothing() {
    let node = node().await;
    let mut reader = node.client("reader").await;
    let rooms = ["news:a", "news:b", "plain-x"];
    for room in rooms {
        join(&mut reader, room).await;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"rooms": rooms, "text": "maintenance at noon", "from": "ops", "id": id});
    let (status, answer) = post_broadcast(&node, Some(API_KEY), body.clone()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["id"], id.as_str());
    let messages = answer["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    let mut got: Vec<String> = Vec::new();
    for _ in rooms {
        let m = reader.recv_type("message").await;
        assert_eq!(
            (m["text"].as_str(), m["from"].as_str()),
            (Some("maintenance at noon"), Some("ops"))
        );
        got.push(m["room"].as_str().unwrap().to_owned());
    }
    got.sort();
    assert_eq!(got, rooms.map(str::to_owned).to_vec());
    // A retry with the same id: the same messages, nothing delivered or stored twice.
    let (status, again) = post_broadcast(&node, Some(API_KEY), body).await;
    assert_eq!(status, 201, "{again}");
    let ids_and_seqs = |a: &Value| -> Vec<(Value, Value)> {
        let all = a["messages"].as_array().unwrap();
        all.iter()
            .map(|m| (m["id"].clone(), m["seq"].clone()))
            .collect()
    };
    assert_eq!(
        ids_and_seqs(&again),
        ids_and_seqs(&answer),
        "the same ids and positions"
    );
    reader
        .silent_for_type("message", std::time::Duration::from_millis(300))
        .await;
    for room in rooms {
        assert_eq!(stored(&node, room).await.len(), 1, "{room}");
    }

    // Refusals send nothing.
    let long = "x".repeat(300);
    for (key, body, status, code) in [
        (
            None,
            json!({"rooms": ["a"], "text": "x", "from": "ops"}),
            401,
            "unauthorized",
        ),
        (
            Some("wrong"),
            json!({"rooms": ["a"], "text": "x", "from": "ops"}),
            401,
            "unauthorized",
        ),
        (
            Some(API_KEY),
            json!({"rooms": [], "text": "x", "from": "ops"}),
            400,
            "bad_request",
        ),
        (
            Some(API_KEY),
            json!({"rooms": "a", "text": "x", "from": "ops"}),
            400,
            "bad_request",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["a", "a"], "text": "x", "from": "ops"}),
            400,
            "bad_request",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["a", "no space"], "text": "x", "from": "ops"}),
            400,
            "bad_room",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["a"], "text": "", "from": "ops"}),
            400,
            "bad_frame",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["a"], "text": "x"}),
            400,
            "bad_name",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["plain-x", "typing:z"], "text": long, "from": "ops"}),
            413,
            "too_large",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["plain-x"], "text": "x", "from": "ops", "ephemeral": true}),
            403,
            "forbidden",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["typing:z", "plain-x"], "data": {"k": 1}, "from": "ops"}),
            403,
            "forbidden",
        ),
        (
            Some(API_KEY),
            json!({"rooms": ["plain-x"], "text": "x", "from": " ops"}),
            400,
            "bad_name",
        ),
    ] {
        let (got_status, answer) = post_broadcast(&node, key, body.clone()).await;
        assert_eq!(
            (got_status, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
    let (status, answer) = post_broadcast(
        &node,
        Some(API_KEY),
        json!({"rooms": too_many, "text": "x", "from": "ops"}),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("bad_request")),
        "{answer}"
    );
    reader
        .silent_for_type("message", std::time::Duration::from_millis(200))
        .await;

    // The largest broadcast is bounded in time.
    let most: Vec<String> = (0..1000).map(|i| format!("bulk-{i}")).collect();
    let started = std::time::Instant::now();
    let (status, answer) = post_broadcast(
        &node,
        Some(API_KEY),
        json!({"rooms": most, "text": "all", "from": "ops"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["messages"].as_array().unwrap().len(), 1000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    node.stop().await;
}

#[tokio::test]
async fn a_broadcast_carries_data_and_a_live_only_one_answers_202() {
    let node = node().await;
    let mut reader = node.client("reader").await;
    let rooms = [
        format!("typing:{}", unique("a")),
        format!("typing:{}", unique("b")),
    ];
    for room in &rooms {
        join(&mut reader, room).await;
    }
    let (status, answer) = post_broadcast(
        &node,
        Some(API_KEY),
        json!({"rooms": rooms, "data": {"typing": ["ann"]}, "from": "ops"}),
    )
    .await;
    assert_eq!(status, 202, "typing stores nothing: {answer}");
    for m in answer["messages"].as_array().unwrap() {
        assert_eq!(m["data"], json!({"typing": ["ann"]}));
        assert!(m.get("seq").is_none(), "{m}");
    }
    for _ in &rooms {
        let m = reader.recv_type("message").await;
        assert_eq!(
            (&m["data"], m["text"].as_str()),
            (&json!({"typing": ["ann"]}), Some(""))
        );
    }
    // One room's message through the publish API: 202 as well.
    let res = reqwest::Client::new()
        .post(node.http(&format!("/api/rooms/{}/messages", rooms[0])))
        .bearer_auth(API_KEY)
        .json(&json!({"data": [1], "from": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(reader.recv_type("message").await["data"], json!([1]));
    node.stop().await;
}
