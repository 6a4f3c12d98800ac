//! Recovery on a single node: a client that comes back with `since` gets
//! exactly what it missed, in order, or is told plainly that it cannot
//! (`recovered: false` with the latest history). Also the history API's
//! paging by position.

mod common;

use common::process::NodeProcess;
use common::{Client, Node, unique};
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;
use tokio_tungstenite::tungstenite::Message as Ws;

/// The room's position a `joined` frame gives.
fn since(joined: &Value) -> Value {
    assert!(joined["epoch"].is_string(), "{joined}");
    json!({"seq": joined["seq"], "epoch": joined["epoch"]})
}

async fn join_since(c: &mut Client, room: &str, since: Value) -> Value {
    c.send(json!({"type": "join", "room": room, "since": since, "ref": "r"}))
        .await;
    let v = c.recv_type("joined").await;
    assert_eq!(v["ref"], "r");
    v
}

fn texts(joined: &Value) -> Vec<String> {
    joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn seqs(joined: &Value) -> Vec<u64> {
    joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_client_that_comes_back_gets_exactly_what_it_missed() {
    let node = Node::memory().await;
    let room = unique("missed");
    let mut talker = node.client("talker").await;
    talker.join(&room).await;
    for i in 0..3 {
        talker.send_text(&room, &format!("before {i}")).await;
    }
    let mut away = node.client("away").await;
    let joined = away.join(&room).await;
    assert_eq!(joined["seq"], 3);
    let position = since(&joined);
    drop(away);
    for i in 0..5 {
        talker.send_text(&room, &format!("missed {i}")).await;
    }
    let mut back = node.client("away").await;
    let joined = join_since(&mut back, &room, position.clone()).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(seqs(&joined), [4, 5, 6, 7, 8]);
    assert_eq!(texts(&joined)[0], "missed 0");
    assert_eq!(joined["seq"], 8);
    // Live messages go on from there, none twice.
    talker.send_text(&room, "live").await;
    let live = back.recv_type("message").await;
    assert_eq!(
        (live["seq"].as_u64(), live["text"].as_str()),
        (Some(9), Some("live"))
    );
    // Nothing missed: recovered, with nothing in it.
    let mut again = node.client("again").await;
    let now = join_since(
        &mut again,
        &room,
        json!({"seq": 9, "epoch": joined["epoch"]}),
    )
    .await;
    assert_eq!(
        (now["recovered"].as_bool(), seqs(&now).len()),
        (Some(true), 0)
    );
    node.stop().await;
}

#[tokio::test]
async fn a_position_that_cannot_be_served_gets_the_latest_history_and_says_so() {
    let node = Node::start("sqlite::memory:", GatewayConfig::default()).await;
    let room = unique("unrecoverable");
    let mut talker = node.client("talker").await;
    let joined = talker.join(&room).await;
    let epoch = joined["epoch"].clone();
    for i in 0..1_005 {
        let text = format!("m{i}");
        if i % 100 == 99 {
            // Read what came back now and then: a client that never reads
            // is cut as a slow consumer.
            talker.send_text(&room, &text).await;
        } else {
            talker
                .send(json!({"type": "send", "room": room, "text": text}))
                .await;
        }
    }
    // The last ack: every one is accepted and stored.
    talker.send_text(&room, "last").await;
    let mut c = node.client("c").await;
    for (position, why) in [
        (json!({"seq": 3, "epoch": "another"}), "another epoch"),
        (json!({"seq": 2, "epoch": epoch}), "more than 1,000 missed"),
        (json!({"seq": 5_000, "epoch": epoch}), "ahead of the room"),
    ] {
        let joined = join_since(&mut c, &room, position).await;
        assert_eq!(joined["recovered"], false, "{why}: {joined}");
        assert_eq!(
            texts(&joined).last().map(String::as_str),
            Some("last"),
            "{why}"
        );
        assert_eq!(joined["history"].as_array().unwrap().len(), 50, "{why}");
        assert_eq!(joined["seq"], 1_006);
    }
    // 1,000 behind is still recovered, every one of them in order.
    let joined = join_since(&mut c, &room, json!({"seq": 6, "epoch": epoch})).await;
    assert_eq!(joined["recovered"], true);
    assert_eq!(seqs(&joined), (7..=1_006).collect::<Vec<_>>());
    node.stop().await;
}

#[tokio::test]
async fn recovery_max_sets_how_far_behind_is_recovered() {
    let config = GatewayConfig {
        recovery_max: 3,
        ..GatewayConfig::default()
    };
    let node = Node::start("sqlite::memory:", config).await;
    let room = unique("max");
    let mut talker = node.client("talker").await;
    let epoch = talker.join(&room).await["epoch"].clone();
    for i in 0..5 {
        talker.send_text(&room, &format!("m{i}")).await;
    }
    let mut c = node.client("c").await;
    let four_behind = join_since(&mut c, &room, json!({"seq": 1, "epoch": epoch})).await;
    assert_eq!(four_behind["recovered"], false);
    let three_behind = join_since(&mut c, &room, json!({"seq": 2, "epoch": epoch})).await;
    assert_eq!(three_behind["recovered"], true);
    assert_eq!(seqs(&three_behind), [3, 4, 5]);
    node.stop().await;
}

#[tokio::test]
async fn recovery_works_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("recover.db").display());
    let room = unique("restart");
    let node = Node::start(&url, GatewayConfig::default()).await;
    let mut a = node.client("a").await;
    a.join(&room).await;
    a.send_text(&room, "before").await;
    let mut away = node.client("away").await;
    let position = since(&away.join(&room).await);
    a.send_text(&room, "missed before the restart").await;
    node.stop().await;

    let node = Node::start(&url, GatewayConfig::default()).await;
    let mut b = node.client("b").await;
    b.join(&room).await;
    b.send_text(&room, "missed after the restart").await;
    let mut back = node.client("away").await;
    let joined = join_since(&mut back, &room, position).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(
        texts(&joined),
        ["missed before the restart", "missed after the restart"]
    );
    assert_eq!(seqs(&joined), [2, 3]);
    node.stop().await;
}

