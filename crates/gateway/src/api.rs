//! The HTTP API on rooms: reading history and presence, and the
//! server-side publish. They apply the same rules as a socket: with
//! `AUTH=required` history and presence need a token whose `rooms` claim
//! allows the room (or the API key), and a publish needs the API key and
//! goes through the client send path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use switchboard_protocol::{
    ClientFrame, Message, Payload, PlainValue, Request, RoomName, validate_name,
};
use uuid::Uuid;

use crate::Gateway;
use crate::admit::Reader;
use crate::error::ApiError;

/// The room of a `/api/rooms/{room}/...` path; a path that is not UTF-8
/// or not a room name is a `bad_room`.
pub(crate) fn room_of(path: Result<Path<String>, PathRejection>) -> Result<RoomName, ApiError> {
    let Path(room) = path.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_room",
            "the room in the path is not a valid UTF-8 room name",
        )
    })?;
    RoomName::parse(&room)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_room", e.to_string()))
}

fn query_of(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query.map(|q| q.0).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the query string does not parse",
        )
    })
}

/// Which page of a room's history a request asks for.
enum Page {
    /// The latest, or those before a message id.
    Latest(Option<Uuid>),
    /// By position: after (or before) `seq` in `epoch` (the room's current
    /// epoch when not given).
    Seq {
        after: bool,
        seq: u64,
        epoch: Option<String>,
    },
}

impl Page {
    fn of(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let bad = |code: &'static str, message: &str| {
            ApiError::new(StatusCode::BAD_REQUEST, code, message.to_owned())
        };
        let given: Vec<&str> = ["before", "after_seq", "before_seq"]
            .into_iter()
            .filter(|k| query.contains_key(*k))
            .collect();
        if given.len() > 1 {
            return Err(bad(
                "bad_request",
                "give at most one of before, after_seq and before_seq",
            ));
        }
        let epoch = match query.get("epoch") {
            Some(e) if e.is_empty() || e.len() > switchboard_protocol::MAX_EPOCH_LEN => {
                return Err(bad("bad_seq", "epoch must be 1 to 64 bytes"));
            }
            epoch => epoch.cloned(),
        };
        // Positions are stored as SQL bigints: at most i64::MAX.
        let seq = |raw: &str| {
            raw.parse::<i64>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    bad(
                        "bad_seq",
                        "after_seq and before_seq take an integer from 0 to 2^63-1",
                    )
                })
        };
        match given.first().copied() {
            Some("after_seq") => Ok(Page::Seq {
                after: true,
                seq: seq(&query["after_seq"])?,
                epoch,
            }),
            Some("before_seq") => Ok(Page::Seq {
                after: false,
                seq: seq(&query["before_seq"])?,
                epoch,
            }),
            Some(_) => Uuid::try_parse(&query["before"])
                .map(|id| Page::Latest(Some(id)))
                .map_err(|_| bad("bad_before", "before must be a message id (UUID)")),
            None => Ok(Page::Latest(None)),
        }
    }
}

