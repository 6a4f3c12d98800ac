//! Socket.IO clients on `/socket.io/` (protocol v5, socketioxide).
//!
//! The original system's contract is kept: every socket starts in `lobby`,
//! emitting `event:message` with a string sends it there, and every
//! Socket.IO member of `lobby` receives `event:listen` with the string. On
//! top of that, `join` / `leave` / `send` events with acknowledgement
//! callbacks give Socket.IO clients the same rooms as `/ws` clients.
//!
//! socketioxide runs each event's handler in a task of its own, so two
//! quick events could be handled out of order. Each handler therefore takes
//! a [`Turn`], numbered synchronously in arrival order, and waits for it
//! before touching rooms or accepting a message: a socket's events take
//! effect in the order it sent them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::Query;
use serde_json::{Value, json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{ParserConfig, SocketIoBuilder};
use switchboard_protocol::{
    ClientFrame, ErrorCode, FrameError, PlainValue, Request as ClientRequest, RoomName, ServerFrame,
};
use tokio::sync::watch;

use crate::Gateway;
use crate::auth::{Identity, request_token};
use crate::error::ApiError;
use crate::limits::{FrameBudget, Verdict};
use crate::registry::{Registry, Sink};
use crate::session::{self, Rooms, lobby};

/// How long a kicked slow consumer may take to accept its DISCONNECT before
/// the engine's own heartbeat timeout is left to close it.
const KICK_RETRY_FOR: Duration = Duration::from_secs(60);

/// Per-socket state, kept in the socket's extensions.
#[derive(Clone)]
struct SioConn {
    id: u64,
    name: Arc<str>,
    /// Rooms its token allows (`None`: any).
    identity: Arc<Identity>,
    state: Arc<Mutex<SocketState>>,
    next_ticket: Arc<AtomicU64>,
    serving: Arc<watch::Sender<u64>>,
    /// Frames per second it may send; `None` when unlimited.
    budget: Option<Arc<FrameBudget>>,
}

/// What a socket's events change, under one lock.
struct SocketState {
    /// Its rooms (`lobby` the original way from the start, when allowed).
    rooms: Rooms,
    /// Its CONNECT was answered: it is counted and may be in rooms.
    opened: bool,
    /// Disconnected or kicked: no more joins or sends.
    closed: bool,
}

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
    let in_lobby = identity.may_join(&lobby());
    let conn = SioConn {
        id: gateway.next_conn_id(),
        name: identity.name.as_str().into(),
        identity: Arc::new(identity),
        state: Arc::new(Mutex::new(SocketState {
            rooms: Rooms::new(in_lobby),
            opened: false,
            closed: false,
        })),
        next_ticket: Arc::new(AtomicU64::new(0)),
        serving: Arc::new(watch::Sender::new(0)),
        budget: FrameBudget::new(gateway.config.send_rate).map(Arc::from),
    };
    socket.extensions.insert(conn);

    socket.on("event:message", on_legacy_message);
    // `join`, `leave` and `send` share one handler; the event name picks
    // the request.
    for event in ["join", "leave", "send"] {
        socket.on(
            event,
            async move |socket: SocketRef,
                        turn: Turn,
                        ack: Reply,
                        TryData(data): TryData<PlainValue>,
                        State(gateway): State<Arc<Gateway>>| {
                let data = data.map_or(Value::Null, |d| d.0);
                handle(&gateway, &socket, turn, ack, event, &data).await
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
    {
        // Under the state lock: a disconnect racing this sees either
        // nothing joined or everything.
        let mut state = conn.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return;
        }
        state.opened = true;
        if state.rooms.in_legacy_lobby() {
            gateway.registry.join(
                &lobby(),
                conn.id,
                Sink::Sio {
                    socket: socket.clone(),
                    legacy: true,
                },
            );
        }
    }
    tracing::info!(conn_id = conn.id, sid = %socket.id, user = %conn.name, protocol = "socket.io", "connection opened");
    metrics::gauge!("switchboard_connections", "protocol" => "socket.io").increment(1.0);
}

fn conn_of(socket: &SocketRef) -> Option<SioConn> {
    socket.extensions.get::<SioConn>()
}

/// The socket's state if its CONNECT was answered. Events of a socket
/// whose CONNECT reply could not be queued (socketioxide then drops it
/// without a disconnect) are ignored, so they cannot join rooms.
fn live_conn(socket: &SocketRef) -> Option<SioConn> {
    socket.connected().then(|| conn_of(socket)).flatten()
}

/// The client's acknowledgement callback, and whether it gave one.
struct Reply {
    ack: AckSender,
    wanted: bool,
}

impl FromMessageParts<LocalAdapter> for Reply {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(Self {
            ack: AckSender::from_message_parts(s, v, ack_id)?,
            wanted: ack_id.is_some(),
        })
    }
}

/// An event's place in its socket's order, taken when the event arrives
/// (extractors run synchronously, in arrival order, before the handler's
/// task is spawned).
struct Turn {
    ticket: u64,
    serving: Option<Arc<watch::Sender<u64>>>,
}

impl FromMessageParts<LocalAdapter> for Turn {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(match s.extensions.get::<SioConn>() {
            Some(conn) => Turn {
                ticket: conn.next_ticket.fetch_add(1, Ordering::Relaxed),
                serving: Some(conn.serving),
            },
            None => Turn {
                ticket: 0,
                serving: None,
            },
        })
    }
}

