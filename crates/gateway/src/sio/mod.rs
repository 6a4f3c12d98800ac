//! Socket.IO clients on `/socket.io/` (protocol v5, socketioxide).
//!
//! The original system's contract is kept: every socket starts in `lobby`,
//! emitting `event:message` with a string sends it there, and every
//! Socket.IO member of `lobby` receives `event:listen` with the string. On
//! top of that, `join` / `leave` / `send` events with acknowledgement
//! callbacks give Socket.IO clients the same rooms as `/ws` clients.
//!
//! Each event is decoded into a `protocol::Request` and handed to the
//! socket's [`Session`] in the socket's order (see [`turn`]); the answer
//! goes back through the client's acknowledgement callback.

mod socket;
mod turn;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use serde_json::Value;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{ParserConfig, SocketError, SocketIoBuilder};
use switchboard_protocol::{ErrorCode, FrameError, PlainValue, Request, ServerFrame};
use uuid::Uuid;

use crate::Gateway;
use crate::auth::request_token;
use crate::error::ApiError;
use crate::gate::Gate;
use crate::registry::{Cut, Sink};
use crate::rooms::lobby;
use crate::session::{Answer, Session};

pub(crate) use socket::cut;
use socket::{SioConn, conn_of};
use turn::{Reply, Turn};

/// Builds the Socket.IO layer for `gateway`.
pub(crate) fn layer(gateway: &Arc<Gateway>) -> socketioxide::layer::SocketIoLayer {
    let config = &gateway.config;
    let (layer, io) = SocketIoBuilder::new()
        .max_buffer_size(config.client_queue_frames.max(1))
        .max_payload(config.max_frame_bytes as u64)
        .ws_read_buffer_size(4 * 1024)
        // The same keepalive as /ws: pinged every `ping_interval`, gone
        // when silent for `idle_timeout`.
        .ping_interval(config.ping_interval)
        .ping_timeout(
            config
                .idle_timeout
                .saturating_sub(config.ping_interval)
                .max(Duration::from_secs(1)),
        )
        // A session that connects no namespace is closed as a slow
        // handshake is.
        .connect_timeout(config.handshake_timeout)
        // The protocol has no binary attachments: a packet announcing one
        // closes the session instead of buffering what follows.
        .with_parser(
            ParserConfig::common()
                .max_incoming_binaries(0)
                .max_incoming_binary_buf_size(0)
                .packet_completion_timeout(Duration::from_secs(1)),
        )
        .ws_max_frame_size(config.max_frame_bytes)
        .ws_max_message_size(config.max_frame_bytes)
        .with_state(gateway.clone())
        .build_layer();
    io.ns("/", on_connect.with(setup));
    let _ = gateway.io.set(io);
    layer
}

/// The display name asked for in the handshake: `auth.name`, else `?name=`.
fn handshake_name(socket: &SocketRef, auth: &Option<Value>) -> Result<Option<String>, ApiError> {
    if let Some(name) = auth.as_ref().and_then(|a| a.get("name")) {
        return match name.as_str() {
            Some(name) => Ok(Some(name.to_owned())),
            None => Err(ApiError::bad_name("auth.name must be a string")),
        };
    }
    let query = Query::<HashMap<String, String>>::try_from_uri(&socket.req_parts().uri)
        .map(|q| q.0)
        .unwrap_or_default();
    Ok(query.get("name").cloned())
}

/// The connection token: `auth.token`, else `?token=`, else
/// `Authorization: Bearer`.
fn handshake_token(socket: &SocketRef, auth: &Option<Value>) -> Option<String> {
    if let Some(token) = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
    {
        return Some(token.to_owned());
    }
    let parts = socket.req_parts();
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    request_token(query.get("token").map(String::as_str), &parts.headers).map(str::to_owned)
}

