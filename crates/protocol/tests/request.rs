//! Decoding client requests: every field rule, the escaped size limit,
//! and the typed sends (docs/protocol.md).

use serde_json::Value;
use serde_json::json;
use switchboard_protocol::{
    ClientFrame, ErrorCode, FrameError, Limits, Request, RoomName, json_string_len,
};
use uuid::Uuid;

fn decode(text: &str) -> Result<Request, FrameError> {
    Request::decode(text, &Limits::default())
}

fn code(text: &str) -> ErrorCode {
    decode(text).unwrap_err().code
}

#[test]
fn wire_length_is_what_serde_json_writes() {
    let samples = [
        String::new(),
        "plain".into(),
        "quote \" and back\\slash / é 名前 🎉".into(),
        "\n\r\t\u{8}\u{c}".into(),
        (0u8..0x20).map(char::from).collect::<String>(),
        "\u{7f}\u{2028}".into(),
    ];
    for s in samples {
        let encoded = serde_json::to_string(&s).unwrap();
        assert_eq!(json_string_len(&s), encoded.len() - 2, "{encoded}");
    }
}

#[test]
fn the_size_limit_is_the_escaped_size() {
    let limits = Limits {
        max_message_bytes: 60,
        ..Limits::default()
    };
    let send =
        |text: &str| Request::from_event("send", &json!({"room": "r", "text": text}), &limits);
    assert!(send(&"a".repeat(60)).is_ok());
    assert!(
        send(&"\u{1}".repeat(10)).is_ok(),
        "ten controls are 60 bytes"
    );
    let err = send(&"\u{1}".repeat(11)).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    assert!(err.message.contains("66 bytes"), "{}", err.message);
    assert!(send(&"\"".repeat(31)).is_err());
}

