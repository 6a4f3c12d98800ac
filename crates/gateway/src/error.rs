//! The one error type of answers outside a connection: refused upgrades,
//! refused Socket.IO connects and HTTP API errors. It renders itself as an
//! HTTP status with `{"code": .., "message": ..}` ([`IntoResponse`]) or as
//! the message of a Socket.IO `connect_error` (`"code: message"`), so the
//! codes and texts on the wire are written here once (docs/protocol.md
//! lists them).

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_protocol::{ErrorCode, FrameError};
use uuid::Uuid;

use crate::auth::AuthError;

/// A refusal with its status, stable code and explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// For `unavailable` sends: the message id to retry with.
    pub id: Option<Uuid>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            id: None,
        }
    }

    /// The browser origin may not open sockets here (403).
    pub fn forbidden_origin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this origin may not open sockets here",
        )
    }

    /// The node holds `MAX_CONNECTIONS` already (503).
    pub fn over_capacity() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "this node holds as many connections as it may; try another node or later",
        )
    }

    /// The address opened connections faster than `CONNECT_RATE_PER_IP` (429).
    pub fn connecting_too_fast() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many new connections from this address; slow down",
        )
    }

    /// A token was missing or refused (401).
    pub fn unauthorized(e: &AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }

    /// The history API or the metrics need credentials (401).
    pub fn credentials_required(what: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", what)
    }

    /// A token that may not read this room (403).
    pub fn forbidden_room(e: FrameError) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", e.message)
    }

    /// An invalid display name (400).
    pub fn bad_name(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_name", message)
    }

    /// No such route (404).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// A dependency failed. The cause is logged by the caller, never shown
    /// to the client: store and broker errors name hosts and internals.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A request refused by the protocol's rules: its code and text, with
    /// 413 for sizes and 400 for the rest.
    pub fn frame(e: FrameError) -> Self {
        let status = match e.code {
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code.as_str(), e.message)
    }

    /// Adds the message id a client should retry with.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// The message of a refused Socket.IO connect: the code first, so
    /// clients can match on it as on the HTTP body's `code`.
    pub fn connect_error(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::openapi::ErrorBody {
            code: self.code.to_owned(),
            message: self.message.into_owned(),
            id: self.id,
            rooms: None,
        };
        (self.status, axum::Json(body)).into_response()
    }
}
