//! The wire protocol of switchboard, free of I/O.
//!
//! Everything a client can say and everything the server answers is an enum
//! here that decodes from or encodes to JSON text; the gateway only moves the
//! bytes. Keeping the codec apart from sockets lets it be unit tested and
//! fuzzed on its own, and lets the Socket.IO events and the plain WebSocket
//! frames share one set of validation rules.

mod error;
mod message;
mod plain;
mod request;
mod server;

pub use error::{ErrorCode, FrameError};
pub use message::{
    Data, MAX_NAME_CHARS, MAX_ROOM_LEN, Message, Payload, Position, ROOM_PATTERN, RoomName,
    RoomNameError, now_ms, validate_name,
};
pub use plain::PlainValue;
pub use request::{
    ClientFrame, Limits, MAX_EPOCH_LEN, MAX_REF_LEN, MAX_TOKEN_BYTES, Request, json_string_len,
};
pub use server::{Member, PresenceChange, PresenceEvent, ServerFrame};
