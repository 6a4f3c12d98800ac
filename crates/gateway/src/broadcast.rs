//! `POST /api/broadcast`: one message from the back end to each of many
//! rooms (announcements into `publish = "server"` rooms, say), answered
//! once every one is durable. Retrying is safe: each room's message id is
//! derived from the broadcast's id and the room's name, so a retry with the
//! same id stores and delivers nothing twice.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use serde_json::Value;
use switchboard_protocol::RoomName;
use uuid::Uuid;

use crate::Gateway;
use crate::api::{
    ServerSend, check_policy, json_object, publish_one, sender, server_only, server_send,
};
use crate::error::ApiError;

/// Rooms one broadcast may name at most.
pub(crate) const BROADCAST_MAX: usize = 1000;

/// `POST /api/broadcast` with `{"rooms": [..], "text": .., "from": ..,
/// "id"?: .., "ephemeral"?: ..}` and the API key: 201 with the broadcast's
/// id and every room's message once all are durable; a room the policy
/// refuses fails the whole broadcast before anything is sent; 503 with the
/// id and the rooms that failed (the others are durable) to retry.
#[utoipa::path(
    post,
    path = "/api/broadcast",
    tag = "publish",
    request_body = crate::openapi::BroadcastBody,
    responses(
        (status = 201, description = "Every room's message is durable (or live, in rooms that store nothing)", body = crate::openapi::Broadcast),
        (status = 202, description = "Every room's message is live only (ephemeral, or rooms that store nothing)", body = crate::openapi::Broadcast),
        (status = 400, description = "A bad body, room list, name or id", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "A room's policy refuses it: nothing was sent", body = crate::openapi::ErrorBody),
        (status = 404, description = "No API key is configured", body = crate::openapi::ErrorBody),
        (status = 413, description = "Larger than a room's message size or the body limit", body = crate::openapi::ErrorBody),
        (status = 503, description = "Some rooms failed (`rooms`): retry with the same id", body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn broadcast(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    server_only(&gateway, &headers)?;
    let fields = json_object(
        &gateway,
        body,
        "{\"rooms\": [..], \"text\"?: .., \"data\"?: .., \"from\": .., \"id\"?: ..}",
    )?;
    let from = sender(&fields)?;
    let rooms = rooms(fields.get("rooms"))?;
    // The text, data, id and ephemeral flag follow a send's rules.
    let ServerSend {
        payload,
        id,
        ephemeral,
        ..
    } = server_send(&gateway, rooms[0].clone(), &fields)?;
    // Every room's policy first: a refusal sends nothing.
    for room in &rooms {
        check_policy(&gateway, room, &payload, ephemeral)?;
    }
    let broadcast_id = id.unwrap_or_else(Uuid::now_v7);
    let sends = rooms.iter().map(|room| {
        let send = ServerSend {
            room: room.clone(),
            payload: payload.clone(),
            id: Some(Uuid::new_v5(&broadcast_id, room.as_str().as_bytes())),
            ephemeral,
        };
        publish_one(&gateway, &from, send)
    });
    let results = join_all(sends).await;
    let mut messages = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    let mut live = true;
    for (room, result) in rooms.iter().zip(results) {
        match result {
            Ok(published) => {
                live &= published.live;
                messages.push(published.message);
            }
            Err(e) => {
                tracing::warn!(%room, code = e.code, "broadcast: a room's message failed");
                failed.push(room.as_str());
            }
        }
    }
    if failed.is_empty() {
        let body = crate::openapi::Broadcast {
            id: broadcast_id,
            messages,
        };
        let status = if live {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        };
        return Ok((status, axum::Json(body)).into_response());
    }
    let body = crate::openapi::ErrorBody {
        code: "unavailable".into(),
        message: "some rooms' messages could not be made durable; retry with the same id".into(),
        id: Some(broadcast_id),
        rooms: Some(failed.iter().map(|r| (*r).to_owned()).collect()),
    };
    Ok((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response())
}

/// The `rooms` field: 1 to [`BROADCAST_MAX`] distinct valid room names.
fn rooms(field: Option<&Value>) -> Result<Vec<RoomName>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let Some(Value::Array(names)) = field else {
        return Err(bad(format!(
            "`rooms` must be an array of 1 to {BROADCAST_MAX} room names"
        )));
    };
    if names.is_empty() || names.len() > BROADCAST_MAX {
        return Err(bad(format!(
            "`rooms` must name 1 to {BROADCAST_MAX} rooms, not {}",
            names.len()
        )));
    }
    let mut seen = HashSet::with_capacity(names.len());
    let mut rooms = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let room = name
            .as_str()
            .and_then(|s| RoomName::parse(s).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_room",
                    format!("`rooms[{i}]` is not a room name"),
                )
            })?;
        if !seen.insert(room.as_str().to_owned()) {
            return Err(bad(format!("`rooms[{i}]` (`{room}`) is named twice")));
        }
        rooms.push(room);
    }
    Ok(rooms)
}
