//! Inputs found by the fuzz targets in fuzz/ (see fuzz/README.md), kept as
//! plain tests so they run without a fuzzer.

use serde_json::Value;
use switchboard_protocol::{ClientFrame, ErrorCode, Limits, Request, RoomName, ServerFrame};

/// serde_json's private key that, with its `raw_value` feature on, makes
/// `Value`'s `Deserialize` parse the key's string value as the document.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// sio_event, crash-ce6373b182585fbaa65520ec6a61b0c517ff4214: the `/ws` frame
/// with the same fields as a Socket.IO `join` was refused as "not JSON"
/// (serde_json parsed the string of the first key, `RAW_VALUE_KEY` once the
/// keys were sorted, as the whole frame) while the event was accepted.
#[test]
fn raw_value_key_is_an_ordinary_key() {
    let limits = Limits::default();
    let data: Value = serde_json::from_str(
        r#"{"room":"lobby","$serde_json::private::RawValue":" 44444b-7c2refe8f-0a1b[2c3d4e5f","re;":"c0"}"#,
    )
    .unwrap();
    let by_event = Request::from_event("join", &data, &limits).unwrap();
    let mut frame = data.clone();
    frame["type"] = "join".into();
    let frame = frame.to_string();
    assert!(frame.starts_with(r#"{"$serde_json::private::RawValue":"#));
    assert_eq!(Request::decode(&frame, &limits), Ok(by_event.clone()));
    assert_eq!(
        by_event.frame,
        ClientFrame::Join {
            room: RoomName::parse("lobby").unwrap(),
            history: None,
            since: None,
            presence: false
        }
    );

    // A frame cannot hide inside that key's string either.
    let smuggled = format!(r#"{{"{RAW_VALUE_KEY}":"{{\"type\":\"ping\"}}"}}"#);
    let err = Request::decode(&smuggled, &limits).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadFrame);
    assert_eq!(err.message, "missing field `type`");
}

/// Each string under `RAW_VALUE_KEY` used to start a new document with a new
/// recursion limit of 128, so a frame well under the default
/// `MAX_FRAME_BYTES` (64 KiB) nested 1,500 deep and overflowed the 2 MiB
/// stack of a tokio worker in a debug build, aborting the server.
#[test]
fn raw_value_keys_do_not_nest_past_the_recursion_limit() {
    let mut doc = String::from(r#"{"type":"ping"}"#);
    for _ in 0..12 {
        doc = format!(
            "{}{{\"{RAW_VALUE_KEY}\":{}}}{}",
            "[".repeat(125),
            serde_json::to_string(&doc).unwrap(),
            "]".repeat(125)
        );
    }
    let frame = format!(r#"{{"type":"ping","ref":1,"extra":{doc}}}"#);
    assert!(frame.len() < 64 * 1024, "{} bytes", frame.len());
    let request = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Request::decode(&frame, &Limits::default()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(request.frame, ClientFrame::Ping);
    assert_eq!(request.r#ref, Some(1.into()));
}

/// Float `ref`s the fuzzer (ws_frame) and a sample of `Math.random()` values
/// turned up, with the `f64` a correctly rounding client (JavaScript, Python,
/// Rust's `str::parse`) reads from them.
const FLOAT_REFS: [&str; 3] = [
    // ws_frame, crash-eaf72ea0b649fa05591acd272073e4bc189e92b3
    "12222222222222222222222222222222222222222222222222222222.0",
    "1.2222222222222221e+55",
    // What `ref: Math.random()` can send: about one in nine such values
    // came back different.
    "0.19391804148893754",
];

/// The number in `{"type":"pong","ref":N}` as the client parses it.
fn echoed_ref(encoded: &str) -> f64 {
    let n = encoded
        .strip_prefix(r#"{"type":"pong","ref":"#)
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("unexpected pong {encoded}"));
    n.parse().unwrap()
}

/// A numeric `ref` is echoed as the number the client sent.
///
/// Fails while serde_json parses floats on a best-effort basis (a few ULPs
/// off); enabling serde_json's `float_roundtrip` feature for this crate
/// fixes it for `/ws` and, the parser being shared, for Socket.IO too.
#[test]
fn ws_float_ref_is_echoed_as_sent() {
    for sent in FLOAT_REFS {
        let request = Request::decode(
            &format!(r#"{{"type":"ping","ref":{sent}}}"#),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(request.frame, ClientFrame::Ping);
        let pong = ServerFrame::Pong {
            r#ref: request.r#ref,
        }
        .encode();
        assert_eq!(
            echoed_ref(&pong).to_bits(),
            sent.parse::<f64>().unwrap().to_bits(),
            "ref {sent} echoed as {pong}"
        );
    }
}

/// The same through the Socket.IO mapping (the gateway's event data is
/// parsed by the same serde_json).
#[test]
fn sio_float_ref_is_echoed_as_sent() {
    for sent in FLOAT_REFS {
        let data: Value =
            serde_json::from_str(&format!(r#"{{"room":"lobby","ref":{sent}}}"#)).unwrap();
        let request = Request::from_event("leave", &data, &Limits::default()).unwrap();
        let pong = ServerFrame::Pong {
            r#ref: request.r#ref,
        }
        .encode();
        assert_eq!(
            echoed_ref(&pong).to_bits(),
            sent.parse::<f64>().unwrap().to_bits(),
            "ref {sent} echoed as {pong}"
        );
    }
}

/// Integer `ref`s, the usual kind, are exact whatever their size: those that
/// fit 64 bits stay integers, larger ones are read correctly rounded.
#[test]
fn integer_refs_are_echoed_as_sent() {
    for sent in [
        "0",
        "-7",
        "9007199254740993",
        "18446744073709551615",
        "-9223372036854775808",
        // ws_frame, crash-0c4e4b0ce5f1112df8e94992c4b211cafe09b960 (a false
        // alarm of the fuzz target's own re-parsing; the echo is right).
        "-1144478460737095516161",
    ] {
        let request = Request::decode(
            &format!(r#"{{"type":"ping","ref":{sent}}}"#),
            &Limits::default(),
        )
        .unwrap();
        let pong = ServerFrame::Pong {
            r#ref: request.r#ref,
        }
        .encode();
        let echoed = pong
            .strip_prefix(r#"{"type":"pong","ref":"#)
            .and_then(|s| s.strip_suffix('}'))
            .unwrap();
        match (sent.parse::<i128>(), echoed.parse::<i128>()) {
            (Ok(a), Ok(b)) if a.unsigned_abs() <= u128::from(u64::MAX) => assert_eq!(a, b),
            _ => assert_eq!(
                echoed.parse::<f64>().unwrap().to_bits(),
                sent.parse::<f64>().unwrap().to_bits(),
                "ref {sent} echoed as {pong}"
            ),
        }
    }
}
