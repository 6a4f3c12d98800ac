//! Durable webhooks: `switchboard hooks` processes read the journal topic
//! (tansu) and POST signed batches to a receiver that checks every
//! signature, fails 30% of the requests, sometimes hangs past the timeout,
//! and is down for a while; the hooks process is killed with SIGKILL and
//! restarted mid-stream. Every acked message reaches the receiver at least
//! once, each room's first deliveries in order; a receiver with another
//! secret refuses everything, and the batches end in webhook_dead_letters.
//! Presence changes, produced by the nodes to the events topic, reach the
//! endpoints that ask for them as member and room events, once per name
//! (not per connection), from a single node and from a cluster.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::pipeline::{await_ready, kafka, kafka_node, pg_base, setup};
use common::redis::free_port;
use common::unique;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "hooks-secret-0123456789";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Every event key taken (2xx answered), with repeats.
    taken: Vec<String>,
    /// Per room, the seqs of first deliveries, in arrival order.
    first: HashMap<String, Vec<u64>>,
    /// Per room, first deliveries of presence events: (type, name, count).
    presence: HashMap<String, Vec<(String, String, u64)>>,
    keys: HashSet<String>,
    bad_signatures: u64,
    requests: u64,
}

/// A receiver on `port` that checks signatures with `secret`; `flaky`:
/// fails 30% of the requests and hangs past the timeout now and then.
struct Receiver {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    port: u16,
    secret: &'static str,
    flaky: bool,
}

