//! The engine.io transport under Socket.IO, seen from in front: what a
//! request to `/socket.io` must pass before socketioxide sees it. Opening a
//! session is admission (the session, not the namespace socket, is what
//! holds memory); every later request of the session is checked for its
//! origin; a polling POST is counted against the frame budget.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Gateway;
use crate::error::ApiError;
use crate::limits::ConnectionSlot;

/// An engine.io session's place under the node's connection cap, taken
/// when the session opens (see [`guard`]) and kept in the handshake
/// request's extensions, which the session holds until it ends, however it
/// ends.
#[derive(Clone)]
struct SessionSlot(#[allow(dead_code, reason = "held for its Drop")] Arc<ConnectionSlot>);

/// In front of the Socket.IO layer, for every request under `/socket.io`:
/// the browser origin is checked on each request (not only the first of a
/// session), and a request that opens an engine.io session (no `sid`) is
/// admitted like a `/ws` upgrade: per-address connect rate and a slot
/// under `MAX_CONNECTIONS`, which the session then holds until it ends.
/// A polling POST may carry at most the frame budget's burst of packets.
pub(crate) async fn guard(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !(path == "/socket.io" || path.starts_with("/socket.io/")) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let opens_session = !request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("sid=")));
    if opens_session {
        match gateway.admit_transport(peer, request.headers()) {
            Ok(slot) => {
                request.extensions_mut().insert(SessionSlot(Arc::new(slot)));
            }
            Err(e) => return e.into_response(),
        }
    } else if let Err(e) = gateway.check_origin(peer, request.headers()) {
        return e.into_response();
    }
    if request.method() == axum::http::Method::POST {
        request = match packets_within_budget(&gateway, request).await {
            Ok(request) => request,
            Err(e) => return e.into_response(),
        };
    }
    next.run(request).await
}

/// Counts the packets of a polling POST body (records separated by 0x1e)
/// against ten times the send burst, the most a connection's frame budget
/// lets through at once; with no send rate, against the client queue.
async fn packets_within_budget(gateway: &Gateway, request: Request) -> Result<Request, ApiError> {
    let config = &gateway.config;
    let most = match config.send_rate.burst.max(config.send_rate.per_second) {
        0 => config.client_queue_frames,
        burst => burst as usize * 10,
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, config.max_frame_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the polling body is over MAX_FRAME_BYTES",
            )
        })?;
    let packets = body.split(|b| *b == 0x1e).count();
    if packets > most {
        metrics::counter!("switchboard_limit_refusals_total", "limit" => "frame_rate").increment(1);
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{packets} packets in one request; at most {most}"),
        ));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(body)))
}