impl Turn {
    /// Waits until every earlier event of the socket has taken effect.
    async fn wait(self) -> TurnGuard {
        if let Some(serving) = &self.serving {
            let mut rx = serving.subscribe();
            let _ = rx.wait_for(|now| *now >= self.ticket).await;
        }
        TurnGuard(self.serving)
    }
}

/// Lets the next event go when dropped.
struct TurnGuard(Option<Arc<watch::Sender<u64>>>);

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if let Some(serving) = &self.0 {
            serving.send_modify(|now| *now += 1);
        }
    }
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
    let turn = turn.wait().await;
    let Some(conn) = live_conn(&socket) else {
        return;
    };
    if !within_frame_budget(&socket, &conn) {
        return;
    }
    let text = match data.map(|d| d.0) {
        Ok(Value::String(text)) => text,
        _ => {
            let err = FrameError::new(ErrorCode::BadFrame, "event:message takes one string");
            return reply(&socket, ack, ServerFrame::error(err));
        }
    };
    let request = json!({ "room": crate::LOBBY, "text": text });
    match ClientRequest::from_event("send", &request, &gateway.config.limits) {
        Ok(ClientRequest {
            frame: ClientFrame::Send { room, text, .. },
            ..
        }) => send(&gateway, &socket, &conn, turn, ack, room, text, None, None).await,
        Ok(_) => {}
        Err(err) => reply(&socket, ack, ServerFrame::error(err)),
    }
}

