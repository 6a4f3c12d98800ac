//! The wire protocol of switchboard, free of I/O.
//!
//! Everything a client can say and everything the server answers is an enum
//! here that decodes from or encodes to JSON text; the gateway only moves the
//! bytes. Keeping the codec apart from sockets lets it be unit tested and
//! fuzzed on its own, and lets the Socket.IO events and the plain WebSocket
//! frames share one set of validation rules.

mod error;
mod frame;
mod message;

pub use error::{ErrorCode, FrameError};
pub use frame::{
    ClientFrame, Limits, MAX_REF_LEN, PlainValue, Request, ServerFrame, json_string_len,
};
pub use message::{Message, RoomName, validate_name};
