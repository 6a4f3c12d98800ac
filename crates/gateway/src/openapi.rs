//! The server API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types, served at
//! `/api/openapi.json`. The bodies the handlers write with these types are
//! the ones documented here; the request bodies are parsed by hand (as
//! `PlainValue`, with the protocol's rules) and described by the `*Body`
//! types.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Member, Message};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

// Names (`from`, `{name}`) follow `api::server_name`: 1 to 32 characters,
// no control characters, no whitespace around; written out as a pattern
// on each field (attributes take literals).

/// A room name (the protocol's `ROOM_PATTERN`).
#[derive(Deserialize, ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
#[allow(dead_code)]
pub(crate) struct Room(String);

/// Every refusal: a stable code and an explanation.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable, machine-readable (docs/protocol.md lists them).
    pub code: String,
    pub message: String,
    /// For `unavailable` sends: the message id to retry with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// For a broadcast: the rooms whose messages failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// A server-side send: `text`, `data` or both.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct SendBody {
    /// The sender's display name (1 to 32 characters).
    #[schema(
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f](?:[^\\u0000-\\u001f\\u007f-\\u009f]{0,30}[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    pub from: String,
    /// Not empty; leave it out to send `data` alone.
    pub text: Option<String>,
    /// Any JSON value, in rooms whose policy takes data.
    pub data: Option<serde_json::Value>,
    /// Makes a retry idempotent.
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
    pub id: Option<Uuid>,
    /// Live only: delivered, never stored (where the policy allows).
    pub ephemeral: Option<bool>,
}

/// One server message to many rooms: the send's fields and the rooms.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct BroadcastBody {
    /// 1 to 1,000 distinct room names.
    #[schema(min_items = 1, max_items = 1000)]
    pub rooms: Vec<Room>,
    /// With `id`, the broadcast's id: each room's message id derives from
    /// it, so a retry is idempotent.
    #[serde(flatten)]
    pub message: SendBody,
}

/// A broadcast made durable in every room.
#[derive(Serialize, ToSchema)]
pub(crate) struct Broadcast {
    pub id: Uuid,
    pub messages: Vec<Message>,
}

/// Who is in a room, across every node.
#[derive(Serialize, ToSchema)]
pub(crate) struct PresenceBody {
    pub room: String,
    pub count: u64,
    pub members: Vec<Member>,
    /// More names are in the room than listed (`count` has them all).
    pub truncated: bool,
}

/// A room with members, and how many names.
#[derive(Serialize, ToSchema)]
pub(crate) struct RoomCount {
    pub room: String,
    pub count: u64,
}

/// A page of rooms.
#[derive(Serialize, ToSchema)]
pub(crate) struct RoomsPage {
    pub rooms: Vec<RoomCount>,
    /// The cursor of the next page; 0 after the last.
    pub next: u64,
}

/// A user disconnected.
#[derive(Serialize, ToSchema)]
pub(crate) struct Disconnected {
    pub name: String,
    /// Connections closed on the node that answered (the others close
    /// theirs as the bus tells them).
    pub disconnected_here: usize,
}

/// Liveness or readiness.
#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    pub status: String,
    /// What is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<Vec<String>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard server API",
        description = "History, presence, rooms, publishing and moderation over HTTP. \
                       Clients connect over WebSocket (`/ws`) or Socket.IO: see docs/protocol.md."
    ),
    paths(
        crate::api::room_messages,
        crate::api::publish,
        crate::api::room_presence,
        crate::api::rooms,
        crate::broadcast::broadcast,
        crate::moderation::delete_message,
        crate::moderation::disconnect_user,
        crate::http::healthz,
        crate::http::public_readyz,
    ),
    components(schemas(Message, Member, Room, ErrorBody, SendBody, BroadcastBody, Broadcast,
                       PresenceBody, RoomCount, RoomsPage, Disconnected, Status)),
    modifiers(&ApiKey),
)]
pub(crate) struct ApiDoc;

/// The `api_key` scheme: `Authorization: Bearer <API_KEY>`.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The API key (API_KEY); for history and presence with AUTH=required, a client token also serves"))
            .build();
        components.add_security_scheme("api_key", SecurityScheme::Http(bearer));
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| unreachable!("the document serializes"))
});

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}