async fn handle(
    gateway: &Arc<Gateway>,
    socket: &SocketRef,
    turn: Turn,
    ack: Reply,
    event: &str,
    data: &Value,
) {
    let turn = turn.wait().await;
    let Some(conn) = live_conn(socket) else {
        return;
    };
    if !within_frame_budget(socket, &conn) {
        return;
    }
    let request = match ClientRequest::from_event(event, data, &gateway.config.limits) {
        Ok(request) => request,
        Err(err) => return reply(socket, ack, ServerFrame::error(err)),
    };
    let r#ref = request.r#ref;
    match request.frame {
        ClientFrame::Join { room, history } => {
            let (recent, newly) = {
                let mut state = conn.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.closed {
                    return;
                }
                let max = gateway.config.max_rooms_per_connection;
                if let Err(err) = state.rooms.may_join(&conn.identity, &room, max) {
                    drop(state);
                    return reply(socket, ack, ServerFrame::error(err.with_ref(r#ref)));
                }
                let newly = state.rooms.join(&room);
                let recent = gateway.registry.join(
                    &room,
                    conn.id,
                    Sink::Sio {
                        socket: socket.clone(),
                        legacy: false,
                    },
                );
                (recent, newly)
            };
            drop(turn);
            match gateway.history(&room, history, recent).await {
                Ok(history) => reply(
                    socket,
                    ack,
                    ServerFrame::Joined {
                        room,
                        history: history.messages,
                        truncated: history.truncated,
                        r#ref,
                    },
                ),
                Err(e) => {
                    tracing::warn!(error = %e, %room, "history read failed");
                    if newly {
                        let mut state = conn.state.lock().unwrap_or_else(PoisonError::into_inner);
                        if state.rooms.leave(&room) {
                            gateway.registry.leave(&room, conn.id);
                        }
                    }
                    let err = session::history_unavailable();
                    reply(socket, ack, ServerFrame::error(err.with_ref(r#ref)));
                }
            }
        }
        ClientFrame::Leave { room } => {
            {
                let mut state = conn.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.rooms.leave(&room) {
                    gateway.registry.leave(&room, conn.id);
                }
            }
            reply(socket, ack, ServerFrame::Left { room, r#ref });
        }
        ClientFrame::Send { room, text, id } => {
            send(gateway, socket, &conn, turn, ack, room, text, id, r#ref).await
        }
        ClientFrame::Ping => reply(socket, ack, ServerFrame::Pong { r#ref }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    gateway: &Arc<Gateway>,
    socket: &SocketRef,
    conn: &SioConn,
    turn: TurnGuard,
    ack: Reply,
    room: RoomName,
    text: String,
    id: Option<uuid::Uuid>,
    r#ref: Option<Value>,
) {
    let allowed = conn
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .rooms
        .may_send(&room, conn.budget.as_deref());
    if let Err(err) = allowed {
        return reply(socket, ack, ServerFrame::error(err.with_ref(r#ref)));
    }
    let (message, durable) = gateway.accept(&conn.name, room, text, id);
    // Accepted in order; the next event need not wait for durability.
    drop(turn);
    let frame = match durable.await {
        Ok(()) => ServerFrame::Ack {
            r#ref,
            id: message.id,
        },
        Err(e) => ServerFrame::Error {
            code: ErrorCode::Unavailable,
            message: e.0,
            r#ref,
            id: Some(message.id),
        },
    };
    reply(socket, ack, frame);
}

/// Takes one event from the socket's frame budget; past ten times the rate
/// the socket is disconnected and false returned.
fn within_frame_budget(socket: &SocketRef, conn: &SioConn) -> bool {
    if conn
        .budget
        .as_ref()
        .is_none_or(|b| b.frame() == Verdict::Allow)
    {
        return true;
    }
    tracing::info!(conn_id = conn.id, sid = %socket.id, "events past ten times the rate limit; disconnecting");
    let _ = socket.clone().disconnect();
    false
}

/// Removes `conn` from every room it is in, once; true the first time.
/// It stays closed: no later event joins anything.
fn leave_everything(registry: &Registry, conn: &SioConn) -> bool {
    let rooms = {
        let mut state = conn.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return false;
        }
        state.closed = true;
        state.rooms.take_all()
    };
    for room in &rooms {
        registry.leave(room, conn.id);
    }
    true
}

/// A member whose socket is gone (an emit answered `Closed`) leaves every
/// room, whatever way it ended: no room keeps a dead socket.
pub(crate) fn drop_gone(registry: &Registry, socket: &SocketRef) {
    let Some(conn) = conn_of(socket) else { return };
    if leave_everything(registry, &conn) {
        tracing::info!(conn_id = conn.id, sid = %socket.id, "socket gone; removed from its rooms");
    }
}

/// Cuts a Socket.IO slow consumer: out of every room at once (so the rooms
/// keep flowing and it is counted once), then disconnected as soon as its
/// buffer has room for the DISCONNECT packet. A client that never reads
/// again is closed by the engine's heartbeat timeout.
pub(crate) fn kick_slow(registry: &Registry, socket: SocketRef) {
    let Some(conn) = conn_of(&socket) else { return };
    if !leave_everything(registry, &conn) {
        return;
    }
    metrics::counter!("switchboard_slow_consumers_total", "protocol" => "socket.io").increment(1);
    tracing::info!(conn_id = conn.id, sid = %socket.id, user = %conn.name, "slow consumer: socket.io buffer full");
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + KICK_RETRY_FOR;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            if socket.clone().disconnect().is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

async fn on_disconnect(
    socket: SocketRef,
    reason: DisconnectReason,
    State(gateway): State<Arc<Gateway>>,
) {
    let Some(conn) = conn_of(&socket) else { return };
    let opened = conn
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .opened;
    leave_everything(&gateway.registry, &conn);
    socket.extensions.remove::<SioConn>();
    if opened {
        metrics::gauge!("switchboard_connections", "protocol" => "socket.io").decrement(1.0);
    }
    tracing::info!(conn_id = conn.id, sid = %socket.id, user = %conn.name, %reason, "connection closed");
}
