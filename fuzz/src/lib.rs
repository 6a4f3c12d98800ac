//! Invariants shared by the fuzz targets of `switchboard-protocol`.
//!
//! Every check panics (so libFuzzer reports a crash) when the decoders break
//! a promise of docs/protocol.md: they must never panic, must only answer
//! with the stable error codes, must keep accepted requests within the
//! limits, and what they accept must survive the crate's encoders.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use switchboard_protocol::{
    ClientFrame, ErrorCode, FrameError, Limits, MAX_REF_LEN, MAX_ROOM_LEN, Message, Request,
    RoomName, ServerFrame, json_string_len,
};
use uuid::Uuid;

/// The `code`s clients may see (docs/protocol.md, "errors").
pub const STABLE_CODES: [&str; 8] = [
    "bad_frame",
    "bad_room",
    "too_large",
    "not_joined",
    "too_many_rooms",
    "unavailable",
    "forbidden",
    "rate_limited",
];

/// The server's default limits.
pub fn default_limits() -> Limits {
    Limits::default()
}

/// Limits small enough that most fuzzed texts hit them.
pub fn tiny_limits() -> Limits {
    Limits {
        max_message_bytes: 8,
        history_default: 0,
        history_max: 3,
    }
}

/// Every limit the targets try, the server's first.
pub fn all_limits() -> [Limits; 2] {
    [default_limits(), tiny_limits()]
}

/// Checks one decoder answer against the limits it was decoded with.
pub fn check_result(result: &Result<Request, FrameError>, limits: &Limits) {
    match result {
        Ok(request) => check_request(request, limits),
        Err(err) => check_error(err),
    }
}

