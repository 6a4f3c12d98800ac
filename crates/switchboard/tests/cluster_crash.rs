//! Kill -9 a node of two while clients on both send steadily: every client
//! of the killed node reconnects to the survivor with `since`, resends what
//! was not acked by id, and in the end every client has every acked message
//! of the room exactly once, in seq order. Five kills per run, at varied
//! moments.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::NodeProcess;
use common::redis::shared_url;
use common::unique;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;
use uuid::Uuid;

const CLIENTS_PER_NODE: usize = 3;
const KILLS: usize = 5;
const CLIENTS: usize = 2 * CLIENTS_PER_NODE;

/// What one client saw.
#[derive(Default)]
struct Seen {
    epoch: String,
    /// Seqs delivered, in the order they came, with their ids.
    delivered: Vec<(u64, Uuid)>,
    acked: HashSet<Uuid>,
    reconnects: usize,
}

impl Seen {
    fn last(&self) -> u64 {
        self.delivered.last().map_or(0, |(seq, _)| *seq)
    }

    /// A message (live or recovered): must be the next seq, or a live copy
    /// of one already delivered in the recovery that raced it.
    fn take(&mut self, m: &Value, who: &str) {
        let seq = m["seq"].as_u64().unwrap();
        let id: Uuid = m["id"].as_str().unwrap().parse().unwrap();
        let epoch = m["epoch"].as_str().unwrap_or(&self.epoch).to_owned();
        assert_eq!(epoch, self.epoch, "{who}: epoch changed: {m}");
        assert_eq!(seq, self.last() + 1, "{who}: not the next seq: {m}");
        self.delivered.push((seq, id));
    }
}

/// The live nodes' addresses, for clients to (re)connect to.
type Addrs = Arc<Mutex<Vec<SocketAddr>>>;

/// Shared by the clients: whether to stop sending, and how many messages
/// are sent and not acked, all clients together.
#[derive(Default)]
struct Run {
    stop: AtomicBool,
    unacked: AtomicUsize,
    /// Clients that have joined once: nobody sends before all have, so
    /// every client's view starts at the room's first message.
    joined: AtomicUsize,
}

