//! HTTP routes: the web page, the history API, health and metrics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use switchboard_protocol::RoomName;
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
        .route("/api/rooms/{room}/messages", get(room_messages))
        .route("/api/stats", get(stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
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
        "connections": gateway.open_connections.load(std::sync::atomic::Ordering::Relaxed),
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
