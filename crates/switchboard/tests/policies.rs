//! Room policies by namespace over `/ws` (deploy/switchboard.toml's
//! namespaces plus a few of the tests' own): who may join and publish,
//! history and its default, presence off, recovery off, each namespace's
//! message size; and the server API publishing where members may not
//! (its broadcasts: broadcast.rs).

mod common;

use common::jwt::{API_KEY, now};
use common::policies::{ask, config, join, node, stored, with_token};
use common::redis::{await_numsub, shared_url};
use common::{Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;

#[tokio::test]
async fn join_and_publish_follow_the_namespace_and_the_claims() {
    let node = node().await;
    let mut anon = node.client("anon").await;
    // `support` lets in only tokens that name the room.
    let refused = ask(&mut anon, json!({"type": "join", "room": "support:t-1"})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let mut agent = with_token(
        &node,
        json!({"sub": "agent", "exp": now() + 60, "rooms": ["support:*", "news:*", "granted:*"]}),
    )
    .await;
    assert_eq!(join(&mut agent, "support:t-1").await["type"], "joined");
    agent.send_text("support:t-1", "how can I help?").await;

    // `news` is read-only for members: the server API writes.
    assert_eq!(join(&mut anon, "news:today").await["type"], "joined");
    let refused = ask(
        &mut anon,
        json!({"type": "send", "room": "news:today", "text": "me too", "ref": "n1"}),
    )
    .await;
    assert_eq!(
        (refused["code"].as_str(), refused["ref"].as_str()),
        (Some("forbidden"), Some("n1"))
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("only the server")
    );
    let published = reqwest::Client::new()
        .post(node.http("/api/rooms/news:today/messages"))
        .bearer_auth(API_KEY)
        .json(&json!({"text": "release 2.0 is out", "from": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let m = anon.recv_type("message").await;
    assert_eq!(
        (m["room"].as_str(), m["text"].as_str()),
        (Some("news:today"), Some("release 2.0 is out"))
    );

    // `granted`: only a token whose `publish` names the room sends; the
    // others read.
    let mut writer = with_token(
        &node,
        json!({"sub": "w", "exp": now() + 60, "publish": ["granted:a"]}),
    )
    .await;
    assert_eq!(join(&mut writer, "granted:a").await["type"], "joined");
    assert_eq!(join(&mut anon, "granted:a").await["type"], "joined");
    writer.send_text("granted:a", "from the writer").await;
    assert_eq!(anon.recv_type("message").await["text"], "from the writer");
    let refused = ask(
        &mut anon,
        json!({"type": "send", "room": "granted:a", "text": "x"}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    // A `publish` claim bounds every send, in any namespace.
    assert_eq!(join(&mut writer, "lobby2").await["type"], "joined");
    let refused = ask(
        &mut writer,
        json!({"type": "send", "room": "lobby2", "text": "x"}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert_eq!(join(&mut agent, "granted:b").await["type"], "joined");
    let refused = ask(
        &mut agent,
        json!({"type": "send", "room": "granted:b", "text": "x"}),
    )
    .await;
    assert_eq!(
        refused["code"], "forbidden",
        "no `publish` claim: a reader there"
    );
    node.stop().await;
}

#[tokio::test]
async fn history_presence_recovery_and_size_follow_the_namespace() {
    let node = node().await;
    let mut a = node.client("ann").await;
    // `typing`: at most 256 bytes, data allowed, no presence, no history,
    // no recovery.
    join(&mut a, "typing:doc-1").await;
    for i in 0..3 {
        a.send_text("typing:doc-1", &format!("typing {i}")).await;
    }
    let long = "x".repeat(300);
    let refused = ask(
        &mut a,
        json!({"type": "send", "room": "typing:doc-1", "text": long}),
    )
    .await;
    assert_eq!(refused["code"], "too_large", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("256"));
    // The default allows it.
    join(&mut a, "plain").await;
    let sent = ask(
        &mut a,
        json!({"type": "send", "room": "plain", "text": long, "ref": "long"}),
    )
    .await;
    assert_eq!(sent["type"], "ack", "{sent}");

    let mut b = node.client("ben").await;
    b.send(json!({"type": "join", "room": "typing:doc-1", "history": 10, "ref": "j"}))
        .await;
    let joined = b.recv_type("joined").await;
    assert_eq!(
        joined["history"],
        json!([]),
        "history = 0: none, even when asked"
    );
    assert!(joined.get("count").is_none(), "presence is off: {joined}");
    let refused = ask(&mut b, json!({"type": "presence", "room": "typing:doc-1"})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let http = reqwest::get(node.http("/api/rooms/typing:doc-1/presence"))
        .await
        .unwrap();
    assert_eq!(http.status(), 403);
    assert_eq!(http.json::<Value>().await.unwrap()["code"], "forbidden");
    // Recovery off: a join with `since` gets the latest history (none
    // here), `recovered: false`.
    let since = json!({"seq": joined["seq"], "epoch": joined["epoch"]});
    let mut c = node.client("cat").await;
    c.send(json!({"type": "join", "room": "typing:doc-1", "since": since}))
        .await;
    let rejoined = c.recv_type("joined").await;
    assert_eq!(rejoined["recovered"], false, "{rejoined}");
    assert_eq!(rejoined["history"], json!([]));

    // `news`: 20 messages on a join that does not ask, more when asked.
    let mut d = node.client("dan").await;
    join(&mut d, "news:all").await;
    for i in 0..30 {
        let res = reqwest::Client::new()
            .post(node.http("/api/rooms/news:all/messages"))
            .bearer_auth(API_KEY)
            .json(&json!({"text": format!("item {i}"), "from": "ci"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let joined = join(&mut node.client("eve").await, "news:all").await;
    assert_eq!(joined["history"].as_array().unwrap().len(), 20);
    let mut f = node.client("fay").await;
    f.send(json!({"type": "join", "room": "news:all", "history": 25}))
        .await;
    assert_eq!(
        f.recv_type("joined").await["history"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
    // Outside any namespace: the node's default (50), presence on.
    let joined = join(&mut node.client("gus").await, "plain").await;
    assert_eq!(joined["history"].as_array().unwrap().len(), 1);
    assert_eq!(joined["count"], 2, "{joined}");
    node.stop().await;
}

#[tokio::test]
async fn ephemeral_messages_reach_every_node_once_and_are_never_stored() {
    let prefix = unique("eph");
    let url = shared_url();
    let named = |id: &str| GatewayConfig {
        node_id: id.into(),
        ..config()
    };
    let a = Node::clustered(&url, &prefix, named("eph-a")).await;
    let b = Node::clustered(&url, &prefix, named("eph-b")).await;
    let room = format!("typing:{}", unique("doc"));
    let game = format!("game:{}", unique("g"));
    let mut ann = a.client("ann").await;
    let mut ben = b.client("ben").await;
    for r in [&room, &game] {
        join(&mut ann, r).await;
        join(&mut ben, r).await;
        await_numsub(&url, &format!("{{{prefix}:{r}}}:ch"), 2).await;
    }

    // A `store = false` namespace: every send is live only.
    let ack = ask(
        &mut ann,
        json!({"type": "send", "room": room, "text": "ann is typing", "ref": "t"}),
    )
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(ack.get("seq").is_none(), "no position: {ack}");
    let got = ben.recv_type("message").await;
    assert_eq!(
        (got["text"].as_str(), got.get("seq")),
        (Some("ann is typing"), None),
        "{got}"
    );
    // A resend of the same id is acked and not delivered again.
    let id = ack["id"].as_str().unwrap();
    let again = ask(
        &mut ann,
        json!({"type": "send", "room": room, "text": "ann is typing", "id": id}),
    )
    .await;
    assert_eq!(again["type"], "ack");

    // `game` allows `ephemeral: true` next to stored messages.
    let live = ask(
        &mut ben,
        json!({"type": "send", "room": game, "text": "x=3", "ephemeral": true}),
    )
    .await;
    assert_eq!(live["type"], "ack", "{live}");
    assert!(live.get("seq").is_none());
    ben.send_text(&game, "gg").await;
    // Live and stored messages take different paths between nodes: no
    // order between them.
    let mut got = [
        ann.recv_type("message").await,
        ann.recv_type("message").await,
    ];
    got.sort_by_key(|m| m["text"].as_str().map(str::to_owned));
    assert_eq!(
        (got[0]["text"].as_str(), got[0]["seq"].as_u64()),
        (Some("gg"), Some(1)),
        "the ephemeral one took no position"
    );
    assert_eq!(
        (got[1]["text"].as_str(), got[1].get("seq")),
        (Some("x=3"), None),
        "{}",
        got[1]
    );
    // Outside: refused.
    join(&mut ann, "plain-room").await;
    let refused = ask(
        &mut ann,
        json!({"type": "send", "room": "plain-room", "text": "x", "ephemeral": true}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // Nothing of it in history, on either node (each has its own store
    // here), nor in a later join.
    ann.silent_for_type("message", std::time::Duration::from_millis(300))
        .await;
    for node in [&a, &b] {
        assert_eq!(stored(node, &room).await, Vec::<Value>::new());
    }
    assert_eq!(stored(&a, &game).await, Vec::<Value>::new());
    let texts: Vec<_> = stored(&b, &game)
        .await
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("gg")]);
    let mut cat = b.client("cat").await;
    let joined = ask(
        &mut cat,
        json!({"type": "join", "room": game, "history": 10}),
    )
    .await;
    let history: Vec<_> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(history, vec![json!("gg")]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_ephemeral_flood_is_held_to_the_send_rate_and_members_get_only_what_was_acked() {
    let node = Node::start(
        "sqlite::memory:",
        GatewayConfig {
            send_rate: switchboard_gateway::Rate {
                per_second: 5,
                burst: 10,
            },
            ..config()
        },
    )
    .await;
    let mut flooder = node.client("flood").await;
    let mut watcher = node.client("watch").await;
    join(&mut flooder, "typing:flood").await;
    join(&mut watcher, "typing:flood").await;
    let started = std::time::Instant::now();
    for i in 0..40 {
        flooder
            .send(
                json!({"type": "send", "room": "typing:flood", "text": format!("t{i}"), "ref": i}),
            )
            .await;
    }
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 40 {
        let v = flooder.recv().await;
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            (Some("message"), _) => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    // The burst, and what refilled while the flood was answered.
    let refilled = (5.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        acked >= 10 && acked <= 10 + refilled,
        "{acked} acked, {refilled} refilled"
    );
    let mut delivered = 0;
    while delivered < acked {
        watcher.recv_type("message").await;
        delivered += 1;
    }
    watcher
        .silent_for_type("message", std::time::Duration::from_millis(300))
        .await;
    assert_eq!(stored(&node, "typing:flood").await, Vec::<Value>::new());
    node.stop().await;
}
