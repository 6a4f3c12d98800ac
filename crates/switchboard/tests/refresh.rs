//! Token lifetime on `/ws`: a connection is warned before its token
//! expires, may `refresh` it with a later token of the same user, and is
//! closed with 4001 at expiry otherwise; a refused refresh changes nothing.
//! Short-lived tokens and no clock-skew leeway keep the clock in the test.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::jwt::{SECRET, hs256, now};
use common::{Client, Node};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use switchboard_gateway::{AllowedOrigins, AuthConfig, AuthMode, GatewayConfig, TokenVerifier};

async fn node() -> Node {
    let config = GatewayConfig {
        auth: AuthConfig {
            mode: AuthMode::Required,
            tokens: Some(Arc::new(
                TokenVerifier::hs256(SECRET.as_bytes()).with_leeway(0),
            )),
            api_key: None,
            allowed_origins: AllowedOrigins::Any,
        },
        token_warning: Duration::from_millis(1500),
        ..GatewayConfig::default()
    };
    Node::start("sqlite::memory:", config).await
}

/// Now, in Unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A connection of `sub` with a token expiring at `exp` (Unix seconds).
async fn connect(node: &Node, sub: &str, exp: u64) -> Client {
    let token = hs256(json!({"sub": sub, "exp": exp}));
    common::open_ws(node.addr, &format!("/ws?token={token}"), &[])
        .await
        .map_err(|(status, body)| format!("{status} {body}"))
        .unwrap()
}

async fn ask(client: &mut Client, frame: Value) -> Value {
    client.send(frame).await;
    client.recv().await
}

#[tokio::test]
async fn a_warned_connection_that_refreshes_stays_and_one_that_does_not_is_closed_4001() {
    let node = node().await;
    let started = Instant::now();
    // Whole seconds: a token of `now() + 3` lives 2 to 3 s.
    let exp = now() + 3;
    let mut stays = connect(&node, "ann", exp).await;
    let mut goes = connect(&node, "ben", exp).await;
    for client in [&mut stays, &mut goes] {
        let warning = client.recv().await;
        assert_eq!(warning["type"], "token_expiring", "{warning}");
        let in_ms = warning["in_ms"].as_u64().unwrap();
        assert!(
            in_ms <= 1500 && in_ms > 0,
            "warned within the last 1.5 s: {warning}"
        );
        // What it says is the time left until the token's `exp`.
        let left = (exp * 1000).saturating_sub(now_ms());
        assert!(
            left.abs_diff(in_ms) < 300,
            "{in_ms} ms said, {left} ms left"
        );
    }

    // Refused refreshes change nothing.
    let other_user = hs256(json!({"sub": "eve", "exp": now() + 60}));
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ben", "exp": now() + 60}),
        &EncodingKey::from_secret(b"not-the-secret-of-this-server-at-all"),
    )
    .unwrap();
    let earlier = hs256(json!({"sub": "ben", "exp": now() + 1}));
    for (token, why) in [
        (other_user.as_str(), "another user"),
        (wrong_key.as_str(), "refused"),
        (earlier.as_str(), "later"),
    ] {
        let refused = ask(
            &mut goes,
            json!({"type": "refresh", "token": token, "ref": "r"}),
        )
        .await;
        assert_eq!(
            (refused["code"].as_str(), refused["ref"].as_str()),
            (Some("forbidden"), Some("r")),
            "{refused}"
        );
        assert!(
            refused["message"].as_str().unwrap().contains(why),
            "{refused}"
        );
    }
    for bad in [
        json!({"type": "refresh"}),
        json!({"type": "refresh", "token": "x".repeat(9000)}),
        json!({"type": "refresh", "token": 5}),
    ] {
        assert_eq!(ask(&mut goes, bad).await["code"], "bad_frame");
    }

    let exp = now() + 60;
    let fresh = hs256(json!({"sub": "ann", "exp": exp}));
    let refreshed = ask(
        &mut stays,
        json!({"type": "refresh", "token": fresh, "ref": 1}),
    )
    .await;
    assert_eq!(
        refreshed,
        json!({"type": "refreshed", "exp": exp, "ref": 1})
    );

    // Past the first token's expiry: one is closed 4001, the other still answers.
    assert_eq!(goes.close_code().await, Some(4001));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed at expiry: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ask(&mut stays, json!({"type": "ping"})).await["type"],
        "pong"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_connection_without_a_token_has_nothing_to_refresh() {
    let node = Node::memory().await;
    let mut anon = node.client("anon").await;
    let token = hs256(json!({"sub": "anon", "exp": now() + 60}));
    let refused = ask(&mut anon, json!({"type": "refresh", "token": token})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    anon.silent_for(Duration::from_millis(300)).await;
    node.stop().await;
}