/// The room of a read (history, presence) and the query, once the caller
/// may read it: with `AUTH=required`, a token whose `rooms` allow the room
/// (or the API key).
fn readable(
    gateway: &Gateway,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(RoomName, HashMap<String, String>), ApiError> {
    let room = room_of(path)?;
    let query = query_of(query)?;
    let token = crate::auth::request_token(query.get("token").map(String::as_str), headers);
    if let Reader::Client(identity) = gateway.reader(token)? {
        identity
            .check_join(&room, gateway.policies.of(room.as_str()).join)
            .map_err(ApiError::forbidden_room)?;
    }
    Ok((room, query))
}

/// `GET /api/rooms/{room}/messages?limit=50` with `before=<id>`, or
/// `after_seq=N` / `before_seq=N` (and `epoch=E`, the room's current one
/// when left out): oldest first.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}/messages",
    tag = "history",
    params(
        ("room" = String, Path, description = "A room name", pattern = "^[A-Za-z0-9_.:-]{1,64}$"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "At most this many (default 50; at most HISTORY_MAX, 500 by default)"),
        ("before" = Option<uuid::Uuid>, Query, description = "The latest messages before this message id"),
        ("after_seq" = Option<u64>, Query, description = "The messages after this position, in seq order"),
        ("before_seq" = Option<u64>, Query, description = "The latest messages before this position"),
        ("epoch" = Option<String>, Query, min_length = 1, max_length = 64, description = "The epoch of after_seq/before_seq (the room's current one when left out)"),
        ("token" = Option<String>, Query, description = "A client token, with AUTH=required (or the Authorization header)"),
    ),
    responses(
        (status = 200, description = "Stored messages, oldest first; a deleted one as its tombstone (`deleted: true`)", body = Vec<Message>),
        (status = 400, description = "A bad room, query or position", body = crate::openapi::ErrorBody),
        (status = 401, description = "AUTH=required and no valid token or key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token may not read this room", body = crate::openapi::ErrorBody),
        (status = 503, description = "The store did not answer", body = crate::openapi::ErrorBody),
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn room_messages(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (room, query) = readable(&gateway, path, query, &headers)?;
    let limits = &gateway.config.limits;
    let limit = match query.get("limit") {
        None => limits.history_default,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=limits.history_max).contains(&n) => n,
            _ => {
                let msg = format!("limit must be an integer from 1 to {}", limits.history_max);
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_limit", msg));
            }
        },
    };
    let read = match Page::of(&query)? {
        Page::Latest(before) => {
            gateway
                .bounded(gateway.store.history(&room, limit, before))
                .await
        }
        Page::Seq { after, seq, epoch } => {
            let epoch = match epoch {
                Some(epoch) => epoch,
                None => {
                    gateway
                        .room_position(&room)
                        .await
                        .map_err(|e| {
                            tracing::error!(error = %e, %room, "position read failed");
                            ApiError::unavailable("history is unavailable; retry later")
                        })?
                        .epoch
                }
            };
            let read = if after {
                gateway.store.after_seq(&room, &epoch, seq, limit)
            } else {
                gateway.store.before_seq(&room, &epoch, seq, limit)
            };
            gateway.bounded(read).await
        }
    };
    match read {
        Ok(messages) => Ok(axum::Json(messages).into_response()),
        Err(e) => {
            tracing::error!(error = %e, %room, "history read failed");
            Err(ApiError::unavailable("history is unavailable; retry later"))
        }
    }
}

/// `GET /api/rooms/{room}/presence`: who is in the room across every node,
/// earliest first (at most 1,000, `truncated` beyond), with the same access
/// rule as history.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}/presence",
    tag = "presence",
    params(("room" = String, Path, description = "A room name", pattern = "^[A-Za-z0-9_.:-]{1,64}$"), ("token" = Option<String>, Query, description = "A client token, with AUTH=required")),
    responses(
        (status = 200, description = "Who is in the room, across every node", body = crate::openapi::PresenceBody),
        (status = 400, description = "A bad room name", body = crate::openapi::ErrorBody),
        (status = 401, description = "AUTH=required and no valid token or key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token may not read this room, or presence is off in it", body = crate::openapi::ErrorBody),
        (status = 503, description = "Presence could not be read", body = crate::openapi::ErrorBody),
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn room_presence(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (room, _) = readable(&gateway, path, query, &headers)?;
    if gateway.policies.of(room.as_str()).presence == crate::policy::PresenceRule::Off {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("presence is off in `{room}`"),
        ));
    }
    match gateway.presence.members(&room).await {
        Ok(listing) => Ok(axum::Json(crate::openapi::PresenceBody {
            room: room.as_str().to_owned(),
            count: listing.count,
            members: listing.members,
            truncated: listing.truncated,
        })
        .into_response()),
        Err(e) => {
            tracing::warn!(error = %e, %room, "presence read failed");
            Err(ApiError::unavailable(
                "presence is unavailable; retry later",
            ))
        }
    }
}

