//! `/ws` text frames: `Request::decode` on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::Request;
use switchboard_protocol_fuzz::{check_limits_agree, check_result, default_limits, tiny_limits};

fn decode_all(text: &str) {
    let default = Request::decode(text, &default_limits());
    check_result(&default, &default_limits());
    let tiny = Request::decode(text, &tiny_limits());
    check_result(&tiny, &tiny_limits());
    check_limits_agree(&default, &tiny, text);
}

fuzz_target!(|data: &[u8]| {
    // The gateway only hands valid UTF-8 to the decoder (1007 otherwise),
    // but a lossy decoding of the rest reaches the same code with more
    // shapes of input.
    match std::str::from_utf8(data) {
        Ok(text) => decode_all(text),
        Err(_) => decode_all(&String::from_utf8_lossy(data)),
    }
});