/// A crash may lose positions given to messages that never became
/// durable, so the restarted node counts in a new epoch: a client coming
/// back is told it cannot recover (and gets the latest history, the
/// message from before the crash included). A clean stop keeps the epoch.
#[tokio::test]
async fn after_a_crash_the_epoch_changes_and_recovery_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let env = [("DATABASE_URL", url.as_str())];
    let room = unique("crash");
    let node = NodeProcess::start(&env, None).await;
    let mut a = Client::connect(node.addr, "a").await;
    a.join(&room).await;
    a.send_text(&room, "before the crash").await;
    a.send(json!({"type": "join", "room": room})).await;
    let before = since(&a.recv_type("joined").await);
    node.kill();

    let node = NodeProcess::start(&env, None).await;
    let mut back = Client::connect(node.addr, "a").await;
    let joined = join_since(&mut back, &room, before.clone()).await;
    assert_eq!(joined["recovered"], false, "{joined}");
    assert_ne!(joined["epoch"], before["epoch"]);
    assert_eq!(joined["seq"], 0, "a new epoch counts from the start");
    assert_eq!(texts(&joined), ["before the crash"]);
    back.send_text(&room, "after").await;
    let after = back.recv_type("message").await;
    assert_eq!(
        (&after["seq"], &after["epoch"]),
        (&json!(1), &joined["epoch"])
    );
    assert!(node.stop().success());

    // A clean stop: the next run keeps counting in the same epoch.
    let node = NodeProcess::start(&env, None).await;
    let mut c = Client::connect(node.addr, "c").await;
    let position = since(&joined);
    let again = join_since(&mut c, &room, position).await;
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(texts(&again), ["after"]);
    assert!(node.stop().success());
}

#[tokio::test]
async fn a_bad_since_is_refused_with_its_code() {
    let node = Node::memory().await;
    let mut c = node.client("c").await;
    for bad in [
        json!("3"),
        json!({"seq": -1, "epoch": "e"}),
        json!({"seq": 1}),
        json!({"seq": 1, "epoch": 7}),
        json!({"seq": 1, "epoch": "e".repeat(65)}),
    ] {
        c.send(json!({"type": "join", "room": "r", "since": bad}))
            .await;
        let v = c.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("bad_frame")),
            "{bad}"
        );
    }
    c.send(json!({"type": "ping", "ref": 1})).await;
    assert_eq!(c.recv().await["type"], "pong");
    node.stop().await;
}

