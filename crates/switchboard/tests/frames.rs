//! Bad input on `/ws`: every malformed frame gets its error code and the
//! connection goes on; oversized frames, invalid UTF-8 and bad names are
//! refused with the close code or HTTP status the protocol promises.

mod common;

use common::{Client, Node, unique};
use serde_json::{Value, json};
use switchboard_gateway::GatewayConfig;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn expect_error(c: &mut Client, frame: Value, code: &str) -> Value {
    c.send(frame.clone()).await;
    let v = c.recv().await;
    assert_eq!(v["type"], "error", "{frame} -> {v}");
    assert_eq!(v["code"], code, "{frame} -> {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    v
}

async fn still_works(c: &mut Client) {
    c.send(json!({"type": "ping", "ref": "alive"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "ref": "alive"}));
}

#[tokio::test]
async fn every_bad_input_gets_its_code_and_the_connection_survives() {
    let config = GatewayConfig {
        max_rooms_per_connection: 2,
        ..GatewayConfig::default()
    };
    let node = Node::start("sqlite::memory:", config).await;
    let mut c = node.client("c").await;
    let room = unique("bad");
    c.join(&room).await;

    for raw in [
        "not json",
        "[1,2]",
        "{}",
        r#"{"type":"dance"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"send","room":5,"text":"x"}"#,
    ] {
        c.send_raw(Ws::text(raw)).await;
        let v = c.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("bad_frame")),
            "{raw}"
        );
        still_works(&mut c).await;
    }
    c.send_raw(Ws::binary(vec![1u8, 2, 3])).await;
    assert_eq!(c.recv().await["code"], "bad_frame");
    still_works(&mut c).await;

    let v = expect_error(
        &mut c,
        json!({"type": "join", "room": "has space", "ref": 9}),
        "bad_room",
    )
    .await;
    assert_eq!(v["ref"], 9);
    still_works(&mut c).await;
    expect_error(
        &mut c,
        json!({"type": "send", "room": room, "text": ""}),
        "bad_frame",
    )
    .await;
    let v = expect_error(
        &mut c,
        json!({"type": "send", "room": room, "text": "x".repeat(4097), "ref": "big"}),
        "too_large",
    )
    .await;
    assert_eq!(v["ref"], "big");
    still_works(&mut c).await;
    expect_error(
        &mut c,
        json!({"type": "send", "room": unique("elsewhere"), "text": "x"}),
        "not_joined",
    )
    .await;
    still_works(&mut c).await;
    c.join(&unique("second")).await;
    expect_error(
        &mut c,
        json!({"type": "join", "room": unique("third")}),
        "too_many_rooms",
    )
    .await;
    still_works(&mut c).await;
    // The connection still delivers after all of that.
    c.send_text(&room, "still here").await;
    node.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let node = Node::memory().await;
    let mut c = node.client("c").await;
    c.send_raw(Ws::text("x".repeat(70_000))).await;
    assert_eq!(c.close_code().await, Some(1009));
    node.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let node = Node::memory().await;
    let mut c = node.client("c").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x80], OpCode::Data(Data::Text), true);
    c.send_raw(Ws::Frame(frame)).await;
    assert_eq!(c.close_code().await, Some(1007));
    node.stop().await;
}

#[tokio::test]
async fn bad_names_are_refused_before_the_upgrade() {
    let node = Node::memory().await;
    let long = "n".repeat(33);
    for name in ["%20%20", long.as_str()] {
        let err = tokio_tungstenite::connect_async(format!("ws://{}/ws?name={name}", node.addr))
            .await
            .unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(res) => {
                assert_eq!(res.status(), 400);
                let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["code"], "bad_name");
            }
            other => panic!("expected HTTP 400, got {other:?}"),
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn anonymous_users_get_a_name() {
    let node = Node::memory().await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.addr))
        .await
        .unwrap();
    let mut c = Client::from_stream(ws);
    let room = unique("anon");
    c.join(&room).await;
    c.send_text(&room, "who am i").await;
    let m = c.recv_type("message").await;
    let from = m["from"].as_str().unwrap();
    assert!(from.starts_with("anon-") && from.len() == 11, "{from}");
    node.stop().await;
}