fn valid(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("x-switchboard-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-switchboard-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Ok(ts) = ts.parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(ts) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sig == format!("sha256={hex}")
}

impl Receiver {
    fn new(secret: &'static str, flaky: bool) -> Self {
        Self {
            seen: Arc::default(),
            stop: CancellationToken::new(),
            port: free_port(),
            secret,
            flaky,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Starts answering (again).
    async fn start(&mut self) {
        self.stop = CancellationToken::new();
        let (seen, secret, flaky) = (self.seen.clone(), self.secret, self.flaky);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.requests += 1;
                        s.requests
                    };
                    if !valid(secret, &headers, &body) {
                        seen.lock().unwrap().bad_signatures += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    if flaky && n % 10 < 3 {
                        if n % 20 == 1 {
                            // Past the hooks' 1 s timeout.
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let events: Value = serde_json::from_slice(&body).unwrap();
                    let mut s = seen.lock().unwrap();
                    for e in events["events"].as_array().unwrap() {
                        let key = e["key"].as_str().unwrap().to_owned();
                        let room = e["room"].as_str().unwrap().to_owned();
                        if !s.keys.insert(key.clone()) {
                        } else if let Some(seq) = e["seq"].as_u64() {
                            s.first.entry(room).or_default().push(seq);
                        } else {
                            let kind = e["type"].as_str().unwrap().to_owned();
                            let name = e["name"].as_str().unwrap().to_owned();
                            let count = e["count"].as_u64().unwrap();
                            s.presence
                                .entry(room)
                                .or_default()
                                .push((kind, name, count));
                        }
                        s.taken.push(key);
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        });
    }

    /// Stops answering: new connections are refused.
    fn stop(&self) {
        self.stop.cancel();
    }
}

fn hooks(s: &common::pipeline::Setup, group: &str, urls: &str, max_attempts: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("hooks")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAFKA_BROKERS", kafka())
        .env("KAFKA_TOPIC", &s.topic)
        .env("KAFKA_EVENTS_TOPIC", &s.events_topic)
        .env("HOOKS_GROUP", group)
        .env("DATABASE_URL", &s.db)
        .env("WEBHOOK_URL", urls)
        .env("WEBHOOK_SECRET", SECRET)
        .env("WEBHOOK_TIMEOUT_MS", "1000")
        .env("WEBHOOK_BATCH", "20")
        .env("WEBHOOK_LINGER_MS", "50")
        .env("WEBHOOK_MAX_ATTEMPTS", max_attempts)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_message_reaches_a_flaky_receiver_through_a_kill_and_an_outage() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let mut receiver = Receiver::new(SECRET, true);
    receiver.start().await;
    let group = unique("hooks");
    let first = hooks(&s, &group, &receiver.url(), "0");
    let rooms: Vec<String> = (0..4).map(|i| unique(&format!("h{i}"))).collect();
    let mut c = node.client("ann").await;
    for room in &rooms {
        c.join(room).await;
    }
    let mut acked = Vec::new();
    let send = async |from: usize, n: usize, c: &mut common::Client| {
        let mut ids = Vec::new();
        for i in from..from + n {
            ids.push(c.send_text(&rooms[i % rooms.len()], &format!("m{i}")).await);
        }
        ids
    };
    acked.extend(send(0, 100, &mut c).await);
    // The hooks process dies mid-stream and comes back.
    kill(first);
    acked.extend(send(100, 50, &mut c).await);
    let second = hooks(&s, &group, &receiver.url(), "0");
    // The receiver goes away for 20 s while messages keep coming.
    receiver.stop();
    let down = Instant::now();
    acked.extend(send(150, 100, &mut c).await);
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(down.elapsed())).await;
    receiver.start().await;
    acked.extend(send(250, 50, &mut c).await);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let seen = receiver.seen.lock().unwrap();
            acked.iter().filter(|id| !seen.keys.contains(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acked messages never reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(seen.bad_signatures, 0);
        for (room, seqs) in &seen.first {
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            assert_eq!(seqs, &sorted, "{room}'s first deliveries out of order");
        }
        eprintln!(
            "hooks: {} acked, {} events taken ({} repeats), {} requests",
            acked.len(),
            seen.taken.len(),
            seen.taken.len() - seen.keys.len(),
            seen.requests
        );
    }
    kill(second);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_another_secret_refuses_every_batch_and_they_go_to_dead_letters() {
    let s = setup().await;
    let node = kafka_node(&kafka(), &s, "n1", None, Duration::from_secs(10)).await;
    await_ready(&node).await;
    let mut receiver = Receiver::new("another-secret-0123456789", false);
    receiver.start().await;
    let process = hooks(&s, &unique("hooks"), &receiver.url(), "2");
    let room = unique("bad");
    let mut c = node.client("ann").await;
    c.join(&room).await;
    for i in 0..5 {
        c.send_text(&room, &format!("m{i}")).await;
    }
    let pool = sqlx::PgPool::connect(&pg_base()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead: Vec<(String, Vec<u8>, String)> = loop {
        let rows: Vec<(String, Vec<u8>, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT endpoint, body, error FROM {}.webhook_dead_letters",
            s.schema
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        let events: usize = rows
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.1).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        if events >= 5 {
            break rows;
        }
        assert!(Instant::now() < deadline, "dead letters: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dead.iter()
            .all(|r| r.0 == receiver.url() && r.2.contains("401")),
        "{dead:?}"
    );
    {
        let seen = receiver.seen.lock().unwrap();
        assert!(seen.bad_signatures >= 2, "the receiver checked and refused");
        assert!(seen.keys.is_empty(), "nothing was taken");
    }
    kill(process);
    node.stop().await;
}

/// Waits until the receiver has `n` presence events of `room`.
async fn presence_of(receiver: &Receiver, room: &str, n: usize) -> Vec<(String, String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = receiver
            .seen
            .lock()
            .unwrap()
            .presence
            .get(room)
            .cloned()
            .unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "presence events of {room}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(kind: &str, name: &str, count: u64) -> (String, String, u64) {
    (kind.to_owned(), name.to_owned(), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_changes_reach_the_endpoints_that_ask_for_them_once_per_name() {
    let s = setup().await;
    let prefix = unique("hp");
    let single = kafka_node(&kafka(), &s, "solo", None, Duration::from_secs(10)).await;
    let n1 = kafka_node(&kafka(), &s, "n1", Some(&prefix), Duration::from_secs(10)).await;
    let n2 = kafka_node(&kafka(), &s, "n2", Some(&prefix), Duration::from_secs(10)).await;
    for node in [&single, &n1, &n2] {
        await_ready(node).await;
    }
    let mut members = Receiver::new(SECRET, false);
    members.start().await;
    let mut messages = Receiver::new(SECRET, false);
    messages.start().await;
    let urls = format!(
        "{};events=room_occupied,member_joined,member_left,room_vacated {};events=message",
        members.url(),
        messages.url()
    );
    let process = hooks(&s, &unique("hooks"), &urls, "0");
    // On one node, then across two: ann comes (twice: one name), bob comes
    // on the other node, bob goes, ann's connections go.
    for (room, a, b) in [
        (unique("solo"), &single, &single),
        (unique("pair"), &n1, &n2),
    ] {
        // Each step waits for the events of the one before: two nodes'
        // changes are ordered by when Redis applied them, not by the test.
        let mut ann = a.client("ann").await;
        ann.join(&room).await;
        presence_of(&members, &room, 2).await;
        let mut ann_again = b.client("ann").await;
        ann_again.join(&room).await;
        let mut bob = b.client("bob").await;
        bob.join(&room).await;
        presence_of(&members, &room, 3).await;
        ann.send_text(&room, "hello").await;
        drop(bob);
        presence_of(&members, &room, 4).await;
        drop(ann);
        drop(ann_again);
        let got = presence_of(&members, &room, 6).await;
        assert_eq!(
            got,
            [
                event("room_occupied", "ann", 1),
                event("member_joined", "ann", 1),
                event("member_joined", "bob", 2),
                event("member_left", "bob", 1),
                event("member_left", "ann", 0),
                event("room_vacated", "ann", 0),
            ],
            "{room}"
        );
        // Nothing more comes for this room.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(members.seen.lock().unwrap().presence[&room].len(), 6);
    }
    {
        let seen = messages.seen.lock().unwrap();
        assert!(
            seen.presence.is_empty(),
            "the message endpoint got presence events"
        );
        let delivered: usize = seen.first.values().map(Vec::len).sum();
        assert_eq!(delivered, 2, "one message per room");
    }
    kill(process);
    for node in [single, n1, n2] {
        node.stop().await;
    }
}
