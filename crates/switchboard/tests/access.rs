//! What the HTTP surface gives to whom: history and metrics behind tokens
//! and the API key, the operators' listener, client addresses through
//! trusted proxies, origins with their scheme, token time and audience
//! claims, and clear JSON answers to malformed requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::jwt::{API_KEY, SECRET, hs256, now};
use common::{Node, unique};
use serde_json::{Value, json};
use switchboard::NodeOptions;
use switchboard_gateway::{
    AllowedOrigins, AuthConfig, AuthMode, GatewayConfig, Rate, TokenVerifier, TrustedProxies,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn required() -> GatewayConfig {
    GatewayConfig {
        auth: AuthConfig {
            mode: AuthMode::Required,
            tokens: Some(Arc::new(TokenVerifier::hs256(SECRET.as_bytes()))),
            api_key: Some(API_KEY.into()),
            allowed_origins: AllowedOrigins::SameOrigin,
        },
        metrics_public: false,
        ..GatewayConfig::default()
    }
}

async fn get(url: String, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Opens `/ws` with `headers`; the status of a refusal, or 101.
async fn upgrade_status(node: &Node, path: &str, headers: &[(&str, &str)]) -> u16 {
    match common::open_ws(node.addr, path, headers).await {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

#[tokio::test]
async fn history_needs_a_token_that_allows_the_room_when_auth_is_required() {
    let node = Node::start("sqlite::memory:", required()).await;
    let room = unique("team-a");
    let other = unique("secret");
    let holder = hs256(json!({"sub": "u1", "exp": now() + 600, "rooms": ["team-*"]}));
    let mut member = common::Client::from_stream(
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={holder}", node.addr))
            .await
            .unwrap()
            .0,
    );
    member.join(&room).await;
    member.send_text(&room, "for the team").await;
    let url = |room: &str, extra: &str| node.http(&format!("/api/rooms/{room}/messages{extra}"));
    // No credentials: refused, with a JSON body.
    let (status, body) = get(url(&room, ""), None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    // Paging with `before` is no way around it.
    let (status, _) = get(
        url(&room, &format!("?before={}", uuid::Uuid::now_v7())),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // A bad token is refused for its reason.
    let (status, body) = get(url(&room, ""), Some("junk")).await;
    assert_eq!(status, 401, "{body}");
    // A token allowing the room reads it, by header or query.
    let (status, body) = get(url(&room, ""), Some(&holder)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["text"], "for the team");
    let (status, _) = get(url(&room, &format!("?token={holder}")), None).await;
    assert_eq!(status, 200);
    // Not a room its claim allows.
    let (status, body) = get(url(&other, ""), Some(&holder)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    // The API key reads any room.
    let (status, _) = get(url(&other, ""), Some(API_KEY)).await;
    assert_eq!(status, 200);
    node.stop().await;
}

#[tokio::test]
async fn metrics_and_stats_are_private_when_auth_is_required_and_served_on_the_operators_listener()
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operators = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let operators_addr = operators.local_addr().unwrap();
    let options = NodeOptions {
        gateway: required(),
        database_url: "sqlite::memory:".into(),
        migrate: true,
        redis: None,
        kafka: None,
        layout: Default::default(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(switchboard::run_with(
        listener,
        Some(operators),
        options,
        shutdown.clone(),
        None,
    ));
    common::wait_for_port(addr).await;
    for path in ["/api/stats", "/metrics"] {
        let (status, body) = get(format!("http://{addr}{path}"), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let user = hs256(json!({"sub": "u1", "exp": now() + 600}));
        let (status, _) = get(format!("http://{addr}{path}"), Some(&user)).await;
        assert_eq!(status, 401, "a user token is not enough for {path}");
    }
    let (status, body) = get(format!("http://{addr}/api/stats"), Some(API_KEY)).await;
    assert_eq!(status, 200, "{body}");
    // The operators' listener: no credentials, and only operators' routes.
    let (status, body) = get(format!("http://{operators_addr}/api/stats"), None).await;
    assert_eq!(status, 200);
    assert!(body["connections"].is_number(), "{body}");
    let (status, _) = get(format!("http://{operators_addr}/readyz"), None).await;
    assert_eq!(status, 200);
    let (status, _) = get(
        format!("http://{operators_addr}/api/rooms/lobby/messages"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Health stays public on the main listener.
    let (status, _) = get(format!("http://{addr}/healthz"), None).await;
    assert_eq!(status, 200);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tokens_from_the_future_are_refused_and_audiences_are_checked_only_when_configured() {
    let node = Node::start("sqlite::memory:", required()).await;
    let later = hs256(json!({"sub": "u", "exp": now() + 86_400, "nbf": now() + 3_600}));
    assert_eq!(
        upgrade_status(&node, &format!("/ws?token={later}"), &[]).await,
        401
    );
    let with_aud = hs256(json!({"sub": "u", "exp": now() + 600, "aud": "chat"}));
    assert_eq!(
        upgrade_status(&node, &format!("/ws?token={with_aud}"), &[]).await,
        101
    );
    node.stop().await;
    let mut config = required();
    config.auth.tokens = Some(Arc::new(
        TokenVerifier::hs256(SECRET.as_bytes())
            .with_audience("chat")
            .with_issuer("https://id.example"),
    ));
    let node = Node::start("sqlite::memory:", config).await;
    let good =
        hs256(json!({"sub": "u", "exp": now() + 600, "aud": "chat", "iss": "https://id.example"}));
    assert_eq!(
        upgrade_status(&node, &format!("/ws?token={good}"), &[]).await,
        101
    );
    let other =
        hs256(json!({"sub": "u", "exp": now() + 600, "aud": "mail", "iss": "https://id.example"}));
    assert_eq!(
        upgrade_status(&node, &format!("/ws?token={other}"), &[]).await,
        401
    );
    node.stop().await;
}

#[tokio::test]
async fn same_origin_compares_the_scheme_and_believes_it_only_from_a_trusted_proxy() {
    let mut config = required();
    config.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
    let node = Node::start("sqlite::memory:", config).await;
    let t = hs256(json!({"sub": "u", "exp": now() + 600}));
    let path = format!("/ws?token={t}");
    let host = node.addr.to_string();
    let http_origin = format!("http://{host}");
    let https_origin = format!("https://{host}");
    assert_eq!(
        upgrade_status(&node, &path, &[("origin", &http_origin)]).await,
        101
    );
    // A page of the TLS site may not open a plain one's sockets, and the
    // other way round, unless the proxy says the client came over TLS.
    assert_eq!(
        upgrade_status(&node, &path, &[("origin", &https_origin)]).await,
        403
    );
    let tls = [
        ("origin", https_origin.as_str()),
        ("x-forwarded-proto", "https"),
    ];
    assert_eq!(upgrade_status(&node, &path, &tls).await, 101);
    let downgraded = [
        ("origin", http_origin.as_str()),
        ("x-forwarded-proto", "https"),
    ];
    assert_eq!(upgrade_status(&node, &path, &downgraded).await, 403);
    node.stop().await;
    // Without trusted proxies the header is ignored.
    let node = Node::start("sqlite::memory:", required()).await;
    let host = node.addr.to_string();
    let tls = [
        ("origin", format!("https://{host}")),
        ("x-forwarded-proto", "https".into()),
    ];
    let tls: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(upgrade_status(&node, &path, &tls).await, 403);
    node.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_connect_rate() {
    let limited = |trusted: &str| GatewayConfig {
        connect_rate_per_ip: Some(Rate {
            per_second: 1,
            burst: 5,
        }),
        trusted_proxies: TrustedProxies::parse(trusted).unwrap(),
        ..GatewayConfig::default()
    };
    let node = Node::start("sqlite::memory:", limited("127.0.0.1")).await;
    // Twenty users behind the proxy, one connection each: all admitted.
    for i in 0..20 {
        let xff = format!("203.0.113.{i}, 127.0.0.1");
        assert_eq!(
            upgrade_status(&node, "/ws", &[("x-forwarded-for", &xff)]).await,
            101,
            "user {i}"
        );
    }
    // One user's reconnect storm is limited on its own.
    let storm: Vec<u16> = futures_util::future::join_all(
        (0..10).map(|_| upgrade_status(&node, "/ws", &[("x-forwarded-for", "198.51.100.7")])),
    )
    .await;
    assert_eq!(storm.iter().filter(|s| **s == 429).count(), 5, "{storm:?}");
    // IPv6 users share a bucket per /64.
    let node_ref = &node;
    let v6: Vec<u16> = futures_util::future::join_all((0..10).map(|i| async move {
        let xff = format!("2001:db8:0:1::{i:x}");
        upgrade_status(node_ref, "/ws", &[("x-forwarded-for", &xff)]).await
    }))
    .await;
    assert_eq!(v6.iter().filter(|s| **s == 429).count(), 5, "{v6:?}");
    node.stop().await;
    // From a peer that is not trusted, the header is a lie that buys nothing.
    let node = Node::start("sqlite::memory:", limited("10.0.0.0/8")).await;
    let node_ref = &node;
    let spoofed: Vec<u16> = futures_util::future::join_all((0..10).map(|i| async move {
        let xff = format!("203.0.113.{i}");
        upgrade_status(node_ref, "/ws", &[("x-forwarded-for", &xff)]).await
    }))
    .await;
    assert_eq!(
        spoofed.iter().filter(|s| **s == 429).count(),
        5,
        "{spoofed:?}"
    );
    node.stop().await;
}

/// A raw HTTP/1.1 request; the status and body.
async fn raw(node: &Node, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn malformed_requests_get_json_errors_and_pages_get_security_headers() {
    let mut config = GatewayConfig::default();
    config.auth.api_key = Some(API_KEY.into());
    let node = Node::start("sqlite::memory:", config).await;
    // Invalid UTF-8 in the room of the path.
    let (status, body) = raw(
        &node,
        b"GET /api/rooms/%FF%FE/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_room")));
    // A plain GET of /ws, no upgrade.
    let (status, body) = raw(
        &node,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert!(status >= 400 && body["code"].is_string(), "{status} {body}");
    // The publish API reads its body like every client document: the key
    // serde_json treats as a raw value is an ordinary key, not a way to
    // smuggle a send in a string.
    let room = unique("r");
    let smuggled = json!({
        "$serde_json::private::RawValue": "{\"text\":\"smuggled\",\"from\":\"ops\"}"
    });
    let response = reqwest::Client::new()
        .post(node.http(&format!("/api/rooms/{room}/messages")))
        .bearer_auth(API_KEY)
        .json(&smuggled)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let stored: Value = reqwest::get(node.http(&format!("/api/rooms/{room}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored, json!([]), "nothing was published");
    // The page may not be framed, sniffed, or load from elsewhere.
    let page = reqwest::get(node.http("/")).await.unwrap();
    let headers = page.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_client_config_gives_the_servers_rules_and_no_secret() {
    let mut config = required();
    config.limits.max_message_bytes = 1234;
    config.limits.history_default = 7;
    let node = Node::start("sqlite::memory:", config).await;
    let (status, body) = get(node.http("/api/config"), None).await;
    assert_eq!(status, 200, "public even with AUTH=required");
    assert_eq!(body["max_message_bytes"], 1234);
    assert_eq!(body["history_default"], 7);
    assert_eq!(body["room_pattern"], "^[A-Za-z0-9_.:-]{1,64}$");
    assert_eq!(body["auth"], "required");
    let text = body.to_string();
    assert!(!text.contains(API_KEY) && !text.contains(SECRET), "{text}");
    node.stop().await;
}
