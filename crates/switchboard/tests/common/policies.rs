//! A node with deploy/switchboard.toml's namespaces (plus `granted` and
//! `game`), tokens and the API key, and the requests the policy and
//! broadcast tests make of it.

use std::sync::Arc;

use serde_json::{Value, json};
use switchboard_gateway::{
    AllowedOrigins, AuthConfig, AuthMode, GatewayConfig, Policies, TokenVerifier,
};

use super::jwt::{API_KEY, SECRET, hs256};
use super::{Client, Node};

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/switchboard.toml");

/// The example's namespaces, `granted` (publishing needs the claim) and
/// `game` (ephemeral sends allowed).
pub fn config() -> GatewayConfig {
    let mut file = std::fs::read_to_string(EXAMPLE).unwrap();
    file.push_str("\n[namespaces.granted]\npublish = \"granted\"\n");
    file.push_str("\n[namespaces.game]\nephemeral = true\n");
    let base = GatewayConfig::default();
    let policies = Policies::parse("t.toml", &file, base.policy_bounds()).unwrap();
    GatewayConfig {
        auth: AuthConfig {
            mode: AuthMode::Off,
            tokens: Some(Arc::new(TokenVerifier::hs256(SECRET.as_bytes()))),
            api_key: Some(API_KEY.into()),
            allowed_origins: AllowedOrigins::Any,
        },
        policies: Some(policies),
        ..base
    }
}

pub async fn node() -> Node {
    Node::start("sqlite::memory:", config()).await
}

pub async fn with_token(node: &Node, claims: Value) -> Client {
    let token = hs256(claims);
    super::open_ws(node.addr, &format!("/ws?token={token}"), &[])
        .await
        .map_err(|(status, body)| format!("{status} {body}"))
        .unwrap()
}

/// Joins `room`; the `joined` answer (messages of other rooms skipped).
pub async fn join(client: &mut Client, room: &str) -> Value {
    ask(client, json!({"type": "join", "room": room})).await
}

/// The answer to `frame` (skipping messages and presence events).
pub async fn ask(client: &mut Client, frame: Value) -> Value {
    client.send(frame).await;
    loop {
        let v = client.recv().await;
        if !matches!(v["type"].as_str(), Some("message" | "presence_change")) {
            return v;
        }
    }
}

/// The stored history of `room` over HTTP.
pub async fn stored(node: &Node, room: &str) -> Vec<Value> {
    let res = reqwest::get(node.http(&format!("/api/rooms/{room}/messages?limit=100")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}
