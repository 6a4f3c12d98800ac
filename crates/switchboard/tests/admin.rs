//! The admin console's endpoints: off without ADMIN_TOKEN; the login sets
//! an HttpOnly, SameSite=Strict session cookie that every node sharing the
//! token accepts; wrong tokens are refused and counted, and one address
//! gets 10 attempts a minute; every console endpoint refuses a request
//! without the session; the live stream sends a snapshot a second (both
//! nodes of a cluster, the busiest rooms, readiness) to at most 32 viewers
//! per node; the actions (room look-up, disconnect, delete) work as the
//! server API's. An archiver's heartbeat (through PostgreSQL) shows in
//! the console of a node on the same store.

mod common;

use std::time::{Duration, Instant};

use common::pipeline::{Archiver, await_ready, await_rows, kafka, kafka_node_config, setup};
use common::redis::shared_url;
use common::{Node, metrics_handle, unique};
use serde_json::{Value, json};
use switchboard_gateway::{AdminToken, GatewayConfig, TrustedProxies};

const TOKEN: &str = "admin-token-0123456789";

fn config(node: &str) -> GatewayConfig {
    GatewayConfig {
        node_id: node.into(),
        admin_token: Some(AdminToken(TOKEN.into())),
        ..GatewayConfig::default()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Logs in with `token`: the status, and the cookie's `name=value` and
/// attributes when one was set.
async fn login(node: &Node, token: &str, from: Option<&str>) -> (u16, Option<String>) {
    let mut req = http()
        .post(node.http("/admin/login"))
        .json(&json!({ "token": token }));
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    let res = req.send().await.unwrap();
    let cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), cookie)
}

/// The `name=value` part of a Set-Cookie.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn get(node: &Node, path: &str, cookie: Option<&str>) -> (u16, Value) {
    let mut req = http().get(node.http(path));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// Opens the live stream and returns its first snapshot.
async fn snapshot(node: &Node, cookie: &str) -> Value {
    let mut res = http()
        .get(node.http("/admin/live"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), res.chunk())
            .await
            .expect("a snapshot within 5 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if let Some(at) = text.find("event: snapshot\ndata: ") {
            let rest = &text[at + "event: snapshot\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return serde_json::from_str(&rest[..end]).unwrap();
            }
        }
    }
}