#[test]
fn decodes_every_request() {
    let r = decode(r#"{"type":"join","room":"lobby","history":10}"#).unwrap();
    assert_eq!(
        r.frame,
        ClientFrame::Join {
            room: RoomName::parse("lobby").unwrap(),
            history: Some(10),
            since: None,
            presence: false
        }
    );
    let r = decode(r#"{"type":"join","room":"lobby"}"#).unwrap();
    assert_eq!(
        r.frame,
        ClientFrame::Join {
            room: RoomName::parse("lobby").unwrap(),
            history: None,
            since: None,
            presence: false
        }
    );
    let r = decode(r#"{"type":"join","room":"lobby","history":100000}"#).unwrap();
    assert_eq!(
        r.frame,
        ClientFrame::Join {
            room: RoomName::parse("lobby").unwrap(),
            history: Some(500),
            since: None,
            presence: false
        }
    );
    let r = decode(r#"{"type":"join","room":"lobby","presence":true}"#).unwrap();
    assert!(matches!(r.frame, ClientFrame::Join { presence: true, .. }));
    let err = decode(r#"{"type":"join","room":"lobby","presence":"yes"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadFrame);
    assert!(err.message.contains("presence"), "{}", err.message);
    assert_eq!(
        decode(r#"{"type":"presence","room":"lobby","ref":2}"#)
            .unwrap()
            .frame,
        ClientFrame::Presence {
            room: RoomName::parse("lobby").unwrap()
        }
    );
    assert_eq!(
        decode(r#"{"type":"presence"}"#).unwrap_err().code,
        ErrorCode::BadFrame
    );
    let r = decode(r#"{"type":"leave","room":"x","ref":7}"#).unwrap();
    assert_eq!(r.r#ref, Some(json!(7)));
    assert_eq!(
        r.frame,
        ClientFrame::Leave {
            room: RoomName::parse("x").unwrap()
        }
    );
    let id = Uuid::now_v7();
    let r = decode(&format!(
        r#"{{"type":"send","room":"x","text":"hi","ref":"c1","id":"{id}"}}"#
    ))
    .unwrap();
    assert_eq!(r.r#ref, Some(json!("c1")));
    assert_eq!(
        r.frame,
        ClientFrame::Send {
            room: RoomName::parse("x").unwrap(),
            payload: "hi".into(),
            id: Some(id),
            ephemeral: false
        }
    );
    assert_eq!(
        decode(r#"{"type":"ping"}"#).unwrap().frame,
        ClientFrame::Ping
    );
    assert_eq!(
        decode(r#"{"type":"ping","extra":true}"#).unwrap().frame,
        ClientFrame::Ping
    );
}

#[test]
fn bad_frames() {
    assert_eq!(code("not json"), ErrorCode::BadFrame);
    assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
    assert_eq!(code("\"send\""), ErrorCode::BadFrame);
    assert_eq!(code("{}"), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"type":"join","room":5}"#), ErrorCode::BadFrame);
    assert_eq!(
        code(r#"{"type":"join","room":"a","history":-1}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code(r#"{"type":"join","room":"a","history":"5"}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(code(r#"{"type":"send","room":"a"}"#), ErrorCode::BadFrame);
    assert_eq!(
        code(r#"{"type":"send","room":"a","text":1}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code(r#"{"type":"send","room":"a","text":"x","id":"nope"}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code(r#"{"type":"send","room":"a","text":"x","id":3}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code(r#"{"type":"ping","ref":{"a":1}}"#),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code(&format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(129))),
        ErrorCode::BadFrame
    );
}

#[test]
fn bad_room_and_size() {
    assert_eq!(
        code(r#"{"type":"join","room":"no spaces"}"#),
        ErrorCode::BadRoom
    );
    assert_eq!(code(r#"{"type":"join","room":""}"#), ErrorCode::BadRoom);
    assert_eq!(
        code(r#"{"type":"send","room":"a","text":""}"#),
        ErrorCode::BadFrame,
        "an empty text is not a message"
    );
    let limits = Limits {
        max_message_bytes: 4,
        ..Limits::default()
    };
    assert!(Request::decode(r#"{"type":"send","room":"a","text":"four"}"#, &limits).is_ok());
    let err = Request::decode(
        r#"{"type":"send","room":"a","text":"fives","ref":"r"}"#,
        &limits,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    assert_eq!(err.r#ref, Some(json!("r")));
    // Bytes, not characters: "éé" is four bytes.
    assert!(Request::decode(r#"{"type":"send","room":"a","text":"ééé"}"#, &limits).is_err());
}

#[test]
fn errors_echo_the_ref() {
    let err = decode(r#"{"type":"join","room":"bad room","ref":"j1"}"#).unwrap_err();
    assert_eq!(err.r#ref, Some(json!("j1")));
    let err = decode(r#"{"type":"nope","ref":3}"#).unwrap_err();
    assert_eq!(err.r#ref, Some(json!(3)));
}

#[test]
fn socket_io_events_share_the_rules() {
    let limits = Limits::default();
    let r = Request::from_event("send", &json!({"room":"lobby","text":"hi"}), &limits).unwrap();
    assert!(matches!(r.frame, ClientFrame::Send { .. }));
    assert_eq!(
        Request::from_event("ping", &json!({}), &limits)
            .unwrap_err()
            .code,
        ErrorCode::BadFrame
    );
    assert_eq!(
        Request::from_event("join", &json!("lobby"), &limits)
            .unwrap_err()
            .code,
        ErrorCode::BadFrame
    );
    assert_eq!(
        Request::from_event("join", &json!({"room":"a b"}), &limits)
            .unwrap_err()
            .code,
        ErrorCode::BadRoom
    );
}

#[test]
fn typed_sends_follow_the_send_frame_rules() {
    let limits = Limits {
        max_message_bytes: 10,
        ..Limits::default()
    };
    let room = RoomName::parse("lobby").unwrap();
    let sent = Request::send_text(room.clone(), "hi".into(), &limits).unwrap();
    assert_eq!(
        sent.frame,
        ClientFrame::Send {
            room: room.clone(),
            payload: "hi".into(),
            id: None,
            ephemeral: false
        }
    );
    for (bad, code) in [
        ("", ErrorCode::BadFrame),
        ("\u{1}\u{1}", ErrorCode::TooLarge),
        ("eleven byte", ErrorCode::TooLarge),
    ] {
        let err = Request::send_text(room.clone(), bad.into(), &limits).unwrap_err();
        assert_eq!(err.code, code, "{bad:?}");
    }
    let id = Uuid::now_v7();
    let fields = json!({"text": "hey", "id": id.to_string()});
    let Value::Object(fields) = fields else {
        unreachable!()
    };
    let sent = Request::send_to(room.clone(), &fields, &limits).unwrap();
    assert_eq!(
        sent.frame,
        ClientFrame::Send {
            room: room.clone(),
            payload: "hey".into(),
            id: Some(id),
            ephemeral: false
        }
    );
    for (doc, code) in [
        (json!({"text": 5}), ErrorCode::BadFrame),
        (json!({}), ErrorCode::BadFrame),
        (json!({"text": "x", "id": "no"}), ErrorCode::BadFrame),
        (
            json!({"text": "x", "ephemeral": "yes"}),
            ErrorCode::BadFrame,
        ),
        (json!({"text": "x".repeat(11)}), ErrorCode::TooLarge),
    ] {
        let Value::Object(fields) = doc else {
            unreachable!()
        };
        let err = Request::send_to(room.clone(), &fields, &limits).unwrap_err();
        assert_eq!(err.code, code, "{fields:?}");
    }
}

#[test]
fn join_since_takes_a_position() {
    let r = decode(r#"{"type":"join","room":"a","since":{"seq":7,"epoch":"e1"}}"#).unwrap();
    let ClientFrame::Join { since, .. } = r.frame else {
        panic!("not a join")
    };
    assert_eq!(
        since,
        Some(switchboard_protocol::Position {
            epoch: "e1".into(),
            seq: 7
        })
    );
    let none = decode(r#"{"type":"join","room":"a","since":null}"#).unwrap();
    assert!(matches!(none.frame, ClientFrame::Join { since: None, .. }));
    for bad in [
        r#""7""#,
        r#"{"seq":-1,"epoch":"e"}"#,
        r#"{"seq":1.5,"epoch":"e"}"#,
        r#"{"epoch":"e"}"#,
        r#"{"seq":1}"#,
        r#"{"seq":1,"epoch":["e"]}"#,
    ] {
        let frame = format!(r#"{{"type":"join","room":"a","since":{bad},"ref":3}}"#);
        let err = decode(&frame).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame, "{bad}");
        assert_eq!(err.r#ref, Some(json!(3)), "{bad}");
    }
    let long = format!(
        r#"{{"type":"join","room":"a","since":{{"seq":1,"epoch":"{}"}}}}"#,
        "e".repeat(65)
    );
    assert_eq!(decode(&long).unwrap_err().code, ErrorCode::BadFrame);
}

#[test]
fn sends_carry_text_data_or_both() {
    let send = |frame: &str| match decode(frame).map(|r| r.frame) {
        Ok(ClientFrame::Send { payload, .. }) => Ok(payload),
        Ok(other) => panic!("not a send: {other:?}"),
        Err(e) => Err(e.code),
    };
    let data_only =
        send(r#"{"type":"send","room":"g","data":{"b": [1, 2.5, "x"], "a": null}}"#).unwrap();
    assert_eq!(data_only.text, "");
    let value: Value = serde_json::from_str(data_only.data.as_ref().unwrap().get()).unwrap();
    assert_eq!(value, json!({"b": [1, 2.5, "x"], "a": null}));
    let both = send(r#"{"type":"send","room":"g","text":"move","data":42}"#).unwrap();
    assert_eq!(
        (both.text.as_str(), both.data.unwrap().get()),
        ("move", "42")
    );
    for scalar in ["\"s\"", "true", "0", "[]", "{}"] {
        let frame = format!(r#"{{"type":"send","room":"g","data":{scalar}}}"#);
        assert_eq!(send(&frame).unwrap().data.unwrap().get(), scalar);
    }
    // `data: null` is no data: a text is needed then.
    assert!(
        send(r#"{"type":"send","room":"g","text":"t","data":null}"#)
            .unwrap()
            .data
            .is_none()
    );
    assert_eq!(
        send(r#"{"type":"send","room":"g","data":null}"#),
        Err(ErrorCode::BadFrame)
    );
    assert_eq!(
        send(r#"{"type":"send","room":"g"}"#),
        Err(ErrorCode::BadFrame)
    );
    assert_eq!(
        send(r#"{"type":"send","room":"g","text":5,"data":1}"#),
        Err(ErrorCode::BadFrame)
    );
    // Text and data count together, as their encoding.
    let most = Limits::default().max_message_bytes;
    let fits = format!(
        r#"{{"type":"send","room":"g","text":"{}","data":"{}"}}"#,
        "t".repeat(most - 12),
        "d".repeat(10)
    );
    assert!(send(&fits).is_ok(), "{} bytes", most);
    let over = fits.replace("\"tt", "\"ttt");
    assert_eq!(send(&over), Err(ErrorCode::TooLarge));
    // serde_json's private raw-value key never enters a message.
    let smuggled = r#"{"type":"send","room":"g","data":{"$serde_json::private::RawValue":"[1]"}}"#;
    assert_eq!(send(smuggled), Err(ErrorCode::BadFrame));
    let deep = format!(
        r#"{{"type":"send","room":"g","data":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(
        send(&deep),
        Err(ErrorCode::BadFrame),
        "nesting stays within serde_json's limit"
    );
}
