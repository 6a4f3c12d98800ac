//! Plain WebSocket connections on `/ws` (protocol in docs/protocol.md).
//!
//! Each connection is one task that both reads the socket and drains the
//! connection's bounded mailbox. Queued frames are written in batches
//! (`feed` each, one `flush`), so a busy room costs one syscall per batch,
//! not one per message. The socket lives in one heap box that every state
//! of the task points to, so an idle connection's task stays small.

mod clocks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use switchboard_protocol::{ErrorCode, FrameError, Request, ServerFrame};
use tokio::time::Sleep;
use tracing::Instrument;

use crate::Gateway;
use crate::admit::Handshake;
use crate::auth::{Identity, request_token};
use crate::error::ApiError;
use crate::limits::ConnectionSlot;
use crate::mailbox::{Kick, Mailbox, Ready};
use crate::recent::IdWindow;
use crate::registry::{Sink, WsSink};
use crate::rooms::Rooms;
use crate::session::{Answer, Session};
use crate::users::Handle;
use clocks::{Clocks, Due};

/// Frames written per flush at most, so one busy connection cannot starve
/// its own reads.
const WRITE_BATCH: usize = 256;
/// Read buffer per connection; tungstenite's default reserves 128 KiB.
const READ_BUFFER: usize = 1024;
/// Longest a busy connection holds written frames before flushing them.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes gathered before tungstenite writes to the socket by itself: frames
/// fed in one batch leave in one write at the batch's flush.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long a closing connection waits for the client's Close.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);
/// Unflushed bytes allowed per connection before writes fail.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// `GET /ws?name=alice[&token=JWT]`: admits the connection (origin, node
/// cap, per-address rate, token or name), then upgrades. Every refusal,
/// a plain GET without the upgrade headers included, is an HTTP status
/// with a JSON body.
pub(crate) async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
    let Query(query) =
        query.map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
    let admitted = gateway.admit(&Handshake {
        peer,
        headers: &headers,
        token: request_token(query.get("token").map(String::as_str), &headers),
        name: query.get("name").map(String::as_str),
    })?;
    let max = gateway.config.max_frame_bytes;
    let tracker = gateway.connections.clone();
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(max * 2))
        .max_frame_size(max)
        .max_message_size(max)
        .on_upgrade(move |socket| {
            tracker.track_future(run(
                gateway,
                Box::new(socket),
                admitted.identity,
                admitted.slot,
            ))
        })
        .into_response())
}

struct Conn {
    gateway: Arc<Gateway>,
    session: Session,
    sink: WsSink,
    rooms: Rooms,
    /// Ids just sent as join history, with when to forget them: in cluster
    /// mode a message can reach the store before it arrives live from
    /// another node, and must then not be delivered twice.
    /// Bounded (a connection joining and leaving rooms with long histories
    /// must not grow it), and its memory is given back once the window ends.
    recent_history: IdWindow,
    forget_history_at: Instant,
}

/// The close code of a connection whose token expired unrefreshed.
pub(crate) const TOKEN_EXPIRED: u16 = 4001;

/// The close code of a connection the server API disconnected.
pub(crate) const DISCONNECTED: u16 = 4002;

/// How long ids sent as join history are kept to drop live duplicates.
const HISTORY_DEDUPE_WINDOW: Duration = Duration::from_secs(5);

/// Ids a connection remembers from its joins: the longest history one
/// join may send, plus the room's recent messages merged into it, twice
/// (two joins in quick succession).
fn dedupe_capacity(config: &crate::GatewayConfig) -> usize {
    2 * (config.limits.history_max as usize + crate::registry::RECENT_PER_ROOM)
}

