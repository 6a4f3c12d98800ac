//! Authentication and authorization on a real node: connection tokens on
//! `/ws`, allowed origins, and the API-key publish endpoint (on a two-node
//! cluster over the real Redis).

mod common;

use std::sync::Arc;

use common::jwt::{API_KEY, SECRET, hs256, now};
use common::redis::shared_url;
use common::{Client, Node, unique};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use switchboard_gateway::{AllowedOrigins, AuthConfig, AuthMode, GatewayConfig, TokenVerifier};

fn required(verifier: TokenVerifier) -> GatewayConfig {
    GatewayConfig {
        auth: AuthConfig {
            mode: AuthMode::Required,
            tokens: Some(Arc::new(verifier)),
            api_key: None,
            allowed_origins: AllowedOrigins::SameOrigin,
        },
        ..GatewayConfig::default()
    }
}

async fn start(config: GatewayConfig) -> Node {
    Node::start("sqlite::memory:", config).await
}

async fn open(node: &Node, path: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, Value)> {
    common::open_ws(node.addr, path, headers).await
}

fn refused(result: Result<Client, (u16, Value)>) -> (u16, Value) {
    match result {
        Ok(_) => panic!("the connection was accepted"),
        Err(refusal) => refusal,
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade_without_leaking_the_secret() {
    let node = start(required(TokenVerifier::hs256(SECRET.as_bytes()))).await;
    let expired = hs256(json!({"sub": "u", "exp": now() - 3600}));
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "exp": now() + 60}),
        &EncodingKey::from_secret(b"some-other-secret-entirely-32-bytes!"),
    )
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "u", "exp": now() + 60}).to_string())
    );
    let cases = [
        ("missing", "/ws".to_owned()),
        ("malformed", "/ws?token=not.a.jwt".to_owned()),
        ("expired", format!("/ws?token={expired}")),
        ("wrongly signed", format!("/ws?token={other_key}")),
        ("alg none", format!("/ws?token={alg_none}")),
    ];
    for (case, path) in cases {
        let (status, body) = refused(open(&node, &path, &[]).await);
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["code"], "unauthorized", "{case}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            !message.contains(SECRET) && !message.contains("secret"),
            "{case}: {message}"
        );
    }
    let (_, body) = refused(open(&node, &format!("/ws?token={expired}"), &[]).await);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_token_name_is_the_sender_whatever_the_client_asks_for() {
    let node = start(required(TokenVerifier::hs256(SECRET.as_bytes()))).await;
    let room = unique("r");
    let alice = hs256(json!({"sub": "u-alice", "name": "Alice", "exp": now() + 60}));
    let bob = hs256(json!({"sub": "u-bob", "exp": now() + 60}));
    // Asks to be "mallory" in the query; the token says Alice.
    let mut a = open(&node, &format!("/ws?name=mallory&token={alice}"), &[])
        .await
        .unwrap();
    // The bearer header works too; without a name claim, `sub` is the name.
    let mut b = open(&node, "/ws", &[("authorization", &format!("Bearer {bob}"))])
        .await
        .unwrap();
    a.join(&room).await;
    b.join(&room).await;
    a.send(json!({"type": "send", "room": room, "text": "hi", "from": "mallory"}))
        .await;
    let got = b.recv_type("message").await;
    assert_eq!(got["from"], "Alice", "{got}");
    assert_eq!(
        a.recv_type("message").await["from"],
        "Alice",
        "its own echo"
    );
    b.send_text(&room, "hello").await;
    let got = a.recv_type("message").await;
    assert_eq!(got["text"], "hello");
    assert_eq!(got["from"], "u-bob", "{got}");
    node.stop().await;
}

