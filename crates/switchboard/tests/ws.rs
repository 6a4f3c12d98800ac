//! The `/ws` protocol against a node started in-process.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, Node, WAIT, unique};
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;
use tokio_tungstenite::tungstenite::Message as Ws;

#[tokio::test]
async fn two_clients_exchange_messages_exactly_once() {
    let node = Node::memory().await;
    let room = unique("pair");
    let mut alice = node.client("alice").await;
    let mut bob = node.client("bob").await;
    alice.join(&room).await;
    bob.join(&room).await;

    alice
        .send(json!({"type": "send", "room": room, "text": "hi bob", "ref": "c1"}))
        .await;
    let mut ack = None;
    let mut own = Vec::new();
    while ack.is_none() || own.is_empty() {
        let v = alice.recv().await;
        match v["type"].as_str() {
            Some("ack") => ack = Some(v),
            Some("message") => own.push(v),
            _ => panic!("unexpected {v}"),
        }
    }
    let ack = ack.unwrap();
    assert_eq!(ack["ref"], "c1");
    let got = bob.recv().await;
    assert_eq!(got["type"], "message");
    assert_eq!(got["text"], "hi bob");
    assert_eq!(got["from"], "alice");
    assert_eq!(got["room"], room.as_str());
    assert_eq!(got["id"], ack["id"], "the ack carries the delivered id");
    assert_eq!(
        own,
        vec![got.clone()],
        "the sender gets its own message once"
    );
    let id = uuid::Uuid::parse_str(got["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    bob.silent_for(Duration::from_millis(300)).await;
    alice.silent_for(Duration::from_millis(100)).await;

    let reply = bob.send_text(&room, "hi alice").await;
    let at_alice = alice.recv_type("message").await;
    assert_eq!(at_alice["id"], reply.as_str());
    assert_eq!(at_alice["from"], "bob");
    node.stop().await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let node = Node::memory().await;
    let (r1, r2) = (unique("iso"), unique("iso"));
    let mut a = node.client("a").await;
    let mut b = node.client("b").await;
    a.join(&r1).await;
    b.join(&r2).await;
    a.send_text(&r1, "only r1").await;
    let own = a.recv_type("message").await;
    assert_eq!(own["text"], "only r1");
    b.silent_for(Duration::from_millis(300)).await;
    node.stop().await;
}

#[tokio::test]
async fn per_sender_order_is_kept() {
    let node = Node::memory().await;
    let room = unique("order");
    let mut a = node.client("a").await;
    let mut b = node.client("b").await;
    a.join(&room).await;
    b.join(&room).await;
    for i in 0..200 {
        a.send(json!({"type": "send", "room": room, "text": format!("m{i}")}))
            .await;
    }
    for i in 0..200 {
        let v = b.recv_type("message").await;
        assert_eq!(v["text"], format!("m{i}"));
    }
    node.stop().await;
}

#[tokio::test]
async fn history_on_join_and_over_http() {
    let node = Node::memory().await;
    let room = unique("hist");
    let mut a = node.client("a").await;
    a.join(&room).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.send_text(&room, &format!("h{i}")).await);
    }
    let mut late = node.client("late").await;
    late.send(json!({"type": "join", "room": room, "history": 3, "ref": "j"}))
        .await;
    let joined = late.recv().await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["ref"], "j");
    let texts: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["h2", "h3", "h4"], "latest three, oldest first");

    let http = reqwest::Client::new();
    let all: Vec<Value> = http
        .get(node.http(&format!("/api/rooms/{room}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    let page: Vec<Value> = http
        .get(node.http(&format!(
            "/api/rooms/{room}/messages?limit=2&before={}",
            ids[3]
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page.iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["h1", "h2"]
    );

    for (query, code) in [
        ("?limit=0", "bad_limit"),
        ("?limit=501", "bad_limit"),
        ("?limit=ten", "bad_limit"),
        ("?before=nope", "bad_before"),
    ] {
        let res = http
            .get(node.http(&format!("/api/rooms/{room}/messages{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], code, "{query}");
    }
    let res = http
        .get(node.http("/api/rooms/bad%20room/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "bad_room");
    node.stop().await;
}

#[tokio::test]
async fn restart_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("restart.db").display());
    let room = unique("keep");
    let node = Node::start(&url, GatewayConfig::default()).await;
    let mut a = node.client("a").await;
    a.join(&room).await;
    let id = a.send_text(&room, "survives").await;
    node.stop().await;

    let node = Node::start(&url, GatewayConfig::default()).await;
    let mut b = node.client("b").await;
    let joined = b.join(&room).await;
    assert_eq!(joined["history"][0]["id"], id.as_str());
    assert_eq!(joined["history"][0]["text"], "survives");
    node.stop().await;
}

#[tokio::test]
async fn retry_with_the_same_id_is_stored_and_delivered_once() {
    let node = Node::memory().await;
    let room = unique("retry");
    let mut a = node.client("a").await;
    let mut b = node.client("b").await;
    a.join(&room).await;
    b.join(&room).await;
    let id = uuid::Uuid::now_v7().to_string();
    for attempt in ["r1", "r2", "r3"] {
        a.send(json!({"type": "send", "room": room, "text": "once", "id": id, "ref": attempt}))
            .await;
        let ack = loop {
            let v = a.recv().await;
            if v["type"] == "ack" {
                break v;
            }
        };
        assert_eq!(ack["id"], id.as_str());
        assert_eq!(ack["ref"], attempt);
    }
    assert_eq!(b.recv_type("message").await["id"], id.as_str());
    b.silent_for(Duration::from_millis(300)).await;
    let stored: Vec<Value> = reqwest::get(node.http(&format!("/api/rooms/{room}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id.as_str());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_as_slow_while_others_keep_receiving() {
    let node = Node::memory().await;
    let room = unique("slow");

    // A client with a tiny receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws?name=slow", node.addr),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut slow = Client::from_stream(ws);
    slow.join(&room).await;

    let mut fast = node.client("fast").await;
    fast.join(&room).await;
    let mut sender = node.client("sender").await;
    sender.join(&room).await;

    // 8 MB in all: more than the slow client's socket buffers and queue hold.
    const N: usize = 4_000;
    let text = "y".repeat(2_000);
    // The sender waits for the fast client to keep up (at most CHUNK
    // messages behind; the sender's own queue holds its copies and acks,
    // 2 x CHUNK, well under CLIENT_QUEUE_FRAMES), so only the client that
    // never reads falls behind, however loaded the machine is.
    const CHUNK: usize = 100;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_by_fast = received.clone();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            let v = fast.recv_type("message").await;
            assert_eq!(v["from"], "sender");
            n += 1;
            seen_by_fast.store(n, std::sync::atomic::Ordering::Relaxed);
        }
        // Handed back, so the fast client stays connected.
        (n, fast)
    });
    let (mut tx, mut rx) = sender.ws.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    for chunk in 0..N / CHUNK {
        for _ in 0..CHUNK {
            let frame = json!({"type": "send", "room": room, "text": text}).to_string();
            futures_util::SinkExt::send(&mut tx, Ws::text(frame))
                .await
                .unwrap();
        }
        let target = (chunk + 1) * CHUNK;
        let paced = tokio::time::timeout(Duration::from_secs(30), async {
            while received.load(std::sync::atomic::Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        if paced.await.is_err() {
            panic!(
                "the fast client stopped at {} of {target}",
                received.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    let (got, _fast) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, N, "the fast client received every message");

    // The server lets go of the slow client without the client reading a
    // byte: only the fast client and the sender stay connected.
    let stats = node.http("/api/stats");
    let mut connections = 0;
    for _ in 0..100 {
        let v: Value = reqwest::get(&stats).await.unwrap().json().await.unwrap();
        connections = v["connections"].as_u64().unwrap();
        if connections == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connections, 2, "the slow consumer is still connected");

    // The slow one was cut off: its stream ends (after what was buffered),
    // with a 1008 close frame if the server could still write it.
    let mut seen = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow.ws.next().await {
                Some(Ok(Ws::Text(_))) => seen += 1,
                Some(Ok(Ws::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow client was never disconnected");
    assert!(matches!(ended, None | Some(1008)), "close code {ended:?}");
    assert!(
        seen < N,
        "the slow client cannot have received everything ({seen})"
    );
    drop(drain);
    node.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_1001_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("stop.db").display());
    let node = Node::start(&url, GatewayConfig::default()).await;
    let room = unique("stop");
    let mut a = node.client("a").await;
    a.join(&room).await;
    let id = a.send_text(&room, "before stop").await;
    node.shutdown.cancel();
    assert_eq!(a.close_code().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), node.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let node = Node::start(&url, GatewayConfig::default()).await;
    let stored: Vec<Value> = reqwest::get(node.http(&format!("/api/rooms/{room}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored[0]["id"], id.as_str());
    node.stop().await;
}

#[tokio::test]
async fn health_and_page() {
    let node = Node::memory().await;
    let res = reqwest::get(node.http("/healthz")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<HashMap<String, String>>().await.unwrap()["status"],
        "ok"
    );
    let res = reqwest::get(node.http("/readyz")).await.unwrap();
    assert_eq!(res.status(), 200);
    let page = reqwest::get(node.http("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"<script type="module" src="/js/app.js">"#)
    );
    // Every module the page imports, from app.js on (the client library
    // under /client/ included), is served as it is.
    let mut pending = vec!["/js/app.js".to_owned()];
    let mut sources = HashMap::new();
    while let Some(path) = pending.pop() {
        if sources.contains_key(&path) {
            continue;
        }
        let script = reqwest::get(node.http(&path)).await.unwrap();
        assert_eq!(script.status(), 200, "{path}");
        assert_eq!(
            script.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        let text = script.text().await.unwrap();
        let dir = &path[..=path.rfind('/').unwrap()];
        for import in text.split("from '").skip(1) {
            let target = import.split('\'').next().unwrap();
            pending.push(match target.strip_prefix("./") {
                Some(file) => format!("{dir}{file}"),
                None => target.to_owned(),
            });
        }
        sources.insert(path, text);
    }
    assert!(sources.len() >= 10, "{:?}", sources.keys());
    assert!(sources["/client/switchboard.js"].contains("/ws"));
    let client = reqwest::get(node.http("/client/switchboard.js"))
        .await
        .unwrap();
    assert_eq!(client.headers()["access-control-allow-origin"], "*");
    for bad in ["/client/nope.js", "/client/..%2Fapp.css", "/client/"] {
        let res = reqwest::get(node.http(bad)).await.unwrap();
        assert_eq!(res.status(), 404, "{bad}");
    }
    for bad in ["/js/nope.js", "/js/%FF", "/js/..%2Fapp.css"] {
        let res = reqwest::get(node.http(bad)).await.unwrap();
        assert_eq!(res.status(), 404, "{bad}");
        assert_eq!(res.json::<Value>().await.unwrap()["code"], "not_found");
    }
    let style = reqwest::get(node.http("/app.css")).await.unwrap();
    assert_eq!(style.status(), 200);
    let missing = reqwest::get(node.http("/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "not_found");
    let _ = WAIT;
    node.stop().await;
}

/// Bursts of 80 messages into a room whose members queue 256 frames, some
/// closer than the 10 ms flush interval and some further apart: every
/// member gets every message in order, the last burst's too, and nobody is
/// cut as slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_around_the_flush_interval_all_arrive() {
    let config = GatewayConfig {
        client_queue_frames: 256,
        send_rate: switchboard_gateway::Rate {
            per_second: 0,
            burst: 0,
        },
        ..GatewayConfig::default()
    };
    let node = Node::start("sqlite::memory:", config).await;
    let room = unique("bursts");
    let mut readers = Vec::new();
    for i in 0..4 {
        let mut c = node.client(&format!("r{i}")).await;
        c.join(&room).await;
        readers.push(c);
    }
    // Each reader reads as it comes (a reader that stops is a slow consumer).
    const BURSTS: u64 = 60;
    const BURST: usize = 80;
    const SENT: usize = BURSTS as usize * BURST;
    let tasks: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, mut reader)| {
            tokio::spawn(async move {
                let mut got = 0;
                while got < SENT {
                    let v = tokio::time::timeout(Duration::from_secs(3), reader.recv())
                        .await
                        .unwrap_or_else(|_| panic!("reader {i} got {got} of {SENT}"));
                    if v["type"] == "message" {
                        assert_eq!(v["text"], format!("m{got}"), "in order");
                        got += 1;
                    }
                }
            })
        })
        .collect();
    let mut sender = node.client("sender").await;
    sender.join(&room).await;
    let mut sent = 0;
    for burst in 0..BURSTS {
        for _ in 0..BURST {
            sender
                .send(json!({"type": "send", "room": room, "text": format!("m{sent}")}))
                .await;
            sent += 1;
        }
        // 9 to 11 ms between bursts (around the flush interval), the sender
        // reading its own copies meanwhile.
        let until = tokio::time::Instant::now() + Duration::from_millis(9 + burst % 3);
        while tokio::time::timeout_at(until, sender.recv()).await.is_ok() {}
    }
    assert_eq!(sent, SENT);
    for task in tasks {
        task.await.unwrap();
    }
    node.stop().await;
}
