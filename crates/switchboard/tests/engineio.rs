//! Hostile clients on Socket.IO's transport, spoken by hand over engine.io
//! long-polling the way an attacker would: sessions that never connect a
//! namespace, CONNECT floods that fill the socket's buffer, binary
//! attachments, handshake storms, and requests from another origin.

mod common;

use std::time::{Duration, Instant};

use common::{Node, unique};
use serde_json::Value;
use switchboard_gateway::{AllowedOrigins, AuthConfig, GatewayConfig, Rate};

async fn start(config: GatewayConfig) -> Node {
    Node::start("sqlite::memory:", config).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Opens an engine.io polling session; its sid, or the refusal's status
/// and JSON body.
async fn handshake(node: &Node, origin: Option<&str>) -> Result<String, (u16, Value)> {
    let mut request = http().get(node.http("/socket.io/?EIO=4&transport=polling"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    if status != 200 {
        return Err((status, serde_json::from_str(&body).unwrap_or_default()));
    }
    // `0{"sid":"..",...}`
    let open: Value = serde_json::from_str(body.trim_start_matches('0')).unwrap();
    Ok(open["sid"].as_str().unwrap().to_owned())
}

/// Posts engine.io packets (joined with the record separator) to a session.
async fn post(node: &Node, sid: &str, packets: &[String], origin: Option<&str>) -> u16 {
    let mut request = http()
        .post(node.http(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}")))
        .body(packets.join("\u{1e}"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Whether the session still exists: a PONG packet posted to a closed
/// session is refused. (Not a poll: a second poll while one is held is
/// refused too, whatever the session's state.)
async fn session_alive(node: &Node, sid: &str) -> bool {
    post(node, sid, &["3".to_owned()], None).await == 200
}

async fn stats(node: &Node) -> Value {
    http()
        .get(node.http("/api/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits up to `within` for `check` to hold.
async fn eventually<F: AsyncFn() -> bool>(within: Duration, check: F) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn sockets_whose_connect_cannot_be_answered_give_back_their_slots_and_rooms() {
    let node = start(GatewayConfig {
        max_connections: 10,
        client_queue_frames: 64,
        // A frame budget that lets the whole body through: the ghost is
        // made by the full buffer, not stopped at the door.
        send_rate: Rate {
            per_second: 100,
            burst: 100,
        },
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(900),
        // socketioxide holds a session whose CONNECT failed until its
        // namespace-connect deadline, which is the handshake timeout.
        handshake_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    // Each ghost: a session that never reads, one body of CONNECTs to
    // unknown namespaces (whose error replies fill the socket's buffer),
    // then a CONNECT to `/` that cannot be answered.
    let mut packets: Vec<String> = (0..100).map(|i| format!("40/nope{i},")).collect();
    packets.push("40".into());
    for _ in 0..6 {
        let sid = handshake(&node, None).await.expect("admitted");
        post(&node, &sid, &packets, None).await;
    }
    // The node got its slots back: from the sessions' end, not "never".
    let freed = eventually(Duration::from_secs(10), async || {
        let s = stats(&node).await;
        s["connections"] == 0 && s["rooms"] == 0
    })
    .await;
    println!("ghost sessions released their slots and rooms after {freed:?}");
    assert!(
        freed.is_some(),
        "slots or rooms held: {}",
        stats(&node).await
    );
    // And every slot is usable again: ten /ws clients get in.
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(node.client(&format!("c{i}")).await);
    }
    let room = unique("after");
    clients[0].join(&room).await;
    node.stop().await;
}

#[tokio::test]
async fn a_post_with_more_packets_than_the_frame_budget_is_refused() {
    let node = start(GatewayConfig {
        send_rate: Rate {
            per_second: 20,
            burst: 40,
        },
        ..GatewayConfig::default()
    })
    .await;
    let sid = handshake(&node, None).await.unwrap();
    let flood: Vec<String> = (0..1_100).map(|i| format!("40/n{i},")).collect();
    assert_eq!(post(&node, &sid, &flood, None).await, 429);
    // Within the budget is fine.
    assert_eq!(post(&node, &sid, &["40".to_owned()], None).await, 200);
    node.stop().await;
}

#[tokio::test]
async fn binary_attachments_are_refused_before_they_take_memory() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    // The node in a process of its own, so its memory is its own.
    let node = common::process::NodeProcess::start(&[("CONNECT_RATE_PER_IP", "0")], None).await;
    let before = node.rss_kib();
    // Eight engine.io sessions over WebSocket that never CONNECT a
    // namespace, each announcing a binary event with 1,000 attachments and
    // streaming 60 KiB binary frames: before, each buffered up to 10 MB.
    let mut sessions = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let addr = node.addr;
        sessions.spawn(async move {
            let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let announce = r#"451000-["send",{"_placeholder":true,"num":0}]"#;
            ws.send(Ws::text(announce)).await.unwrap();
            let chunk = vec![7u8; 60 * 1024];
            let mut sent = 0;
            for _ in 0..150 {
                if ws.send(Ws::binary(chunk.clone())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            // Then hold the connection, answering pings, as a live client.
            let held = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(m)) = ws.next().await {
                    if m.to_text().is_ok_and(|t| t == "2") {
                        let _ = ws.send(Ws::text("3")).await;
                    }
                }
            })
            .await
            .is_err();
            (sent, held)
        });
    }
    let grown = node.rss_kib().saturating_sub(before);
    let mut outcomes = Vec::new();
    while let Some(done) = sessions.join_next().await {
        outcomes.push(done.unwrap());
    }
    let grown = grown.max(node.rss_kib().saturating_sub(before));
    println!(
        "8 sessions streaming attachments: (frames sent, connection held) {outcomes:?}; the node grew {grown} KiB"
    );
    assert!(
        outcomes.iter().all(|(_, held)| !held),
        "a session announcing attachments was kept open"
    );
    assert!(grown < 16 * 1024, "the node grew {grown} KiB");
    assert!(node.stop().success());
}

#[tokio::test]
async fn a_session_that_connects_no_namespace_is_closed_and_counted_meanwhile() {
    let node = start(GatewayConfig {
        max_connections: 3,
        handshake_timeout: Duration::from_millis(500),
        ..GatewayConfig::default()
    })
    .await;
    let sids = [
        handshake(&node, None).await.unwrap(),
        handshake(&node, None).await.unwrap(),
        handshake(&node, None).await.unwrap(),
    ];
    // Sessions count against the cap before any CONNECT.
    let (status, body) = handshake(&node, None).await.unwrap_err();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("over_capacity"))
    );
    assert_eq!(stats(&node).await["connections"], 3);
    // Never connected: closed at the handshake deadline, slots given back.
    let gone = eventually(Duration::from_secs(5), async || {
        stats(&node).await["connections"] == 0
    })
    .await;
    println!("unconnected sessions closed after {gone:?}");
    assert!(gone.is_some());
    for sid in &sids {
        assert!(!session_alive(&node, sid).await);
    }
    assert!(handshake(&node, None).await.is_ok());
    node.stop().await;
}

#[tokio::test]
async fn engine_io_handshakes_take_from_the_connect_rate() {
    let node = start(GatewayConfig {
        connect_rate_per_ip: Some(Rate {
            per_second: 5,
            burst: 10,
        }),
        ..GatewayConfig::default()
    })
    .await;
    let mut refused = Vec::new();
    for _ in 0..30 {
        if let Err((status, body)) = handshake(&node, None).await {
            refused.push((status, body["code"].clone()));
        }
    }
    println!(
        "30 handshakes at once with a burst of 10: {} refused",
        refused.len()
    );
    assert!(refused.len() >= 19, "{} refused", refused.len());
    assert!(
        refused
            .iter()
            .all(|(s, c)| *s == 429 && c == "rate_limited")
    );
    node.stop().await;
}

#[tokio::test]
async fn the_origin_is_checked_on_every_engine_io_request() {
    let node = start(GatewayConfig {
        auth: AuthConfig {
            allowed_origins: AllowedOrigins::List(vec!["https://chat.example".into()]),
            ..AuthConfig::default()
        },
        ..GatewayConfig::default()
    })
    .await;
    let (status, body) = handshake(&node, Some("https://evil.example"))
        .await
        .unwrap_err();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden_origin"))
    );
    // A session opened from the right origin cannot be driven from another.
    let sid = handshake(&node, Some("https://chat.example"))
        .await
        .unwrap();
    assert_eq!(
        post(&node, &sid, &["40".into()], Some("https://evil.example")).await,
        403
    );
    assert_eq!(
        post(&node, &sid, &["40".into()], Some("https://chat.example")).await,
        200
    );
    node.stop().await;
}