#[tokio::test]
async fn the_rooms_claim_bounds_what_a_connection_may_join() {
    let node = start(required(TokenVerifier::hs256(SECRET.as_bytes()))).await;
    let token = hs256(json!({"sub": "u", "exp": now() + 60, "rooms": ["general", "team-*"]}));
    let mut c = open(&node, &format!("/ws?token={token}"), &[])
        .await
        .unwrap();
    c.join("general").await;
    c.join("team-red").await;
    c.send(json!({"type": "join", "room": "random", "ref": 7}))
        .await;
    let err = c.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "forbidden", "{err}");
    assert_eq!(err["ref"], 7);
    c.send(json!({"type": "send", "room": "random", "text": "x", "ref": 8}))
        .await;
    assert_eq!(
        c.recv().await["code"],
        "not_joined",
        "a refused join leaves no membership"
    );
    node.stop().await;
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_their_tokens() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let read = |f: &str| std::fs::read(format!("{fixtures}/{f}")).unwrap();
    for (alg, public, private) in [
        (Algorithm::RS256, "rsa-public.pem", "rsa-private.pem"),
        (Algorithm::ES256, "ec-public.pem", "ec-private.pem"),
    ] {
        let verifier = TokenVerifier::public_key_pem(&read(public)).unwrap();
        let node = start(required(verifier)).await;
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&read(private)).unwrap(),
            _ => EncodingKey::from_ec_pem(&read(private)).unwrap(),
        };
        let claims = json!({"sub": "k", "name": "Kim", "exp": now() + 60});
        let token = encode(&Header::new(alg), &claims, &key).unwrap();
        let mut c = open(&node, &format!("/ws?token={token}"), &[])
            .await
            .unwrap();
        let room = unique("r");
        c.join(&room).await;
        c.send_text(&room, "signed").await;
        assert_eq!(c.recv_type("message").await["from"], "Kim");
        // A token signed with the shared-secret algorithm is refused.
        let hs = hs256(claims);
        let (status, _) = refused(open(&node, &format!("/ws?token={hs}"), &[]).await);
        assert_eq!(status, 401, "{alg:?}");
        node.stop().await;
    }
}

#[tokio::test]
async fn other_origins_cannot_open_sockets() {
    let node = start(required(TokenVerifier::hs256(SECRET.as_bytes()))).await;
    let token = hs256(json!({"sub": "u", "exp": now() + 60}));
    let path = format!("/ws?token={token}");
    let (status, body) = refused(open(&node, &path, &[("origin", "https://evil.example")]).await);
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden_origin");
    let own = format!("http://{}", node.addr);
    assert!(
        open(&node, &path, &[("origin", &own)]).await.is_ok(),
        "same origin"
    );
    node.stop().await;

    let config = GatewayConfig {
        auth: AuthConfig {
            allowed_origins: AllowedOrigins::List(vec!["https://chat.example".into()]),
            ..AuthConfig::default()
        },
        ..GatewayConfig::default()
    };
    let node = start(config).await;
    assert!(
        open(&node, "/ws", &[("origin", "https://chat.example")])
            .await
            .is_ok()
    );
    let (status, _) = refused(open(&node, "/ws", &[("origin", "https://chat.example.evil")]).await);
    assert_eq!(status, 403);
    node.stop().await;
}

async fn cluster_node(prefix: &str, id: &str, api_key: Option<&str>) -> Node {
    let gateway = GatewayConfig {
        node_id: id.to_owned(),
        auth: AuthConfig {
            api_key: api_key.map(str::to_owned),
            ..AuthConfig::default()
        },
        ..GatewayConfig::default()
    };
    Node::clustered(&shared_url(), prefix, gateway).await
}

#[tokio::test]
async fn the_publish_api_needs_the_key_and_reaches_every_node_and_the_store() {
    let prefix = unique("t");
    let a = cluster_node(&prefix, "a", Some(API_KEY)).await;
    let b = cluster_node(&prefix, "b", Some(API_KEY)).await;
    let room = unique("r");
    let mut on_a = a.client("x").await;
    let mut on_b = b.client("y").await;
    on_a.join(&room).await;
    on_b.join(&room).await;
    let http = reqwest::Client::new();
    let url = a.http(&format!("/api/rooms/{room}/messages"));
    let body = json!({"text": "from the server", "from": "ops"});
    let missing = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["code"],
        "unauthorized"
    );
    let wrong = http
        .post(&url)
        .bearer_auth("test-api-key-0123456780")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let bad = http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&json!({"text": "", "from": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "empty text is refused like a client's");
    let huge = http
        .post(&url)
        .bearer_auth(API_KEY)
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413, "the body limit");
    assert!(huge.json::<Value>().await.is_ok(), "a JSON body");
    let created = http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let message: Value = created.json().await.unwrap();
    assert_eq!(message["from"], "ops");
    for client in [&mut on_a, &mut on_b] {
        let got = client.recv_type("message").await;
        assert_eq!(got["id"], message["id"]);
        assert_eq!(got["text"], "from the server");
    }
    let stored: Value = reqwest::get(a.http(&format!("/api/rooms/{room}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
    assert_eq!(stored[0]["id"], message["id"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_publish_api_does_not_exist_without_a_key() {
    let node = Node::memory().await;
    let response = reqwest::Client::new()
        .post(node.http("/api/rooms/lobby/messages"))
        .bearer_auth("anything")
        .json(&json!({"text": "x", "from": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    node.stop().await;
}
