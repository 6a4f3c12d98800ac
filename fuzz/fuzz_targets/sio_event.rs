//! Socket.IO events: `Request::from_event` on an arbitrary event name and
//! arbitrary JSON data.
//!
//! Input: `<event name bytes> NUL <JSON document>`; without a NUL the whole
//! input is the JSON document and the name is empty. Inputs whose document
//! is not JSON are skipped (socketioxide only hands over parsed values).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use switchboard_protocol::{ClientFrame, ErrorCode, Request};
use switchboard_protocol_fuzz::{
    all_limits, assert_same_answer, check_limits_agree, check_result, default_limits, tiny_limits,
};

/// The events a Socket.IO client emits; only the first four are requests,
/// `event:message` is mapped onto `send` by the gateway (checked below).
const EVENTS: [&str; 10] = [
    "join",
    "leave",
    "send",
    "presence",
    "ping",
    "event:message",
    "message",
    "Join",
    "send ",
    "",
];

fn check_event(event: &str, data: &Value) {
    let default = Request::from_event(event, data, &default_limits());
    check_result(&default, &default_limits());
    let tiny = Request::from_event(event, data, &tiny_limits());
    check_result(&tiny, &tiny_limits());
    check_limits_agree(&default, &tiny, event);

    let is_request = matches!(event, "join" | "leave" | "send" | "presence");
    if !is_request || !data.is_object() {
        // Unknown events and non-object data: `bad_frame`, nothing to echo.
        for r in [&default, &tiny] {
            let err = r.as_ref().expect_err("refused");
            assert_eq!(err.code, ErrorCode::BadFrame, "{event}: {err}");
            assert_eq!(err.r#ref, None, "{event}: {err:?}");
        }
        return;
    }
    // The same fields as a `/ws` frame get the same answer.
    let mut frame = data.clone();
    frame["type"] = Value::String(event.to_owned());
    let frame = frame.to_string();
    for limits in all_limits() {
        let by_event = Request::from_event(event, data, &limits);
        let by_frame = Request::decode(&frame, &limits);
        assert_same_answer(&by_event, &by_frame, &frame);
    }
}

/// `event:message` with a string: the gateway sends it to `lobby`.
fn check_legacy_message(data: &Value) {
    let Value::String(text) = data else { return };
    let request = json!({ "room": "lobby", "text": text });
    for limits in all_limits() {
        let r = Request::from_event("send", &request, &limits);
        check_result(&r, &limits);
        if text.is_empty() || switchboard_protocol::json_string_len(text) > limits.max_message_bytes {
            assert_eq!(r.expect_err("refused").code, ErrorCode::TooLarge);
        } else {
            let r = r.expect("accepted");
            assert_eq!(r.r#ref, None);
            match r.frame {
                ClientFrame::Send {
                    room,
                    text: t,
                    id,
                    ephemeral,
                } => {
                    assert_eq!(room.as_str(), "lobby");
                    assert_eq!(&t, text);
                    assert_eq!(id, None);
                    assert!(!ephemeral);
                }
                other => panic!("event:message became {other:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (name, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    check_event(&name, &value);
    for event in EVENTS {
        if event != name {
            check_event(event, &value);
        }
    }
    check_legacy_message(&value);
});