/// Checks a socket before socketioxide answers its CONNECT (the session
/// itself was admitted, origin included, when it opened, see
/// [`crate::engineio::guard`]): a bad token or an invalid name refuses the
/// connection with a
/// `connect_error` whose message starts with a code. Its handlers are
/// registered here, since the client may emit as soon as it is connected;
/// nothing that must be undone is done before [`on_connect`].
async fn setup(
    socket: SocketRef,
    TryData(auth): TryData<PlainValue>,
    State(gateway): State<Arc<Gateway>>,
) -> Result<(), String> {
    // Parsed as `PlainValue`: serde_json's `raw_value` key gets no special
    // treatment in anything a client sends (see `PlainValue`).
    let auth = auth.ok().map(|a| a.0);
    // The origin is not checked again: these are the parts of the request
    // that opened the session, which the guard checked then.
    let token = handshake_token(&socket, &auth);
    let name = match (&token, handshake_name(&socket, &auth)) {
        (None, Err(e)) => return Err(e.connect_error()),
        (_, name) => name.ok().flatten(),
    };
    let identity = gateway
        .identify(token.as_deref(), name.as_deref())
        .map_err(|e| e.connect_error())?;
    let in_lobby = identity.may_join(&lobby(), gateway.policies.of(crate::LOBBY).join);
    let conn = SioConn::new(Session::new(&gateway, identity), in_lobby);
    socket.extensions.insert(conn);

    socket.on("event:message", on_legacy_message);
    // `join`, `leave`, `send` and `presence` share one handler; the event name picks
    // the request.
    for event in ["join", "leave", "send", "presence", "refresh"] {
        socket.on(
            event,
            async move |socket: SocketRef,
                        turn: Turn,
                        ack: Reply,
                        TryData(data): TryData<PlainValue>,
                        State(gateway): State<Arc<Gateway>>| {
                let data = data.map_or(Value::Null, |d| d.0);
                on_event(&gateway, &socket, turn, ack, event, &data).await
            },
        );
    }
    socket.on_fallback(async |socket: SocketRef, ack: Reply| {
        let Some(conn) = conn_of(&socket) else { return };
        if !within_frame_budget(&socket, &conn) {
            return;
        }
        let err = FrameError::new(
            ErrorCode::BadFrame,
            "unknown event; use join, leave, send or event:message",
        );
        reply(&socket, ack, ServerFrame::error(err));
    });
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// The CONNECT was answered: only now is the socket counted and put in
/// `lobby`. (socketioxide calls this only once the CONNECT reply is
/// queued; a socket whose reply could not be queued is dropped without a
/// disconnect, and must not have joined anything.)
async fn on_connect(socket: SocketRef, State(gateway): State<Arc<Gateway>>) {
    let Some(conn) = conn_of(&socket) else { return };
    let session = conn.session();
    let opened = conn.open(|rooms| {
        if rooms.in_legacy_lobby() {
            let sink = Sink::Sio {
                socket: socket.clone(),
                legacy: true,
                gate: None,
            };
            gateway
                .registry
                .join(&lobby(), session.id, sink, &session.identity.name, false);
        }
    });
    if !opened {
        return;
    }
    gateway.users.add(
        &session.identity.name,
        session.id,
        crate::users::Handle::Sio(socket.clone()),
    );
    tracing::info!(conn_id = session.id, sid = %socket.id, user = %session.identity.name, protocol = "socket.io", "connection opened");
    metrics::gauge!("switchboard_connections", "protocol" => "socket.io").increment(1.0);
    if session.expires_at().is_some() {
        tokio::spawn(watch_expiry(gateway, socket));
    }
}

/// How often a token's watcher checks that its socket is still there.
const EXPIRY_RECHECK: Duration = Duration::from_secs(5);

/// A socket authenticated by a token: warned (`token_expiring`) before the
/// token expires, and at expiry, unless a `refresh` moved it, told
/// `token_expired` and disconnected. Ends with the socket.
async fn watch_expiry(gateway: Arc<Gateway>, socket: SocketRef) {
    let mut warned_for = 0;
    loop {
        let Some(conn) = live_conn(&socket) else {
            return;
        };
        let Some(at) = conn.session().expires_at() else {
            return;
        };
        let left = crate::time_until(at);
        if left.is_zero() {
            metrics::counter!("switchboard_token_expiries_total").increment(1);
            let err = FrameError::new(ErrorCode::TokenExpired, "token expired");
            let _ = socket.emit("error", &ServerFrame::error(err));
            let _ = socket.clone().disconnect();
            return;
        }
        let warn_in = left.saturating_sub(gateway.config.token_warning);
        if warn_in.is_zero() && warned_for != at {
            warned_for = at;
            let in_ms = left.as_millis() as u64;
            let _ = socket.emit("token_expiring", &ServerFrame::TokenExpiring { in_ms });
        }
        let wait = if warned_for == at { left } else { warn_in };
        tokio::select! {
            () = tokio::time::sleep(wait.min(EXPIRY_RECHECK)) => {}
            () = gateway.shutdown.cancelled() => return,
        }
    }
}

/// The socket's state if its CONNECT was answered. Events of a socket
/// whose CONNECT reply could not be queued (socketioxide then drops it
/// without a disconnect) are ignored, so they cannot join rooms.
fn live_conn(socket: &SocketRef) -> Option<SioConn> {
    socket.connected().then(|| conn_of(socket)).flatten()
}

/// Answers through the client's ack callback when it gave one; without one,
/// errors go out as an `error` event and other replies have no one to go to.
fn reply(socket: &SocketRef, ack: Reply, frame: ServerFrame) {
    let value = serde_json::to_value(&frame).unwrap_or(Value::Null);
    if ack.wanted {
        let _ = ack.ack.send(&value);
    } else if matches!(frame, ServerFrame::Error { .. }) {
        let _ = socket.emit("error", &value);
    }
}

/// The original contract: `event:message` with a string goes to `lobby`.
async fn on_legacy_message(
    socket: SocketRef,
    turn: Turn,
    ack: Reply,
    TryData(data): TryData<PlainValue>,
    State(gateway): State<Arc<Gateway>>,
) {
    let request = match data.map(|d| d.0) {
        Ok(Value::String(text)) => Request::send_text(lobby(), text, &gateway.config.limits),
        _ => Err(FrameError::new(
            ErrorCode::BadFrame,
            "event:message takes one string",
        )),
    };
    serve(&gateway, &socket, turn, ack, request).await;
}

/// `join`, `leave` and `send`, with the event's data object.
async fn on_event(
    gateway: &Arc<Gateway>,
    socket: &SocketRef,
    turn: Turn,
    ack: Reply,
    event: &str,
    data: &Value,
) {
    let request = Request::from_event(event, data, &gateway.config.limits);
    serve(gateway, socket, turn, ack, request).await;
}

/// Waits for the event's turn, takes it from the frame budget, and has the
/// session answer it.
async fn serve(
    gateway: &Arc<Gateway>,
    socket: &SocketRef,
    turn: Turn,
    ack: Reply,
    request: Result<Request, FrameError>,
) {
    let turn = turn.wait().await;
    let Some(conn) = live_conn(socket) else {
        return;
    };
    if !within_frame_budget(socket, &conn) {
        return;
    }
    let request = match request {
        Ok(request) => request,
        Err(err) => return reply(socket, ack, ServerFrame::error(err)),
    };
    // A join holds the room's live messages until its answer is out.
    let gate = Gate::default();
    let sink = || Sink::Sio {
        socket: socket.clone(),
        legacy: false,
        gate: Some(gate.clone()),
    };
    let answer = conn
        .session()
        .handle(gateway, &mut conn.rooms(), sink, request, turn)
        .await;
    match answer {
        Answer::Now(frame) => {
            let sent: HashSet<Uuid> = match &frame {
                ServerFrame::Joined { history, .. } => history.iter().map(|m| m.id).collect(),
                _ => HashSet::new(),
            };
            reply(socket, ack, frame);
            if let Err(e) = gate.open(socket, &sent) {
                let cut = match e {
                    SocketError::InternalChannelFull => Cut::Slow(socket.clone()),
                    _ => Cut::Gone(socket.clone()),
                };
                self::cut(&gateway.registry, cut);
            }
        }
        Answer::Durable(pending) => reply(socket, ack, pending.frame().await),
        Answer::Silent => {}
    }
}

/// Takes one event from the socket's frame budget; past ten times the rate
/// the socket is disconnected and false returned.
fn within_frame_budget(socket: &SocketRef, conn: &SioConn) -> bool {
    if conn.session().frame_allowed() {
        return true;
    }
    tracing::info!(conn_id = conn.session().id, sid = %socket.id, "events past ten times the rate limit; disconnecting");
    let _ = socket.clone().disconnect();
    false
}

async fn on_disconnect(
    socket: SocketRef,
    reason: DisconnectReason,
    State(gateway): State<Arc<Gateway>>,
) {
    let Some(conn) = conn_of(&socket) else { return };
    // Closed and read under one lock: a racing `on_connect` either counted
    // the socket before this or does not count it at all.
    let (_, opened) = conn.close(&gateway.registry);
    socket.extensions.remove::<SioConn>();
    let session = conn.session();
    if opened {
        metrics::gauge!("switchboard_connections", "protocol" => "socket.io").decrement(1.0);
        gateway.users.remove(&session.identity.name, session.id);
    }
    tracing::info!(conn_id = session.id, sid = %socket.id, user = %session.identity.name, %reason, "connection closed");
}
