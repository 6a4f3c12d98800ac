//! HTTP routes: the web page, the history API, health and metrics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use switchboard_protocol::{ClientFrame, Request, RoomName, validate_name};
use uuid::Uuid;

use crate::Gateway;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_CSS: &str = include_str!("../web/app.css");
const APP_JS: &str = include_str!("../web/app.js");

/// Every route of a node, Socket.IO included.
pub(crate) fn router(gateway: &Arc<Gateway>) -> Router {
    let sio = crate::sio::layer(gateway);
    Router::new()
        .route("/", get(index))
        .route("/app.css", get(app_css))
        .route("/app.js", get(app_js))
        .route("/ws", get(crate::ws::upgrade))
        .route(
            "/api/rooms/{room}/messages",
            get(room_messages).post(publish),
        )
        .route("/api/stats", get(stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(gateway.config.max_body_bytes))
        .with_state(gateway.clone())
        .layer(sio)
}

/// A JSON error body: `{"code": ..., "message": ...}`.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

async fn app_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_CSS,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_JS,
    )
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /api/stats`: this node's open connections and hosted rooms.
async fn stats(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    axum::Json(json!({
        "node": gateway.config.node_id,
        "connections": gateway.admission.open(),
        "rooms": gateway.registry.room_count(),
    }))
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut down = Vec::new();
    if !gateway.bus.is_ready() {
        down.push(gateway.bus.kind());
    }
    if !gateway.journal.is_ready() {
        down.push(gateway.journal.kind());
    }
    if down.is_empty() {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "down": down })),
        )
            .into_response()
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    match &gateway.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled on this node",
        ),
    }
}

/// `GET /api/rooms/{room}/messages?limit=50&before=<id>`: oldest first.
async fn room_messages(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let room = match RoomName::parse(&room) {
        Ok(room) => room,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_room", &e),
    };
    let limits = &gateway.config.limits;
    let limit = match query.get("limit") {
        None => limits.history_default,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=limits.history_max).contains(&n) => n,
            _ => {
                let msg = format!("limit must be an integer from 1 to {}", limits.history_max);
                return json_error(StatusCode::BAD_REQUEST, "bad_limit", &msg);
            }
        },
    };
    let before = match query.get("before") {
        None => None,
        Some(raw) => match Uuid::try_parse(raw) {
            Ok(id) => Some(id),
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_before",
                    "before must be a message id (UUID)",
                );
            }
        },
    };
    let read = tokio::time::timeout(
        gateway.config.ack_timeout,
        gateway.store.history(&room, limit, before),
    );
    match read
        .await
        .unwrap_or(Err(switchboard_store::StoreError::Timeout))
    {
        Ok(messages) => axum::Json(messages).into_response(),
        Err(e) => {
            tracing::error!(error = %e, %room, "history read failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "history is unavailable; retry later",
            )
        }
    }
}

/// `POST /api/rooms/{room}/messages` with `{"text": .., "from": .., "id"?: ..}`
/// and `Authorization: Bearer <API_KEY>`: a server-side send, on the same
/// path as a client's (fan-out on every node, journal), answered once the
/// message is durable: 201 with the message, or 503 `unavailable` with the
/// id to retry with. Without `API_KEY` configured the route does not exist.
async fn publish(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let auth = &gateway.config.auth;
    if auth.api_key.is_none() {
        return not_found().await;
    }
    if !crate::auth::bearer(&headers).is_some_and(|key| auth.api_key_matches(key)) {
        metrics::counter!("switchboard_auth_refusals_total", "reason" => "api_key").increment(1);
        return json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <API_KEY>",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = gateway.config.max_body_bytes;
            return json_error(
                e.status(),
                "too_large",
                &format!("the body is over {limit} bytes"),
            );
        }
        Err(e) => return json_error(e.status(), "bad_request", &e.body_text()),
    };
    let mut fields = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_frame",
                "the body must be a JSON object: {\"text\": .., \"from\": .., \"id\"?: ..}",
            );
        }
    };
    let from = match fields.remove("from") {
        Some(serde_json::Value::String(from)) => match validate_name(&from) {
            Ok(from) => from,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_name", &e),
        },
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_name",
                "`from` must be a string",
            );
        }
    };
    // The same checks as a client's `send` (room, text size, id).
    fields.insert("room".into(), serde_json::Value::String(room));
    let request = Request::from_event(
        "send",
        &serde_json::Value::Object(fields),
        &gateway.config.limits,
    );
    let (room, text, id) = match request {
        Ok(Request {
            frame: ClientFrame::Send { room, text, id },
            ..
        }) => (room, text, id),
        Ok(_) => return json_error(StatusCode::BAD_REQUEST, "bad_frame", "not a send"),
        Err(e) => {
            let status = if e.code == switchboard_protocol::ErrorCode::TooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return json_error(status, e.code.as_str(), &e.message);
        }
    };
    let (message, durable) = gateway.accept(&from, room, text, id);
    match durable.await {
        Ok(()) => (StatusCode::CREATED, axum::Json(message)).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "code": "unavailable", "message": e.0, "id": message.id })),
        )
            .into_response(),
    }
}