async fn client(name: String, room: String, mut home: usize, addrs: Addrs, run: Arc<Run>) -> Seen {
    let (stop, unacked) = (&run.stop, &run.unacked);
    let mut seen = Seen::default();
    let mut pending: HashMap<Uuid, String> = HashMap::new();
    let mut n = 0;
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < give_up, "{name}: never settled");
        let addr = {
            let addrs = addrs.lock().unwrap();
            addrs[home % addrs.len()]
        };
        let url = format!("ws://{addr}/ws?name={name}");
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            home += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut join = json!({"type": "join", "room": room, "history": 0, "ref": "join"});
        if !seen.epoch.is_empty() {
            join["since"] = json!({"epoch": seen.epoch, "seq": seen.last()});
        }
        if ws.send(Ws::text(join.to_string())).await.is_err() {
            continue;
        }
        // Resend what was not acked, by id.
        for (id, text) in &pending {
            let frame = json!({"type": "send", "room": room, "text": text, "id": id});
            let _ = ws.send(Ws::text(frame.to_string())).await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        let mut resend = tokio::time::interval(Duration::from_millis(500));
        let mut joined = false;
        let mut quiet_since = Instant::now();
        let lost = loop {
            tokio::select! {
                frame = ws.next() => {
                    let Some(Ok(Ws::Text(text))) = frame else { break true };
                    let v: Value = serde_json::from_str(&text).unwrap();
                    match v["type"].as_str().unwrap() {
                        "joined" => {
                            if seen.epoch.is_empty() {
                                seen.epoch = v["epoch"].as_str().unwrap().to_owned();
                                assert_eq!(v["seq"], 0, "{name}: joined after a message");
                                run.joined.fetch_add(1, Relaxed);
                            } else {
                                assert_eq!(v["recovered"], true, "{name}: not recovered: {v}");
                            }
                            for m in v["history"].as_array().unwrap() {
                                seen.take(m, &name);
                            }
                            joined = true;
                        }
                        "message" => {
                            seen.take(&v, &name);
                            quiet_since = Instant::now();
                        }
                        "ack" => {
                            let id: Uuid = v["id"].as_str().unwrap().parse().unwrap();
                            if pending.remove(&id).is_some() {
                                unacked.fetch_sub(1, Relaxed);
                            }
                            seen.acked.insert(id);
                        }
                        "error" => assert_eq!(v["code"], "unavailable", "{name}: {v}"),
                        other => panic!("{name}: unexpected {other}: {v}"),
                    }
                }
                _ = tick.tick(), if joined => {
                    if stop.load(Relaxed) {
                        // Once no client has anything unacked, no new
                        // position can be given: what is in flight lands
                        // within the quiet period.
                        if unacked.load(Relaxed) == 0 && quiet_since.elapsed() > Duration::from_millis(1500) {
                            return seen;
                        }
                        continue;
                    }
                    if run.joined.load(Relaxed) < CLIENTS {
                        continue;
                    }
                    n += 1;
                    let id = Uuid::now_v7();
                    let text = format!("{name}-{n}");
                    pending.insert(id, text.clone());
                    unacked.fetch_add(1, Relaxed);
                    let frame = json!({"type": "send", "room": room, "text": text, "id": id});
                    if ws.send(Ws::text(frame.to_string())).await.is_err() {
                        break true;
                    }
                }
                _ = resend.tick(), if joined => {
                    for (id, text) in &pending {
                        let frame = json!({"type": "send", "room": room, "text": text, "id": id});
                        if ws.send(Ws::text(frame.to_string())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        if lost {
            seen.reconnects += 1;
            home += 1;
        }
    }
}

#[tokio::test]
async fn clients_of_a_killed_node_recover_every_acked_message_once_in_order() {
    let url = shared_url();
    let prefix = unique("crash");
    let env = |id: &str| -> Vec<(String, String)> {
        vec![
            ("REDIS_URL".into(), url.clone()),
            ("REDIS_PREFIX".into(), prefix.clone()),
            ("NODE_ID".into(), id.into()),
            ("CONNECT_RATE_PER_IP".into(), "0".into()),
            ("RATE_LIMIT_PER_SEC".into(), "0".into()),
        ]
    };
    let start = |id: String| {
        let env = env(&id);
        async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            NodeProcess::start(&env, None).await
        }
    };
    let mut nodes = vec![start("n0".into()).await, start("n1".into()).await];
    let addrs: Addrs = Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect()));
    let room = unique("room");
    let run = Arc::new(Run::default());
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(tokio::spawn(client(
            format!("c{i}"),
            room.clone(),
            i % 2,
            addrs.clone(),
            run.clone(),
        )));
    }
    for kill in 0..KILLS {
        // Varied moments: 300 ms to 1.1 s of steady sending between kills.
        tokio::time::sleep(Duration::from_millis(300 + 200 * kill as u64)).await;
        let victim = kill % 2;
        let dead = nodes.remove(victim);
        addrs.lock().unwrap().retain(|a| *a != dead.addr);
        dead.kill();
        let node = start(format!("n{victim}-{kill}")).await;
        addrs.lock().unwrap().push(node.addr);
        nodes.insert(victim, node);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop.store(true, Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.push(
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let acked: HashSet<Uuid> = all.iter().flat_map(|s| s.acked.iter().copied()).collect();
    let longest = all.iter().map(|s| s.delivered.len()).max().unwrap();
    let reconnects: usize = all.iter().map(|s| s.reconnects).sum();
    for (i, seen) in all.iter().enumerate() {
        assert_eq!(seen.delivered.len(), longest, "c{i} ended behind");
        let ids: HashSet<Uuid> = seen.delivered.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            ids.len(),
            seen.delivered.len(),
            "c{i}: an id delivered twice"
        );
        let missing = acked.difference(&ids).count();
        assert_eq!(missing, 0, "c{i} is missing {missing} acked messages");
        assert!(
            seen.delivered
                .iter()
                .map(|(s, _)| *s)
                .eq(1..=longest as u64)
        );
    }
    assert!(
        reconnects >= KILLS * CLIENTS_PER_NODE / 2,
        "only {reconnects} reconnects"
    );
    println!(
        "{KILLS} kills: {} messages, {} acked, {reconnects} reconnects with since",
        longest,
        acked.len()
    );
    for node in nodes {
        assert!(node.stop().success());
    }
}
