//! Limits under abuse, on a real node: a sender flooding past its rate, a
//! connection storm past the node's cap, a connect storm from one address,
//! a client trickling its handshake, and silent connections.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Node, unique};
use futures_util::StreamExt;
use serde_json::json;
use switchboard_gateway::{GatewayConfig, Rate};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as Ws;

async fn start(config: GatewayConfig) -> Node {
    Node::start("sqlite::memory:", config).await
}

#[tokio::test]
async fn a_flood_gets_rate_limited_then_cut_while_the_room_keeps_flowing() {
    let node = start(GatewayConfig {
        send_rate: Rate {
            per_second: 20,
            burst: 40,
        },
        ..GatewayConfig::default()
    })
    .await;
    let room = unique("flood");
    let mut flooder = node.client("flooder").await;
    let mut alice = node.client("alice").await;
    let mut bob = node.client("bob").await;
    for c in [&mut flooder, &mut alice, &mut bob] {
        c.join(&room).await;
    }
    // 1,000 sends as fast as the socket takes them: 50 times the rate.
    let frames: Vec<_> = (0..1000)
        .map(|i| json!({"type": "send", "room": room, "text": format!("f{i}"), "ref": i}))
        .collect();
    let flood = tokio::spawn(async move {
        use futures_util::SinkExt;
        for f in frames {
            if flooder.ws.feed(Ws::text(f.to_string())).await.is_err() {
                break;
            }
        }
        let _ = flooder.ws.flush().await;
        let (mut limited, mut acked) = (0, 0);
        loop {
            match tokio::time::timeout(common::WAIT, flooder.ws.next()).await {
                Ok(Some(Ok(Ws::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    match v["type"].as_str() {
                        Some("error") if v["code"] == "rate_limited" => limited += 1,
                        Some("ack") => acked += 1,
                        _ => {}
                    }
                }
                Ok(Some(Ok(Ws::Close(frame)))) => {
                    return (limited, acked, frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the flooder was not closed: {other:?}"),
            }
        }
    });
    // Meanwhile the others talk normally.
    let mut from_flooder = 0;
    let started = Instant::now();
    alice.send_text(&room, "still here").await;
    loop {
        let m = bob.recv_type("message").await;
        if m["text"] == "still here" {
            break;
        }
        from_flooder += usize::from(m["from"] == "flooder");
    }
    let latency = started.elapsed();
    println!("a normal send during the flood: acked and delivered in {latency:?}");
    let (limited, acked, code) = flood.await.unwrap();
    assert_eq!(code, Some(1008), "cut past ten times the rate");
    assert!(limited > 0, "rate_limited errors came before the cut");
    // The room still works after the cut.
    alice.send_text(&room, "after").await;
    loop {
        let m = bob.recv_type("message").await;
        if m["text"] == "after" {
            break;
        }
        from_flooder += usize::from(m["from"] == "flooder");
    }
    println!(
        "flooder: {from_flooder} delivered ({acked} acked before the close), {limited} rate_limited, then close {code:?}"
    );
    assert!(
        (40..=60).contains(&from_flooder),
        "about the burst of 40 was accepted, the rest refused: {from_flooder}"
    );
    node.stop().await;
}

/// Opens `/ws`; the HTTP status of a refusal, or the open connection.
async fn try_open(addr: std::net::SocketAddr) -> Result<Client, u16> {
    open_or_refusal(addr).await.map_err(|(status, _)| status)
}

/// Opens `/ws`; the HTTP status and JSON body of a refusal, or the open
/// connection.
async fn open_or_refusal(addr: std::net::SocketAddr) -> Result<Client, (u16, serde_json::Value)> {
    common::open_ws(addr, "/ws", &[]).await
}

#[tokio::test]
async fn a_connection_storm_past_the_cap_refuses_exactly_the_excess() {
    let node = start(GatewayConfig {
        max_connections: 1000,
        ..GatewayConfig::default()
    })
    .await;
    let mut storm = JoinSet::new();
    for _ in 0..2000 {
        let addr = node.addr;
        storm.spawn(async move { try_open(addr).await });
    }
    let (mut open, mut refused) = (Vec::new(), Vec::new());
    while let Some(result) = storm.join_next().await {
        match result.unwrap() {
            Ok(client) => open.push(client),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(open.len(), 1000);
    assert_eq!(refused.len(), 1000);
    assert!(refused.iter().all(|s| *s == 503), "503 over capacity");
    let stats: serde_json::Value = reqwest::get(node.http("/api/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connections"], 1000);
    // The node still serves its members, and frees slots as they leave.
    let room = unique("r");
    open[0].join(&room).await;
    open[1].join(&room).await;
    open[0].send_text(&room, "hello").await;
    assert_eq!(open[1].recv_type("message").await["text"], "hello");
    assert_eq!(try_open(node.addr).await.err(), Some(503));
    for mut c in open.drain(..10) {
        let _ = c.ws.close(None).await;
    }
    let deadline = Instant::now() + common::WAIT;
    let mut reopened = None;
    while reopened.is_none() && Instant::now() < deadline {
        reopened = try_open(node.addr).await.ok();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "a freed slot is usable again");
    drop(open);
    node.stop().await;
}

#[tokio::test]
async fn one_address_opening_too_fast_gets_429() {
    let node = start(GatewayConfig {
        connect_rate_per_ip: Some(Rate {
            per_second: 5,
            burst: 10,
        }),
        ..GatewayConfig::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(try_open(node.addr).await.expect("within the burst"));
    }
    let Err((status, body)) = open_or_refusal(node.addr).await else {
        panic!("the eleventh connection in a burst of ten was accepted");
    };
    assert_eq!(status, 429);
    assert_eq!(body["code"], "rate_limited", "{body}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(try_open(node.addr).await.is_ok(), "the rate refills");
    node.stop().await;
}

#[tokio::test]
async fn silent_connections_are_pinged_then_closed_and_live_ones_stay() {
    let node = start(GatewayConfig {
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        ..GatewayConfig::default()
    })
    .await;
    let mut silent = node.client("silent").await;
    let mut live = node.client("live").await;
    // `live` keeps reading, so its client answers pings; `silent` reads
    // nothing (and so answers nothing) for a while.
    let live_task = tokio::spawn(async move {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(1500);
        while let Ok(next) = tokio::time::timeout_at(until.into(), live.ws.next()).await {
            match next {
                Some(Ok(Ws::Ping(_))) => pings += 1,
                Some(Ok(Ws::Close(f))) => panic!("a live connection was closed: {f:?}"),
                Some(Ok(_)) => {}
                other => panic!("a live connection ended: {other:?}"),
            }
        }
        (pings, live)
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut saw_ping = false;
    let code = loop {
        match tokio::time::timeout(common::WAIT, silent.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Ws::Ping(_))) => saw_ping = true,
            Some(Ok(Ws::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame: {other:?}"),
        }
    };
    assert!(saw_ping, "pinged before being closed");
    assert_eq!(code, Some(1001));
    let (pings, mut live) = live_task.await.unwrap();
    assert!(pings >= 2, "the live connection was pinged too: {pings}");
    let room = unique("r");
    live.join(&room).await;
    node.stop().await;
}

#[tokio::test]
async fn a_joined_frame_always_fits_and_the_rest_is_paged() {
    let node = start(GatewayConfig {
        limits: switchboard_protocol::Limits {
            max_message_bytes: 4096,
            history_default: 50,
            history_max: 500,
        },
        ..GatewayConfig::default()
    })
    .await;
    let room = unique("big");
    let mut sender = node.client("sender").await;
    sender.join(&room).await;
    // Control characters cost six bytes each on the wire: 4,096 of them
    // are far over a 4,096-byte limit.
    sender
        .send(json!({"type": "send", "room": room, "text": "\u{1}".repeat(4096), "ref": "ctl"}))
        .await;
    let refused = sender.recv_type("error").await;
    assert_eq!(refused["code"], "too_large", "{refused}");
    // 300 messages as large as allowed: 1.2 MB of history.
    let text = "x".repeat(4096);
    for i in 0..300 {
        sender
            .send(json!({"type": "send", "room": room, "text": text, "ref": i}))
            .await;
    }
    for _ in 0..300 {
        sender.recv_type("ack").await;
    }
    let mut reader = node.client("reader").await;
    reader
        .send(json!({"type": "join", "room": room, "history": 300}))
        .await;
    let joined = reader.recv_type("joined").await;
    let got = joined["history"].as_array().unwrap().len();
    let bytes = joined.to_string().len();
    println!("joined with history 300: {got} messages in {bytes} bytes, truncated");
    assert_eq!(joined["truncated"], true);
    assert!(got > 50 && got < 300, "{got}");
    assert!(bytes <= 600 * 1024, "{bytes}");
    // The connection is alive, and the rest pages out over HTTP.
    reader.send(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(reader.recv_type("pong").await["ref"], "p");
    let oldest = joined["history"][0]["id"].as_str().unwrap();
    let older: Vec<serde_json::Value> = reqwest::get(node.http(&format!(
        "/api/rooms/{room}/messages?limit=500&before={oldest}"
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(older.len() + got, 300);
    node.stop().await;
}

#[tokio::test]
async fn join_churn_does_not_grow_a_connection() {
    // The node in a process of its own, so its memory is its own.
    let node = common::process::NodeProcess::start(
        &[("RATE_LIMIT_PER_SEC", "0"), ("CONNECT_RATE_PER_IP", "0")],
        None,
    )
    .await;
    // Forty rooms with 500 messages each: 20,000 distinct ids.
    let rooms: Vec<String> = (0..40).map(|i| unique(&format!("churn{i}"))).collect();
    let mut sender = Client::connect(node.addr, "sender").await;
    for room in &rooms {
        sender.send(json!({"type": "join", "room": room})).await;
        sender.recv_type("joined").await;
        for i in 0..500 {
            sender
                .send(json!({"type": "send", "room": room, "text": format!("m{i}"), "ref": i}))
                .await;
        }
        for _ in 0..500 {
            sender.recv_type("ack").await;
        }
        sender.send(json!({"type": "leave", "room": room})).await;
        sender.recv_type("left").await;
    }
    // Each connection joins and leaves every room, 500 messages of history
    // a time, faster than the dedupe window lapses.
    let churn = async |c: &mut Client| {
        for room in &rooms {
            c.send(json!({"type": "join", "room": room, "history": 500}))
                .await;
            c.recv_type("joined").await;
            c.send(json!({"type": "leave", "room": room})).await;
            c.recv_type("left").await;
        }
    };
    // One round on a connection of its own warms the allocator up.
    churn(&mut Client::connect(node.addr, "warm").await).await;
    let mut churners = Vec::new();
    for i in 0..10 {
        churners.push(Client::connect(node.addr, &format!("churn{i}")).await);
    }
    let before = node.rss_kib();
    for c in &mut churners {
        churn(c).await;
    }
    let grown = node.rss_kib().saturating_sub(before);
    println!(
        "10 connections x 40 joins of 500 messages: the node grew {grown} KiB ({} KiB per connection)",
        grown / 10
    );
    // Unbounded, each connection kept the 20,000 ids it was sent (about
    // 700 KiB each); bounded, about 1,000 ids and its write buffer (about
    // 200 KiB).
    assert!(grown < 4608, "grew {grown} KiB");
    drop(churners);
    assert!(node.stop().success());
}