#[tokio::test]
async fn history_pages_by_position_both_ways() {
    let node = Node::memory().await;
    let room = unique("pages");
    let mut c = node.client("c").await;
    let epoch = c.join(&room).await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=10 {
        c.send_text(&room, &format!("m{i}")).await;
    }
    let get = |query: String| {
        let url = node.http(&format!("/api/rooms/{room}/messages?{query}"));
        async move {
            let res = reqwest::get(url).await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let page = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let (status, v) = get("after_seq=4&limit=3".into()).await;
    assert_eq!((status, page(&v)), (200, vec![5, 6, 7]));
    let (_, v) = get(format!("before_seq=4&limit=10&epoch={epoch}")).await;
    assert_eq!(page(&v), [1, 2, 3]);
    let (_, v) = get("after_seq=0&epoch=elsewhere".into()).await;
    assert_eq!(page(&v), Vec::<u64>::new());
    for (query, code) in [
        ("after_seq=-1", "bad_seq"),
        ("after_seq=x", "bad_seq"),
        ("before_seq=2&after_seq=1", "bad_request"),
        (
            "before_seq=2&before=00000000-0000-0000-0000-000000000000",
            "bad_request",
        ),
        ("after_seq=1&epoch=", "bad_seq"),
    ] {
        let (status, v) = get(query.into()).await;
        assert_eq!((status, v["code"].as_str()), (400, Some(code)), "{query}");
    }
    node.stop().await;
}

/// Recovery reads up to `RECOVERY_MAX` stored messages per join: a client
/// asking for it over and over is answered one join at a time (its next
/// frame is not read before), so it never holds up another client's acks
/// for long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_recoveries_are_bounded_and_do_not_starve_others() {
    use std::time::{Duration, Instant};
    let config = GatewayConfig {
        send_rate: switchboard_gateway::Rate {
            per_second: 20,
            burst: 40,
        },
        // The writers below do not read what they are sent.
        client_queue_frames: 4_096,
        ..GatewayConfig::default()
    };
    let node = Node::start("sqlite::memory:", config).await;
    let room = unique("storm");
    // A room 1,000 messages long: 25 writers, each within its burst.
    let mut writer = node.client("writer").await;
    let epoch = writer.join(&room).await["epoch"].clone();
    // Elsewhere, a client going about its business.
    let quiet = unique("elsewhere");
    let mut bystander = node.client("bystander").await;
    bystander.join(&quiet).await;
    let mut writers = Vec::new();
    for w in 0..25 {
        let mut c = node.client(&format!("w{w}")).await;
        c.join(&room).await;
        for i in 0..40 {
            c.send(json!({"type": "send", "room": room, "text": format!("w{w}-{i}")}))
                .await;
        }
        writers.push(c);
    }
    writer.send_text(&room, "last").await;
    // Every writer's sends accepted (they are read on their own
    // connections, maybe after the last one): the room is 1,001 long.
    let deadline = Instant::now() + Duration::from_secs(30);
    let now = loop {
        writer.send(json!({"type": "join", "room": room})).await;
        let seq = writer.recv_type("joined").await["seq"].as_u64().unwrap();
        if seq >= 1_001 || Instant::now() > deadline {
            break seq;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(now, 1_001, "every send was accepted");
    // 1,000 behind: the most that is recovered.
    let mut attacker = node.client("attacker").await;
    for _ in 0..100 {
        attacker
            .send(json!({"type": "join", "room": room, "since": {"seq": now - 1_000, "epoch": epoch}}))
            .await;
    }
    // Meanwhile the bystander's sends are acked promptly.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        bystander
            .send_text(&quiet, &format!("still here {i}"))
            .await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "an ack took {slowest:?}");
    // Every one of the attacker's joins is answered, in turn, each with
    // the whole 1,000 it asked for.
    let mut answered = 0;
    while answered < 100 {
        match tokio::time::timeout(Duration::from_secs(60), attacker.ws.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "joined" {
                    assert_eq!(v["recovered"], true);
                    assert_eq!(v["history"].as_array().unwrap().len(), 1_000);
                    answered += 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("attacker: {other:?} after {answered} answers"),
        }
    }
    node.stop().await;
}
