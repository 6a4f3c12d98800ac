//! Stable error codes carried by `error` frames.

use serde::Serialize;

/// Why a request was refused. The `snake_case` names are part of the
/// protocol: clients match on them, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, a missing or mistyped field,
    /// or a binary frame.
    BadFrame,
    /// A room name outside `^[A-Za-z0-9_.:-]{1,64}$`.
    BadRoom,
    /// A message (text and data) over the configured size.
    TooLarge,
    /// `send` to a room the connection has not joined.
    NotJoined,
    /// `join` past the per-connection room limit.
    TooManyRooms,
    /// The journal could not make the message durable; retry with the same id.
    Unavailable,
    /// `join` of a room the connection's token does not allow.
    Forbidden,
    /// `send` faster than the connection's rate limit; the message was not
    /// accepted. (Ten times the limit closes the connection with 1008.)
    RateLimited,
    /// The connection's token expired without a `refresh`: `/ws` closes
    /// with 4001, a Socket.IO socket gets this error and is disconnected.
    TokenExpired,
    /// The server disconnected every connection of this user (the server
    /// API): `/ws` closes with 4002, a Socket.IO socket gets this error and
    /// is disconnected.
    Disconnected,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Disconnected => "disconnected",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that cannot be served, with what the client needs to correlate
/// the answer (`ref`) and, for `unavailable`, the message id to retry with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// The stable machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The request's `ref`, echoed when it could be read.
    pub r#ref: Option<serde_json::Value>,
}

impl FrameError {
    /// An error without a `ref`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            r#ref: None,
        }
    }

    /// The same error echoing the given `ref`.
    pub fn with_ref(mut self, r#ref: Option<serde_json::Value>) -> Self {
        self.r#ref = r#ref;
        self
    }
}
