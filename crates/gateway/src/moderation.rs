//! Moderation through the server API: deleting a message everywhere, and
//! disconnecting a user everywhere (every connection of the name on this
//! node, and on the others through the bus).
//!
//! A deletion is a tombstone: a message with the deleted one's id and
//! `deleted: true`. It is journaled like a message (the store, or the
//! archiver behind Kafka, empties the stored row and keeps its id and
//! position), marks the message in the cluster's window (Redis) and in the
//! rooms' recent messages on every node (through the bus), and every member
//! of the room gets a `deleted {room, id}` frame. A recovery or a history
//! read that spans it returns the tombstone, so positions have no hole.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_protocol::{Message, RoomName};
use uuid::Uuid;

use crate::api::server_only;
use crate::error::ApiError;
use crate::{Gateway, Positions, Unavailable, now_ms};

/// `DELETE /api/rooms/{room}/messages/{id}` with the API key: 204 once the
/// deletion is durable and sent to every node; 404 `not_found` when
/// neither the store nor the room's recent messages hold the id; 503
/// `unavailable` to retry (a deletion is idempotent).
#[utoipa::path(
    delete,
    path = "/api/rooms/{room}/messages/{id}",
    tag = "moderation",
    params(("room" = String, Path, description = "A room name", pattern = "^[A-Za-z0-9_.:-]{1,64}$"), ("id" = uuid::Uuid, Path, description = "The message id")),
    responses(
        (status = 204, description = "Deleted everywhere (idempotent)"),
        (status = 400, description = "A bad room or id", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such message in that room, or no API key is configured", body = crate::openapi::ErrorBody),
        (status = 503, description = "Not done: retry", body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn delete_message(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    server_only(&gateway, &headers)?;
    delete_at(&gateway, path).await
}

/// Deletes the message a `.../rooms/{room}/messages/{id}` path names (the
/// server API's route and the admin console's), once the caller is let in.
pub(crate) async fn delete_at(
    gateway: &Gateway,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path((room, id))) = path else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the path is /api/rooms/{room}/messages/{id}",
        ));
    };
    let room = RoomName::parse(&room)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_room", e.to_string()))?;
    let id = Uuid::try_parse(&id).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the message id is not a UUID",
        )
    })?;
    match gateway.delete_message(room, id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such message in that room",
        )),
        Err(e) => Err(ApiError::unavailable(e.0)),
    }
}

/// `POST /api/users/{name}/disconnect` with the API key: every connection
/// of `name` here is closed now (`/ws`: 4002; Socket.IO: the
/// `disconnected` error, then a disconnect), and every other node is told
/// through the bus and does the same as it reads it. 202 with how many
/// were closed here.
#[utoipa::path(
    post,
    path = "/api/users/{name}/disconnect",
    tag = "moderation",
    params(("name" = String, Path, pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f](?:[^\\u0000-\\u001f\\u007f-\\u009f]{0,30}[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$", description = "A display name (1 to 32 characters)")),
    responses(
        (status = 202, description = "Closed here; the other nodes close theirs as the bus tells them", body = crate::openapi::Disconnected),
        (status = 400, description = "Not a valid name", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No API key is configured", body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn disconnect_user(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    server_only(&gateway, &headers)?;
    disconnect_at(&gateway, path, "the server API")
}

/// Disconnects the name a `.../users/{name}/disconnect` path names (the
/// server API's route and the admin console's, `by` saying which in the
/// log), once the caller is let in.
pub(crate) fn disconnect_at(
    gateway: &Gateway,
    path: Result<Path<String>, PathRejection>,
    by: &'static str,
) -> Result<Response, ApiError> {
    let Ok(Path(name)) = path else {
        return Err(ApiError::bad_name("the name in the path is not UTF-8"));
    };
    let name = crate::api::server_name(&name)?;
    let here = gateway.disconnect_everywhere(&name, by);
    let body = crate::openapi::Disconnected {
        name,
        disconnected_here: here,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

impl Gateway {
    /// Closes every connection of `name` here and tells the other nodes to
    /// close theirs; how many were closed here.
    pub(crate) fn disconnect_everywhere(&self, name: &str, by: &'static str) -> usize {
        let here = self.users.disconnect(name);
        self.bus.disconnect(name);
        tracing::info!(%name, here, by, "user disconnected");
        here
    }

    /// Deletes message `id` of `room` everywhere; false when it is not
    /// known (not stored, not among the room's recent messages).
    pub(crate) async fn delete_message(
        &self,
        room: RoomName,
        id: Uuid,
    ) -> Result<bool, Unavailable> {
        let name = room.clone();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, room = %name, %id, "deletion: {what} failed");
            Unavailable("the deletion could not be made; retry".into())
        };
        let stored = self
            .bounded(self.store.get(&room, id))
            .await
            .map_err(|e| unavailable("the store read", &e))?;
        let windowed = match &self.positions {
            Positions::Cluster(flows) => flows
                .sequencer()
                .erase(&room, id)
                .await
                .map_err(|e| unavailable("the window mark", &e))?,
            Positions::Local(_) => None,
        };
        let mut tombstone = Message {
            id,
            room,
            from: String::new(),
            text: String::new(),
            data: None,
            ts: now_ms(),
            seq: 0,
            epoch: String::new(),
            deleted: true,
        };
        if let Some(m) = &stored {
            (tombstone.seq, tombstone.epoch) = (m.seq, m.epoch.clone());
        } else if let Some(p) = &windowed {
            (tombstone.seq, tombstone.epoch) = (p.seq, p.epoch.clone());
        }
        let recent = self.registry.has_recent(&tombstone.room, id);
        if stored.is_none() && windowed.is_none() && !recent {
            return Ok(false);
        }
        let journaled = tokio::time::timeout(
            self.config.ack_timeout,
            self.journal.append(tombstone.clone()),
        )
        .await;
        match journaled {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unavailable("the journal", &e)),
            Err(_) => return Err(unavailable("the journal", &"timed out")),
        }
        // Here, then on the other nodes: the recent messages are marked and
        // the members told.
        self.erased(&tombstone);
        self.bus.publish(&tombstone);
        metrics::counter!("switchboard_messages_deleted_total").increment(1);
        Ok(true)
    }

    /// A tombstone reached this node (its own deletion, or another
    /// node's through the bus): the room's recent messages and members
    /// here learn it.
    pub(crate) fn erased(&self, tombstone: &Message) {
        for cut in self.registry.erase(tombstone) {
            crate::sio::cut(&self.registry, cut);
        }
    }
}