/// `POST /api/rooms/{room}/messages` with `{"text": .., "from": .., "id"?: ..}`
/// and `Authorization: Bearer <API_KEY>`: a server-side send, on the same
/// path as a client's (fan-out on every node, journal), answered once the
/// message is durable: 201 with the message, or 503 `unavailable` with the
/// id to retry with. Without `API_KEY` configured the route does not exist.
#[utoipa::path(
    post,
    path = "/api/rooms/{room}/messages",
    tag = "publish",
    params(("room" = String, Path, description = "A room name", pattern = "^[A-Za-z0-9_.:-]{1,64}$")),
    request_body = crate::openapi::SendBody,
    responses(
        (status = 201, description = "Durable", body = Message),
        (status = 202, description = "Live only (ephemeral, or a room that stores nothing): handed to every node", body = Message),
        (status = 400, description = "A bad body, room, name or id", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The room's policy refuses it (data, ephemeral)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No API key is configured: the server API is off", body = crate::openapi::ErrorBody),
        (status = 413, description = "Larger than the room's message size or the body limit", body = crate::openapi::ErrorBody),
        (status = 503, description = "Not durable: retry with the id given", body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn publish(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    server_only(&gateway, &headers)?;
    let room = room_of(path)?;
    let fields = json_object(
        &gateway,
        body,
        "{\"text\"?: .., \"data\"?: .., \"from\": .., \"id\"?: ..}",
    )?;
    let from = sender(&fields)?;
    let send = server_send(&gateway, room, &fields)?;
    let published = publish_one(&gateway, &from, send).await?;
    Ok((published.status(), axum::Json(published.message)).into_response())
}

/// A server-side message sent, and whether it was live only.
pub(crate) struct Published {
    pub message: switchboard_protocol::Message,
    pub live: bool,
}

impl Published {
    /// 201 for a stored message; 202 for a live one (ephemeral, or a room
    /// that stores nothing): delivered, but nothing was created to read
    /// back.
    pub fn status(&self) -> StatusCode {
        if self.live {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        }
    }
}

/// A server-side send's fields, checked like a client's `send` (text
/// and data, size, id, ephemeral).
pub(crate) struct ServerSend {
    pub room: RoomName,
    pub payload: Payload,
    pub id: Option<Uuid>,
    pub ephemeral: bool,
}

/// The send `fields` ask for, to `room`.
pub(crate) fn server_send(
    gateway: &Gateway,
    room: RoomName,
    fields: &serde_json::Map<String, Value>,
) -> Result<ServerSend, ApiError> {
    let request =
        Request::send_to(room, fields, &gateway.config.limits).map_err(ApiError::frame)?;
    match request.frame {
        ClientFrame::Send {
            room,
            payload,
            id,
            ephemeral,
        } => Ok(ServerSend {
            room,
            payload,
            id,
            ephemeral,
        }),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_frame",
            "not a send",
        )),
    }
}

/// Whether the policy of `room` takes `payload` as asked (ephemeral
/// where allowed, data where allowed, its size); the server may publish
/// where members may not.
pub(crate) fn check_policy(
    gateway: &Gateway,
    room: &RoomName,
    payload: &Payload,
    ephemeral: bool,
) -> Result<(), ApiError> {
    gateway
        .policies
        .of(room.as_str())
        .admits(room, payload, ephemeral)
        .map_err(ApiError::frame)
}

/// Rooms per page of `GET /api/rooms` at most.
const ROOMS_PAGE_MAX: u32 = 1000;

/// `GET /api/rooms?cursor=0&limit=100` with the API key: the rooms with
/// members across the cluster and how many names each has, a page at a
/// time: `{"rooms":[{"room":..,"count":..}],"next":N}` (`next` 0 after the
/// last page).
#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "presence",
    params(
        ("cursor" = Option<u64>, Query, description = "Where the page starts (0, or the last page's `next`)"),
        ("limit" = Option<u32>, Query, maximum = 1000, description = "About this many rooms (at most 1,000; default 100)"),
    ),
    responses(
        (status = 200, description = "Rooms with members across the cluster", body = crate::openapi::RoomsPage),
        (status = 400, description = "A bad cursor or limit", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No API key is configured", body = crate::openapi::ErrorBody),
        (status = 503, description = "Presence could not be read", body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn rooms(
    State(gateway): State<Arc<Gateway>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    server_only(&gateway, &headers)?;
    let query = query_of(query)?;
    let number = |name: &str, default: u64, most: u64| -> Result<u64, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().ok().filter(|n| *n <= most).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("`{name}` must be an integer from 0 to {most}"),
                )
            }),
        }
    };
    // Redis's cursors are far below; a bound JSON Schema's int64 can say.
    let cursor = number("cursor", 0, i64::MAX as u64)?;
    let limit = number("limit", 100, u64::from(ROOMS_PAGE_MAX))?.max(1) as u32;
    match gateway.presence.rooms(cursor, limit).await {
        Ok(page) => {
            let rooms = page
                .rooms
                .into_iter()
                .map(|(room, count)| crate::openapi::RoomCount {
                    room: room.as_str().to_owned(),
                    count,
                })
                .collect();
            let page = crate::openapi::RoomsPage {
                rooms,
                next: page.next,
            };
            Ok(axum::Json(page).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "room listing failed");
            Err(ApiError::unavailable(
                "the room list is unavailable; retry later",
            ))
        }
    }
}

