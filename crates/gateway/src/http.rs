//! HTTP routes: the web page, the history API, health and metrics. Every
//! error is an [`ApiError`]: a status with a JSON body.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::Gateway;
use crate::error::ApiError;
use crate::openapi::Status;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_CSS: &str = include_str!("../web/app.css");
/// The page's ES modules, served as they are (`web/js/`).
const SCRIPTS: &[(&str, &str)] = &[
    ("app.js", include_str!("../web/js/app.js")),
    ("chat.js", include_str!("../web/js/chat.js")),
    ("dom.js", include_str!("../web/js/dom.js")),
    ("format.js", include_str!("../web/js/format.js")),
    ("limits.js", include_str!("../web/js/limits.js")),
    ("state.js", include_str!("../web/js/state.js")),
    ("view.js", include_str!("../web/js/view.js")),
];
/// The JavaScript client (`clients/js`), served as it is so any page can
/// `import { connect } from "https://NODE/client/switchboard.js"`.
const CLIENT: &[(&str, &str)] = &[
    (
        "switchboard.js",
        include_str!("../../../clients/js/switchboard.js"),
    ),
    ("room.js", include_str!("../../../clients/js/room.js")),
    ("merge.js", include_str!("../../../clients/js/merge.js")),
    ("outbox.js", include_str!("../../../clients/js/outbox.js")),
    ("backoff.js", include_str!("../../../clients/js/backoff.js")),
];

/// Every route of a node, Socket.IO included.
pub(crate) fn router(gateway: &Arc<Gateway>) -> Router {
    let sio = crate::sio::layer(gateway);
    Router::new()
        .route("/", get(index))
        .route("/app.css", get(app_css))
        .route("/js/{file}", get(script))
        .route("/client/{file}", get(client_script))
        .route("/ws", get(crate::ws::upgrade))
        .route(
            "/api/rooms/{room}/messages",
            get(crate::api::room_messages).post(crate::api::publish),
        )
        .route(
            "/api/rooms/{room}/messages/{id}",
            axum::routing::delete(crate::moderation::delete_message),
        )
        .route("/api/rooms/{room}/presence", get(crate::api::room_presence))
        .route("/api/rooms", get(crate::api::rooms))
        .route(
            "/api/users/{name}/disconnect",
            axum::routing::post(crate::moderation::disconnect_user),
        )
        .route(
            "/api/broadcast",
            axum::routing::post(crate::broadcast::broadcast),
        )
        .route("/api/stats", get(stats))
        .route("/api/config", get(client_config))
        .route("/api/openapi.json", get(crate::openapi::document))
        .route("/healthz", get(healthz))
        .route("/readyz", get(public_readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(gateway.config.max_body_bytes))
        .with_state(gateway.clone())
        .layer(sio)
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            crate::engineio::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            whole_body_in_time,
        ))
        .layer(axum::middleware::map_response(security_headers))
}

/// The routes of the operators' listener (`METRICS_ADDR`): metrics,
/// counts and health, without credentials; meant for a private network.
pub(crate) fn operators_router(gateway: &Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/api/stats", get(render_stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(gateway.clone())
}

/// Reads a request's whole body within the handshake deadline (a body
/// trickled a byte at a time is cut like a slow head; a per-read timeout
/// would not cut it) and at most the largest body any route takes, then
/// hands it on in one piece.
async fn whole_body_in_time(
    State(gateway): State<Arc<Gateway>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::body::{Body, HttpBody};
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let config = &gateway.config;
    let most = config.max_body_bytes.max(config.max_frame_bytes);
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(config.handshake_timeout, axum::body::to_bytes(body, most));
    match read.await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {most} bytes"),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
        .into_response(),
    }
}

/// Headers on every answer: the page may not be framed by another site
/// (clickjacking), types are not sniffed, and the page loads scripts,
/// styles and sockets from this node only.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(crate) const HTML: &str = "text/html; charset=utf-8";
pub(crate) const CSS: &str = "text/css; charset=utf-8";
pub(crate) const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// A page, stylesheet or module served as it is, revalidated each time
/// (the chat page's and the admin console's).
pub(crate) fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(HTML, INDEX_HTML)
}

async fn app_css() -> Response {
    asset(CSS, APP_CSS)
}

async fn script(file: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    Ok(asset(JAVASCRIPT, find(SCRIPTS, file)?))
}

