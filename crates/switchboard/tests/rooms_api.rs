//! `GET /api/rooms`: the rooms with members, with their names' count, a
//! page at a time, for the API key only; on one node and across a cluster.

mod common;

use std::collections::BTreeMap;

use common::jwt::API_KEY;
use common::redis::{await_numsub, shared_url};
use common::{Node, unique};
use serde_json::Value;
use switchboard_gateway::GatewayConfig;

fn config(node: &str) -> GatewayConfig {
    common::jwt::api_config(node)
}

async fn get(node: &Node, query: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(node.http(&format!("/api/rooms{query}")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// Every page from `node`, `limit` at a time: room -> count (a room a
/// cluster's scan repeats keeps one entry) and the number of pages.
async fn all_rooms(node: &Node, limit: u32) -> (BTreeMap<String, u64>, usize) {
    let mut rooms = BTreeMap::new();
    let (mut cursor, mut pages) = (0u64, 0);
    loop {
        let (status, page) = get(
            node,
            &format!("?cursor={cursor}&limit={limit}"),
            Some(API_KEY),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for r in page["rooms"].as_array().unwrap() {
            rooms.insert(
                r["room"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            );
        }
        cursor = page["next"].as_u64().unwrap();
        if cursor == 0 || pages > 10_000 {
            return (rooms, pages);
        }
    }
}

#[tokio::test]
async fn one_node_lists_its_rooms_in_pages_for_the_api_key_only() {
    let node = Node::start("sqlite::memory:", config("solo")).await;
    let mut clients = Vec::new();
    for (name, room) in [("ann", "r1"), ("ben", "r1"), ("ann", "r2"), ("cat", "r3")] {
        let mut c = node.client(name).await;
        c.join(room).await;
        clients.push(c);
    }
    let (rooms, pages) = all_rooms(&node, 1).await;
    assert_eq!(pages, 3, "one room a page");
    let want: BTreeMap<String, u64> = [("r1", 2), ("r2", 1), ("r3", 1)]
        .into_iter()
        .map(|(r, n)| (r.to_owned(), n))
        .collect();
    assert_eq!(rooms, want);
    assert_eq!(get(&node, "", None).await.0, 401);
    assert_eq!(get(&node, "", Some("wrong")).await.0, 401);
    for bad in ["?limit=1001", "?limit=x", "?cursor=-1"] {
        let (status, body) = get(&node, bad, Some(API_KEY)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn a_cluster_lists_every_node_s_rooms_with_names_counted_once() {
    let url = shared_url();
    let prefix = unique("rl");
    let a = Node::clustered(&url, &prefix, config("rl-a")).await;
    let b = Node::clustered(&url, &prefix, config("rl-b")).await;
    let (shared, only_b) = (unique("shared"), unique("onb"));
    let mut ann_a = a.client("ann").await;
    let mut ann_b = b.client("ann").await;
    let mut ben_b = b.client("ben").await;
    ann_a.join(&shared).await;
    ann_b.join(&shared).await;
    ben_b.join(&shared).await;
    ben_b.join(&only_b).await;
    await_numsub(&url, &format!("{{{prefix}:{shared}}}:ch"), 2).await;
    // Presence reaches Redis in the background: poll until it is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (rooms, _) = all_rooms(&a, 1000).await;
        if rooms.get(&shared) == Some(&2) && rooms.get(&only_b) == Some(&1) {
            assert_eq!(rooms.len(), 2, "only this cluster's rooms: {rooms:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rooms:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}