fn counter(name: &str, label: &str) -> f64 {
    let text = metrics_handle().render();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn the_console_is_off_without_a_token() {
    let node = Node::start("sqlite::memory:", GatewayConfig::default()).await;
    for path in [
        "/admin",
        "/admin/live",
        "/admin/js/admin.js",
        "/admin/api/rooms/x",
    ] {
        let (status, body) = get(&node, path, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    assert_eq!(login(&node, TOKEN, None).await.0, 404);
    node.stop().await;
}

#[tokio::test]
async fn wrong_tokens_are_refused_counted_and_limited_per_address() {
    let mut gateway = config("n1");
    gateway.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
    let node = Node::start("sqlite::memory:", gateway).await;
    // Nothing of the console answers without a session.
    for path in [
        "/admin/live",
        "/admin/api/session",
        "/admin/api/rooms/lobby",
    ] {
        let (status, body) = get(&node, path, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let (status, _) = get(&node, path, Some("switchboard_admin=1.2.3")).await;
        assert_eq!(status, 401, "{path} with a forged cookie");
    }
    let res = http()
        .post(node.http("/admin/api/users/ann/disconnect"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The page itself is public (it only shows the login form).
    let page = http().get(node.http("/admin")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("admin-token"));

    let refused = counter("switchboard_admin_logins_total", "result=\"refused\"");
    let (status, cookie) = login(&node, "not-the-admin-token", Some("203.0.113.7")).await;
    assert_eq!((status, cookie), (401, None));
    assert!(
        counter("switchboard_admin_logins_total", "result=\"refused\"") >= refused + 1.0,
        "the refusal is counted"
    );
    // Bad bodies: not JSON, no token, too large.
    for body in [
        "token=x".to_owned(),
        "{}".to_owned(),
        format!("{{\"token\":\"{}\"}}", "x".repeat(2_000)),
    ] {
        let res = http()
            .post(node.http("/admin/login"))
            .header("x-forwarded-for", "203.0.113.8")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    }
    // One address: 10 attempts a minute, then 429 even for the right token,
    // answered at once; another address is not affected.
    for _ in 0..10 {
        assert_eq!(
            login(&node, "wrong-token-0123456", Some("203.0.113.9"))
                .await
                .0,
            401
        );
    }
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(login(&node, TOKEN, Some("203.0.113.9")).await.0, 429);
    }
    let took = started.elapsed();
    eprintln!("200 limited login attempts answered in {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "200 limited attempts took {took:?}"
    );
    assert!(counter("switchboard_admin_logins_total", "result=\"limited\"") >= 200.0);
    let (status, cookie) = login(&node, TOKEN, Some("203.0.113.10")).await;
    assert_eq!(status, 204);
    let cookie = cookie.unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure");
    let session = pair(&cookie);
    assert!(!session.contains(TOKEN), "the token is not in the cookie");
    assert_eq!(
        get(&node, "/admin/api/session", Some(&session)).await.0,
        204
    );
    // A request another site's page made is refused even with the cookie.
    let res = http()
        .get(node.http("/admin/api/session"))
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Over TLS (as a trusted proxy says) the cookie is Secure.
    let res = http()
        .post(node.http("/admin/login"))
        .header("x-forwarded-for", "203.0.113.11")
        .header("x-forwarded-proto", "https")
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    node.stop().await;
}

#[tokio::test]
async fn live_streams_are_bounded_per_node() {
    let node = Node::start("sqlite::memory:", config("n1")).await;
    let session = pair(&login(&node, TOKEN, None).await.1.unwrap());
    let mut open = Vec::new();
    for _ in 0..32 {
        let res = http()
            .get(node.http("/admin/live"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let (status, body) = get(&node, "/admin/live", Some(&session)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_viewers"))
    );
    // A viewer that leaves gives its place back.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = http()
            .get(node.http("/admin/live"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(open);
    node.stop().await;
}

#[tokio::test]
async fn a_cluster_is_seen_from_either_node_and_the_actions_work() {
    let prefix = unique("adm");
    let n1 = Node::clustered(&shared_url(), &prefix, config("adm-1")).await;
    let n2 = Node::clustered(&shared_url(), &prefix, config("adm-2")).await;
    let room = unique("busy");
    let mut ann = n1.client("ann").await;
    ann.join(&room).await;
    let mut ben = n2.client("ben").await;
    ben.join(&room).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(ann.send_text(&room, &format!("m{i}")).await);
    }
    // A session from node 1 is good on node 2 (the same token signs it).
    let session = pair(&login(&n1, TOKEN, None).await.1.unwrap());
    assert_eq!(get(&n2, "/admin/api/session", Some(&session)).await.0, 204);
    let other = GatewayConfig {
        admin_token: Some(AdminToken("another-admin-token-0123".into())),
        ..config("adm-3")
    };
    let n3 = Node::start("sqlite::memory:", other).await;
    assert_eq!(get(&n3, "/admin/api/session", Some(&session)).await.0, 401);
    n3.stop().await;

    // Both nodes, from node 2's stream, with the room's traffic.
    let deadline = Instant::now() + Duration::from_secs(15);
    let snap = loop {
        for i in 0..5 {
            ann.send_text(&room, &format!("more{i}")).await;
        }
        let snap = snapshot(&n2, &session).await;
        let ids: Vec<&str> = snap["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["id"].as_str())
            .collect();
        let busy = snap["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == room.as_str() && r["per_s"].as_f64().unwrap() > 0.0);
        if ids == ["adm-1", "adm-2"] && busy {
            break snap;
        }
        assert!(Instant::now() < deadline, "{snap}");
    };
    assert_eq!(snap["node"], "adm-2");
    assert_eq!(snap["ready"]["down"], json!([]));
    let n1_status = snap["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "adm-1")
        .unwrap();
    assert!(
        n1_status["connections"].as_u64().unwrap() >= 1,
        "{n1_status}"
    );
    assert_eq!(n1_status["address"], n1.addr.to_string());
    assert_eq!(n1_status["version"], env!("CARGO_PKG_VERSION"));
    assert!(n1_status["rss_bytes"].as_u64().unwrap() > 1 << 20);

    // Look-up: the room's names across the cluster and its last messages
    // (from the store: here each node has its own, node 1's has them).
    let (status, lookup) = get(&n1, &format!("/admin/api/rooms/{room}"), Some(&session)).await;
    assert_eq!(status, 200, "{lookup}");
    assert_eq!(lookup["count"], 2);
    let texts: Vec<&str> = lookup["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"m0"), "{lookup}");
    let (status, body) = get(&n2, "/admin/api/rooms/has%20space", Some(&session)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_room")));

    // Delete a message (node 1 accepted it; asked on node 1, whose store has it).
    let res = http()
        .delete(n1.http(&format!("/admin/api/rooms/{room}/messages/{}", ids[0])))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let deleted = ben.recv_type("deleted").await;
    assert_eq!(deleted["id"], ids[0].as_str());

    // Disconnect ben (on node 2) from node 1.
    let res = http()
        .post(n1.http("/admin/api/users/ben/disconnect"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(ben.close_code().await, Some(4002));
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archivers_heartbeat_shows_in_the_console() {
    let s = setup().await;
    let node = kafka_node_config(&kafka(), &s, config("adm-k"), None).await;
    await_ready(&node).await;
    let archiver = Archiver::start_with(
        &kafka(),
        &s.topic,
        &s.group,
        &s.db,
        &[("NODE_ID", "archiver-7")],
    );
    let room = unique("arch");
    let mut c = node.client("ann").await;
    c.join(&room).await;
    for i in 0..20 {
        c.send_text(&room, &format!("m{i}")).await;
    }
    await_rows(&s.schema, 20, Duration::from_secs(60)).await;
    let session = pair(&login(&node, TOKEN, None).await.1.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let process = loop {
        let snap = snapshot(&node, &session).await;
        let found = snap["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "archiver-7")
            .cloned();
        if let Some(p) = found
            && p["status"]["records"].as_u64() >= Some(20)
            && p["status"]["lag_total"] == 0
            && !p["status"]["lag"].as_object().unwrap().is_empty()
        {
            break p;
        }
        assert!(Instant::now() < deadline, "{snap}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(process["kind"], "archive");
    assert_eq!(process["status"]["group"], s.group.as_str());
    // The journal's part of this node's status.
    let snap = snapshot(&node, &session).await;
    assert_eq!(snap["nodes"][0]["journal"]["kind"], "kafka");
    assert_eq!(snap["ready"]["down"], json!([]));
    assert!(archiver.stop().success());
    node.stop().await;
}
