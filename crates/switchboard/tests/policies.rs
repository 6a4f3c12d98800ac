//! Room policies by namespace over `/ws` (deploy/switchboard.toml's
//! namespaces plus a few of the tests' own): who may join and publish,
//! history and its default, presence off, recovery off, each namespace's
//! message size; and the server API publishing where members may not.

mod common;

use std::sync::Arc;

use common::jwt::{API_KEY, SECRET, hs256, now};
use common::{Client, Node};
use serde_json::{Value, json};
use switchboard_gateway::{
    AllowedOrigins, AuthConfig, AuthMode, GatewayConfig, Policies, TokenVerifier,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/switchboard.toml");

/// The example's namespaces and `granted` (publishing needs the claim).
async fn node() -> Node {
    let mut file = std::fs::read_to_string(EXAMPLE).unwrap();
    file.push_str("\n[namespaces.granted]\npublish = \"granted\"\n");
    let base = GatewayConfig::default();
    let policies = Policies::parse("t.toml", &file, base.policy_bounds()).unwrap();
    let config = GatewayConfig {
        auth: AuthConfig {
            mode: AuthMode::Off,
            tokens: Some(Arc::new(TokenVerifier::hs256(SECRET.as_bytes()))),
            api_key: Some(API_KEY.into()),
            allowed_origins: AllowedOrigins::Any,
        },
        policies: Some(policies),
        ..base
    };
    Node::start("sqlite::memory:", config).await
}

async fn with_token(node: &Node, claims: Value) -> Client {
    let token = hs256(claims);
    common::open_ws(node.addr, &format!("/ws?token={token}"), &[])
        .await
        .map_err(|(status, body)| format!("{status} {body}"))
        .unwrap()
}

/// Joins `room`; the `joined` answer (messages of other rooms skipped).
async fn join(client: &mut Client, room: &str) -> Value {
    ask(client, json!({"type": "join", "room": room})).await
}

/// The answer to `frame` (skipping messages and presence events).
async fn ask(client: &mut Client, frame: Value) -> Value {
    client.send(frame).await;
    loop {
        let v = client.recv().await;
        if !matches!(v["type"].as_str(), Some("message" | "presence_change")) {
            return v;
        }
    }
}

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
    let since = json!({"seq": joined["seq"].as_u64().unwrap() - 1, "epoch": joined["epoch"]});
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