/// `GET /client/{file}`: the JavaScript client's modules (and its
/// types), importable from any origin: they are public and hold nothing
/// of the node's (the WebSocket they open is checked against
/// `ALLOWED_ORIGINS` as usual).
async fn client_script(file: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let source = find(CLIENT, file)?;
    Ok((
        [
            (header::CONTENT_TYPE, JAVASCRIPT),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        source,
    )
        .into_response())
}

/// The file of `files` the path names; 404 for any other.
pub(crate) fn find(
    files: &'static [(&str, &'static str)],
    file: Result<Path<String>, PathRejection>,
) -> Result<&'static str, ApiError> {
    let Ok(Path(file)) = file else {
        return Err(ApiError::not_found());
    };
    files
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, source)| *source)
        .ok_or_else(ApiError::not_found)
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// `GET /api/config`: the rules a client should check before sending, so
/// the page (and any client) need not hard-code them. No secrets.
async fn client_config(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let config = &gateway.config;
    axum::Json(json!({
        "max_message_bytes": config.limits.max_message_bytes,
        "max_frame_bytes": config.max_frame_bytes,
        "history_default": config.limits.history_default,
        "history_max": config.limits.history_max,
        "max_rooms_per_connection": config.max_rooms_per_connection,
        "room_pattern": switchboard_protocol::ROOM_PATTERN,
        "max_name_chars": switchboard_protocol::MAX_NAME_CHARS,
        "auth": match config.auth.mode {
            crate::AuthMode::Off => "off",
            crate::AuthMode::Required => "required",
        },
        "policies": gateway.policies.describe(),
    }))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = crate::openapi::Status)))]
pub(crate) async fn healthz() -> impl IntoResponse {
    axum::Json(Status {
        status: "ok".into(),
        down: None,
    })
}

/// `/metrics` and `/api/stats` on the main listener: open when
/// `metrics_public`, else for the API key only.
fn operator_only(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    if gateway.config.metrics_public
        || crate::auth::bearer(headers).is_some_and(|key| gateway.config.auth.api_key_matches(key))
    {
        return Ok(());
    }
    metrics::counter!("switchboard_auth_refusals_total", "reason" => "metrics").increment(1);
    Err(ApiError::credentials_required(
        "metrics are not public on this listener: use METRICS_ADDR or Authorization: Bearer <API_KEY>",
    ))
}

/// `GET /api/stats`: this node's open connections and hosted rooms.
async fn stats(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    match operator_only(&gateway, &headers) {
        Ok(()) => render_stats(State(gateway)).await.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn render_stats(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    axum::Json(json!({
        "node": gateway.config.node_id,
        "connections": gateway.admission.open(),
        "http_connections": gateway.http_connections.open(),
        "rooms": gateway.registry.room_count(),
    }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: the bus and the journal are reachable", body = crate::openapi::Status),
        (status = 503, description = "Not ready: `down` names what is not", body = crate::openapi::Status),
    ))]
pub(crate) async fn public_readyz(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Response {
    let operator = gateway.config.metrics_public
        || crate::auth::bearer(&headers)
            .is_some_and(|key| gateway.config.auth.api_key_matches(key));
    ready_response(&gateway, operator)
}

/// `/readyz` on the operators' listener: with the unreachable shards named.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    ready_response(&gateway, true)
}

/// Ready, or 503 naming what is down. Redis Cluster shards are named by
/// address only to operators (metrics public, the API key, or the
/// operators' listener); others see `redis`.
fn ready_response(gateway: &Gateway, operator: bool) -> Response {
    let mut down = gateway.bus.unavailable();
    if !operator && !down.is_empty() {
        down = vec![gateway.bus.kind().to_owned()];
    }
    if !gateway.journal.is_ready() {
        down.push(gateway.journal.kind().to_owned());
    }
    if down.is_empty() {
        axum::Json(Status {
            status: "ready".into(),
            down: None,
        })
        .into_response()
    } else {
        let status = Status {
            status: "unavailable".into(),
            down: Some(down),
        };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(status)).into_response()
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    match operator_only(&gateway, &headers) {
        Ok(()) => render_metrics(State(gateway)).await,
        Err(e) => e.into_response(),
    }
}

async fn render_metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    match &gateway.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled on this node",
        )
        .into_response(),
    }
}