/// How the loop ended: with a close frame to send, or with nothing to say.
enum End {
    Close(u16, &'static str),
    Gone,
}

/// The connection's task. A plain function returning one future, not an
/// `async fn` around an instrumented block: that would keep its arguments
/// a second time in every idle connection's task.
fn run(
    gateway: Arc<Gateway>,
    mut socket: Box<WebSocket>,
    identity: Identity,
    slot: ConnectionSlot,
) -> impl Future<Output = ()> {
    let session = Session::new(&gateway, identity);
    let span = tracing::info_span!("conn", conn_id = session.id, user = %session.identity.name, protocol = "ws");
    async move {
        let _slot = slot;
        let sink = Mailbox::new(gateway.config.client_queue_frames);
        let recent_history = IdWindow::new(dedupe_capacity(&gateway.config));
        let mut conn = Conn {
            gateway,
            session,
            sink,
            rooms: Rooms::new(false),
            recent_history,
            forget_history_at: Instant::now(),
        };
        tracing::info!("connection opened");
        metrics::gauge!("switchboard_connections", "protocol" => "ws").increment(1.0);
        let (users, session) = (&conn.gateway.users, &conn.session);
        users.add(
            &session.identity.name,
            session.id,
            Handle::Ws(conn.sink.clone()),
        );
        let end = conn.serve(&mut socket).await;
        conn.gateway
            .users
            .remove(&conn.session.identity.name, conn.session.id);
        conn.session.close(&conn.gateway.registry, &mut conn.rooms);
        conn.sink.close();
        metrics::gauge!("switchboard_connections", "protocol" => "ws").decrement(1.0);
        if let End::Close(code, reason) = &end {
            let frame = CloseFrame {
                code: *code,
                reason: Utf8Bytes::from_static(reason),
            };
            // The closing handshake: send Close, then read (and drop) what
            // the client still sends until its Close comes back. Closing with
            // unread data would reset the connection, and the client could
            // lose the close frame and its code.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                socket.send(WsMessage::Close(Some(frame))).await?;
                while let Some(msg) = socket.recv().await {
                    if matches!(msg?, WsMessage::Close(_)) {
                        break;
                    }
                }
                Ok::<(), axum::Error>(())
            })
            .await;
        }
        match end {
            End::Close(code, reason) => tracing::info!(code, reason, "connection closed"),
            End::Gone => tracing::info!("connection closed by client"),
        }
    }
    .instrument(span)
}

impl Conn {
    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let shutdown = self.gateway.shutdown.clone();
        let mailbox = self.sink.clone();
        // Why the connection must stop, as one future made once (a fresh
        // `cancelled()` per loop turn would take the token's lock each time).
        let stop = async {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => End::Close(1001, "server shutting down"),
                kick = std::future::poll_fn(|cx| mailbox.poll_kicked(cx)) => match kick {
                    Kick::Slow => slow_consumer(),
                    Kick::Disconnected => End::Close(DISCONNECTED, "disconnected by the server"),
                },
            }
        };
        tokio::pin!(stop);
        let mut clocks = Clocks::new(&self.gateway.config);
        let timer = tokio::time::sleep(clocks.first_wait(self.session.expires_at()));
        tokio::pin!(timer);
        // Every write stalls on a client that stopped reading once its
        // socket buffers are full, so each one runs `guarded`: racing `stop`.
        loop {
            let ended = tokio::select! {
                biased;
                end = &mut stop => Some(end),
                () = &mut timer => {
                    let due = clocks.fired(timer.as_mut(), self.session.expires_at());
                    self.on_timer(socket, due, stop.as_mut()).await
                }
                Ready::Frames = std::future::poll_fn(|cx| self.sink.poll_ready(cx)) => {
                    self.write_queued(socket, &mut clocks, timer.as_mut(), stop.as_mut()).await
                }
                incoming = socket.recv() => {
                    clocks.heard();
                    self.on_incoming(socket, incoming, stop.as_mut()).await
                }
            };
            if let Some(end) = ended {
                return end;
            }
        }
    }

    /// Flushes, pings or closes as the timer says.
    async fn on_timer(
        &mut self,
        socket: &mut WebSocket,
        due: Due,
        mut stop: Pin<&mut impl Future<Output = End>>,
    ) -> Option<End> {
        if due.flush
            && let Some(end) = guarded(stop.as_mut(), socket.flush()).await
        {
            return Some(end);
        }
        if due.idle {
            return Some(End::Close(1001, "idle timeout"));
        }
        if due.expired {
            metrics::counter!("switchboard_token_expiries_total").increment(1);
            return Some(End::Close(TOKEN_EXPIRED, "token expired"));
        }
        if let Some(in_ms) = due.expiring {
            let warning = ServerFrame::TokenExpiring { in_ms }.encode();
            // Through the queue: never a write outside the select.
            self.sink.push(crate::mailbox::reply(warning));
        }
        if due.ping {
            let ping = socket.send(WsMessage::Ping(axum::body::Bytes::new()));
            return guarded(stop, ping).await;
        }
        None
    }

    /// Writes a batch of what is queued, flushing it now or soon.
    async fn write_queued(
        &mut self,
        socket: &mut WebSocket,
        clocks: &mut Clocks,
        timer: Pin<&mut Sleep>,
        mut stop: Pin<&mut impl Future<Output = End>>,
    ) -> Option<End> {
        if !self.recent_history.is_empty() && Instant::now() >= self.forget_history_at {
            self.recent_history.clear();
        }
        let skip = (!self.recent_history.is_empty()).then_some(&self.recent_history);
        if let Some(end) = guarded(stop.as_mut(), feed_batch(socket, &self.sink, skip)).await {
            return Some(end);
        }
        if clocks.flush_now(timer) {
            return guarded(stop, socket.flush()).await;
        }
        None
    }

    /// Answers what the client sent.
    async fn on_incoming(
        &mut self,
        socket: &mut WebSocket,
        incoming: Option<Result<WsMessage, axum::Error>>,
        stop: Pin<&mut impl Future<Output = End>>,
    ) -> Option<End> {
        let message = match incoming {
            None | Some(Ok(WsMessage::Close(_))) => return Some(End::Gone),
            Some(Err(e)) => return Some(classify(e)),
            Some(Ok(message)) => message,
        };
        // Every frame counts, control frames too: a ping flood makes us
        // write pongs.
        if !self.session.frame_allowed() {
            return Some(rate_exceeded());
        }
        match message {
            WsMessage::Text(text) => {
                // Boxed: the request path's states would otherwise be part
                // of every idle connection's task.
                guarded(stop, Box::pin(self.handle(socket, text.as_str()))).await
            }
            WsMessage::Binary(_) => {
                let err = FrameError::new(
                    ErrorCode::BadFrame,
                    "binary frames are not supported; send JSON text",
                );
                let reply = ServerFrame::error(err).encode();
                // Through the queue: never a write outside the select.
                self.sink.push(crate::mailbox::reply(reply));
                None
            }
            _ => None,
        }
    }

    /// Answers one text frame. Errors only when the socket is gone.
    async fn handle(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), axum::Error> {
        let request = match Request::decode(text, &self.gateway.config.limits) {
            Ok(request) => request,
            Err(err) => return send(socket, &ServerFrame::error(err)).await,
        };
        let mailbox = &self.sink;
        let answer = self
            .session
            .handle(
                &self.gateway,
                &mut self.rooms,
                || Sink::Ws(mailbox.clone()),
                request,
                (),
            )
            .await;
        match answer {
            Answer::Now(joined @ ServerFrame::Joined { .. }) => {
                if let ServerFrame::Joined { history, .. } = &joined {
                    self.forget_history_at = Instant::now() + HISTORY_DEDUPE_WINDOW;
                    for m in history {
                        self.recent_history.insert(m.id);
                    }
                }
                send(socket, &joined).await?;
                // Live messages queued while history was read may already
                // be in it: drop those, keep the rest in order.
                flush_queued(socket, &self.sink, &self.recent_history).await
            }
            Answer::Now(frame) => send(socket, &frame).await,
            Answer::Durable(ack) => {
                // The ack goes through the queue once durable: the loop
                // never waits for the journal.
                let sink = self.sink.clone();
                tokio::spawn(async move {
                    sink.push(crate::mailbox::reply(ack.frame().await.encode()));
                });
                Ok(())
            }
            Answer::Silent => Ok(()),
        }
    }
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), axum::Error> {
    socket
        .send(WsMessage::Text(Utf8Bytes::from(frame.encode())))
        .await
}