/// `401` unless the request carries the API key; `404` when there is none
/// (the server's routes do not exist then).
pub(crate) fn server_only(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let auth = &gateway.config.auth;
    if auth.api_key.is_none() {
        return Err(ApiError::not_found());
    }
    if !crate::auth::bearer(headers).is_some_and(|key| auth.api_key_matches(key)) {
        metrics::counter!("switchboard_auth_refusals_total", "reason" => "api_key").increment(1);
        return Err(ApiError::credentials_required(
            "a valid API key is required: Authorization: Bearer <API_KEY>",
        ));
    }
    Ok(())
}

/// A request body that must be a JSON object (`shape` says which, in the
/// error), parsed as `PlainValue` like every document a client sends.
pub(crate) fn json_object(
    gateway: &Gateway,
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let limit = gateway.config.max_body_bytes;
            ApiError::new(
                e.status(),
                "too_large",
                format!("the body is over {limit} bytes"),
            )
        } else {
            ApiError::new(e.status(), "bad_request", e.body_text())
        }
    })?;
    match serde_json::from_slice::<PlainValue>(&body) {
        Ok(PlainValue(Value::Object(fields))) => Ok(fields),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_frame",
            format!("the body must be a JSON object: {shape}"),
        )),
    }
}

/// The `from` of a server-side send.
pub(crate) fn sender(fields: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match fields.get("from") {
        Some(Value::String(from)) => server_name(from),
        _ => Err(ApiError::bad_name("`from` must be a string")),
    }
}

/// A display name given to the server API: a valid name, as it is (the
/// API does not trim what a program sends).
pub(crate) fn server_name(name: &str) -> Result<String, ApiError> {
    let valid = validate_name(name).map_err(ApiError::bad_name)?;
    if valid != name {
        return Err(ApiError::bad_name(
            "name must not start or end with whitespace",
        ));
    }
    Ok(valid)
}

/// One server-side message, checked against its room's policy,
/// delivered and, unless live only, made durable: the message, or
/// `unavailable` with the id to retry with.
pub(crate) async fn publish_one(
    gateway: &Gateway,
    from: &str,
    send: ServerSend,
) -> Result<Published, ApiError> {
    let ServerSend {
        room,
        payload,
        id,
        ephemeral,
    } = send;
    check_policy(gateway, &room, &payload, ephemeral)?;
    if gateway.policies.of(room.as_str()).is_live(ephemeral) {
        let message = gateway.accept_ephemeral(from, room, payload, id);
        return Ok(Published {
            message,
            live: true,
        });
    }
    let (message, durable) = match gateway.accept(from, room, payload, id).await {
        Ok(accepted) => accepted,
        Err(e) => {
            let answer = ApiError::unavailable(e.0);
            return Err(match id {
                Some(id) => answer.with_id(id),
                None => answer,
            });
        }
    };
    match durable.await {
        Ok(()) => Ok(Published {
            message,
            live: false,
        }),
        Err(e) => Err(ApiError::unavailable(e.0).with_id(message.id)),
    }
}