/// An accepted request is within the limits, re-encodes, and decodes again
/// to itself.
pub fn check_request(request: &Request, limits: &Limits) {
    check_ref(&request.r#ref);
    match &request.frame {
        ClientFrame::Join {
            room,
            history,
            since,
            ..
        } => {
            check_room(room);
            if let Some(since) = since {
                assert!(since.epoch.len() <= switchboard_protocol::MAX_EPOCH_LEN);
            }
            assert!(
                history.is_none_or(|h| h <= limits.history_max),
                "history {history:?} over the cap {}",
                limits.history_max
            );
        }
        ClientFrame::Leave { room } | ClientFrame::Presence { room } => check_room(room),
        ClientFrame::Send { room, payload, .. } => {
            check_room(room);
            assert!(
                !payload.text.is_empty() || payload.data.is_some(),
                "an empty send was accepted"
            );
            // The limit is on the escaped size, what the text and data cost
            // on the wire.
            let cost = json_string_len(&payload.text)
                + payload.data.as_ref().map_or(0, |d| d.get().len());
            assert!(
                cost <= limits.max_message_bytes,
                "a send of {cost} bytes as JSON passed the limit of {}",
                limits.max_message_bytes
            );
            if let Some(data) = &payload.data {
                let _: Value = serde_json::from_str(data.get()).expect("data is JSON");
            }
        }
        ClientFrame::Ping => {}
        ClientFrame::Refresh { token } => {
            assert!(!token.is_empty() && token.len() <= switchboard_protocol::MAX_TOKEN_BYTES);
        }
    }
    check_answers(request);
    // The request as a client would have written it decodes to itself.
    let text = encode_request(request);
    match Request::decode(&text, limits) {
        Ok(again) => assert_same_request(&again, request, &text),
        Err(err) => panic!("re-encoded request {text} refused: {err}"),
    }
}

/// A refused request carries a stable code, a message, and a valid `ref`;
/// its error frame encodes to what the docs show.
pub fn check_error(err: &FrameError) {
    // The decoders themselves only refuse with these three.
    assert!(
        matches!(
            err.code,
            ErrorCode::BadFrame | ErrorCode::BadRoom | ErrorCode::TooLarge
        ),
        "a decoder answered {:?}",
        err.code
    );
    let code = err.code.as_str();
    assert!(STABLE_CODES.contains(&code), "unstable code {code}");
    assert_eq!(
        serde_json::to_value(err.code).expect("codes serialize"),
        Value::String(code.to_owned()),
        "serde and as_str disagree"
    );
    assert!(!err.message.is_empty(), "an error without a message");
    check_ref(&err.r#ref);

    let encoded = ServerFrame::error(err.clone()).encode();
    let v: Value = serde_json::from_str(&encoded).expect("error frames are JSON");
    assert_eq!(v["type"], "error", "{encoded}");
    assert_eq!(v["code"], code, "{encoded}");
    assert_eq!(v["message"], err.message.as_str(), "{encoded}");
    assert_ref_echoed(&v, &err.r#ref, &encoded);
}

/// Two answers to the same request (the `/ws` frame and the Socket.IO event
/// carrying the same fields) must agree.
pub fn assert_same_answer(
    a: &Result<Request, FrameError>,
    b: &Result<Request, FrameError>,
    what: &str,
) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_same_request(a, b, what),
        (Err(a), Err(b)) => {
            assert_eq!(a.code, b.code, "{what}: {a} vs {b}");
            assert!(same_ref(&a.r#ref, &b.r#ref), "{what}: {a:?} vs {b:?}");
        }
        (a, b) => panic!("{what}: {a:?} vs {b:?}"),
    }
}

/// The same input decoded with the server's limits and with the tiny ones:
/// the tiny limits only refuse longer texts and cap history lower.
pub fn check_limits_agree(
    default: &Result<Request, FrameError>,
    tiny: &Result<Request, FrameError>,
    what: &str,
) {
    let tiny_limits = tiny_limits();
    match (default, tiny) {
        (Ok(d), Ok(t)) => {
            assert!(same_ref(&d.r#ref, &t.r#ref), "{what}");
            match (&d.frame, &t.frame) {
                (
                    ClientFrame::Join {
                        room: a,
                        history: h,
                        since: since_a,
                        presence: p,
                    },
                    ClientFrame::Join {
                        room: b,
                        history: g,
                        since: since_b,
                        presence: q,
                    },
                ) => {
                    assert_eq!(a, b, "{what}");
                    assert_eq!(since_a, since_b, "{what}: since depends on no limit");
                    assert_eq!(p, q, "{what}: presence depends on no limit");
                    assert!(
                        *g == h.map(|h| h.min(tiny_limits.history_max)),
                        "{what}: history {h:?} became {g:?}"
                    );
                }
                (d, t) => assert_eq!(d, t, "{what}"),
            }
        }
        (Ok(d), Err(t)) => {
            assert_eq!(t.code, ErrorCode::TooLarge, "{what}: {t}");
            match &d.frame {
                ClientFrame::Send { payload, .. } => {
                    assert!(payload.cost() > tiny_limits.max_message_bytes, "{what}: {t}")
                }
                other => panic!("{what}: {other:?} refused only by the tiny limits: {t}"),
            }
        }
        (Err(d), Ok(t)) => panic!("{what}: the tiny limits accept {t:?}, the default refuse: {d}"),
        (Err(d), Err(t)) => {
            assert!(
                d.code == t.code || t.code == ErrorCode::TooLarge,
                "{what}: {d} vs {t}"
            );
            assert!(same_ref(&d.r#ref, &t.r#ref), "{what}: {d:?} vs {t:?}");
        }
    }
}

fn check_ref(r#ref: &Option<Value>) {
    match r#ref {
        None | Some(Value::Number(_)) => {}
        Some(Value::String(s)) => assert!(s.len() <= MAX_REF_LEN, "a ref of {} bytes", s.len()),
        Some(other) => panic!("ref {other} is neither a number nor a string"),
    }
}

fn check_room(room: &RoomName) {
    let s = room.as_str();
    assert!(!s.is_empty() && s.len() <= MAX_ROOM_LEN, "room {s:?}");
    assert_eq!(RoomName::parse(s).as_ref(), Ok(room), "room {s:?}");
}

/// Encodes the answers the gateway would build from this request, and
/// checks they are JSON with the request's fields.
fn check_answers(request: &Request) {
    let r#ref = request.r#ref.clone();
    let frame = match &request.frame {
        ClientFrame::Join { room, .. } => ServerFrame::Joined {
            room: room.clone(),
            history: vec![],
            truncated: false,
            position: None,
            recovered: None,
            count: None,
            r#ref: r#ref.clone(),
        },
        ClientFrame::Presence { room } => ServerFrame::Presence {
            room: room.clone(),
            count: 0,
            members: vec![],
            truncated: false,
            r#ref: r#ref.clone(),
        },
        ClientFrame::Leave { room } => ServerFrame::Left {
            room: room.clone(),
            r#ref: r#ref.clone(),
        },
        ClientFrame::Send {
            room, payload, id, ..
        } => {
            let id = id.unwrap_or_else(Uuid::nil);
            let m = Message {
                id,
                room: room.clone(),
                from: "fuzz".into(),
                text: payload.text.clone(),
                ts: 0,
                seq: 0,
                epoch: String::new(),
                data: payload.data.clone(),
                deleted: false,
            };
            let encoded = ServerFrame::encode_message(&m);
            assert_eq!(encoded, ServerFrame::Message(m.clone()).encode());
            let v: Value = serde_json::from_str(&encoded).expect("message frames are JSON");
            assert_eq!(v["type"], "message", "{encoded}");
            let back: Message = serde_json::from_str(&encoded).expect("message frames decode");
            assert_eq!(back, m, "{encoded}");
            ServerFrame::Ack {
                r#ref: r#ref.clone(),
                id,
                seq: m.seq,
                epoch: m.epoch,
            }
        }
        ClientFrame::Ping => ServerFrame::Pong {
            r#ref: r#ref.clone(),
        },
        ClientFrame::Refresh { .. } => ServerFrame::Refreshed {
            exp: u64::MAX,
            r#ref: r#ref.clone(),
        },
    };
    let encoded = frame.encode();
    let v: Value = serde_json::from_str(&encoded).expect("server frames are JSON");
    assert!(v["type"].is_string(), "{encoded}");
    assert_ref_echoed(&v, &r#ref, &encoded);
    if let ClientFrame::Join { room, .. }
    | ClientFrame::Leave { room }
    | ClientFrame::Presence { room } = &request.frame
    {
        assert_eq!(v["room"], room.as_str(), "{encoded}");
    }
}

/// The request as a `/ws` client would write it.
pub fn encode_request(request: &Request) -> String {
    let mut map = Map::new();
    match &request.frame {
        ClientFrame::Join {
            room,
            history,
            since,
            presence,
        } => {
            map.insert("type".into(), json!("join"));
            map.insert("room".into(), json!(room.as_str()));
            if let Some(history) = history {
                map.insert("history".into(), json!(history));
            }
            if let Some(since) = since {
                map.insert("since".into(), json!({"seq": since.seq, "epoch": since.epoch}));
            }
            if *presence {
                map.insert("presence".into(), json!(true));
            }
        }
        ClientFrame::Presence { room } => {
            map.insert("type".into(), json!("presence"));
            map.insert("room".into(), json!(room.as_str()));
        }
        ClientFrame::Leave { room } => {
            map.insert("type".into(), json!("leave"));
            map.insert("room".into(), json!(room.as_str()));
        }
        ClientFrame::Send {
            room,
            payload,
            id,
            ephemeral,
        } => {
            map.insert("type".into(), json!("send"));
            map.insert("room".into(), json!(room.as_str()));
            if !payload.text.is_empty() {
                map.insert("text".into(), json!(payload.text));
            }
            if let Some(data) = &payload.data {
                let value: Value = serde_json::from_str(data.get()).expect("data is JSON");
                map.insert("data".into(), value);
            }
            if let Some(id) = id {
                map.insert("id".into(), json!(id.to_string()));
            }
            if *ephemeral {
                map.insert("ephemeral".into(), json!(true));
            }
        }
        ClientFrame::Ping => {
            map.insert("type".into(), json!("ping"));
        }
        ClientFrame::Refresh { token } => {
            map.insert("type".into(), json!("refresh"));
            map.insert("token".into(), json!(token));
        }
    }
    if let Some(r#ref) = &request.r#ref {
        map.insert("ref".into(), r#ref.clone());
    }
    Value::Object(map).to_string()
}

fn assert_same_request(a: &Request, b: &Request, what: &str) {
    assert_eq!(a.frame, b.frame, "{what}");
    assert!(
        same_ref(&a.r#ref, &b.r#ref),
        "{what}: ref {:?} vs {:?}",
        a.r#ref,
        b.r#ref
    );
}

fn assert_ref_echoed(v: &Value, r#ref: &Option<Value>, encoded: &str) {
    match r#ref {
        None => assert!(v.get("ref").is_none(), "{encoded}"),
        Some(r) => assert!(
            same_ref(&v.get("ref").cloned(), &Some(r.clone())),
            "ref {r} echoed as {encoded}"
        ),
    }
}

/// `ref`s compare exactly, except non-integer numbers when serde_json does
/// not parse floats exactly.
///
/// Without serde_json's `float_roundtrip` feature (not enabled in this
/// workspace) serde_json parses floats on a best-effort basis, a few ULPs
/// off for about one `Math.random()` value in nine. Then a float `ref` is
/// echoed as a slightly different number than the client sent (see the
/// ignored tests in crates/protocol/tests/fuzz_regressions.rs), and the
/// re-parsing done by these checks drifts the same way, so floats are only
/// compared to within a relative 1e-14. Once the feature is enabled (in
/// crates/protocol/Cargo.toml, which this crate builds against) the checks
/// become exact by themselves.
fn same_ref(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y)))
            if x.is_f64() && y.is_f64() && !*FLOATS_ROUND_TRIP =>
        {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// Whether serde_json parses floats correctly rounded (`float_roundtrip`).
static FLOATS_ROUND_TRIP: LazyLock<bool> = LazyLock::new(|| {
    [
        "0.19391804148893754",
        "1.2222222222222221e+55",
        "-1.1444784607370955e+21",
    ]
    .iter()
    .all(|s| serde_json::from_str::<f64>(s).ok() == s.parse::<f64>().ok())
});