/// Feeds what is queued (up to a batch) into the socket's write buffer
/// without flushing. Frames whose id is in `skip` are dropped.
async fn feed_batch(
    socket: &mut WebSocket,
    mailbox: &Mailbox,
    skip: Option<&IdWindow>,
) -> Result<(), axum::Error> {
    let mut written = 0;
    while written < WRITE_BATCH {
        let Some(out) = mailbox.pop() else { break };
        let skipped = matches!((skip, out.id), (Some(skip), Some(id)) if skip.contains(&id));
        if !skipped {
            socket.feed(WsMessage::Text(out.frame.clone())).await?;
            written += 1;
        }
    }
    Ok(())
}

/// Writes everything queued right now, dropping frames already in `seen`.
async fn flush_queued(
    socket: &mut WebSocket,
    mailbox: &Mailbox,
    seen: &IdWindow,
) -> Result<(), axum::Error> {
    loop {
        feed_batch(socket, mailbox, Some(seen)).await?;
        socket.flush().await?;
        if mailbox.is_empty() {
            return Ok(());
        }
    }
}

/// Runs a write unless `stop` completes first; `Some` when the connection
/// must end.
async fn guarded(
    stop: std::pin::Pin<&mut impl Future<Output = End>>,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Option<End> {
    tokio::select! {
        biased;
        written = write => written.is_err().then_some(End::Gone),
        end = stop => Some(end),
    }
}

fn rate_exceeded() -> End {
    tracing::info!("frames past ten times the rate limit");
    End::Close(1008, "rate limit exceeded")
}

fn slow_consumer() -> End {
    tracing::info!("slow consumer: outbound queue full");
    End::Close(1008, "slow consumer")
}

/// Maps a read error to the close code the protocol promises.
fn classify(e: axum::Error) -> End {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(_) => End::Close(1009, "frame too large"),
            tungstenite::Error::Utf8(_) => End::Close(1007, "invalid UTF-8"),
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => End::Gone,
            tungstenite::Error::Protocol(_) => End::Close(1002, "protocol error"),
            _ => End::Gone,
        },
        Err(_) => End::Gone,
    }
}
