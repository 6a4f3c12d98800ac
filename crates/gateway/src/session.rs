//! A connection's session, written once for every protocol: who it is,
//! the rooms it is in, its frame budget, and what each request does. `/ws`
//! and Socket.IO are adapters around it: they decode their wire format into
//! a [`Request`], call [`Session::handle`], and encode the [`Answer`]. A new
//! request type is added here and reaches both.
//!
//! `/ws` owns its [`Rooms`]; a Socket.IO socket keeps its own behind a lock
//! (its events, its disconnect and the fan-out that cuts it run in tasks of
//! their own): both lend them through [`HoldsRooms`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use switchboard_protocol::{ClientFrame, ErrorCode, FrameError, Request, RoomName, ServerFrame};
use uuid::Uuid;

use crate::auth::Identity;
use crate::limits::{FrameBudget, Verdict};
use crate::policy::{Policy, PresenceRule};
use crate::registry::Sink;
use crate::rooms::{Outgoing, Rooms};
use crate::{Gateway, Unavailable};

/// Who a connection is and what it may spend.
pub(crate) struct Session {
    /// The node-local connection id (logs, room membership).
    pub id: u64,
    pub identity: Identity,
    /// Frames per second it may send; `None` when unlimited.
    budget: Option<Box<FrameBudget>>,
    /// When the connection must end unless refreshed (Unix seconds, 0:
    /// never): its token's expiry, moved by each `refresh`.
    expires_at: AtomicU64,
}

/// Lends a connection's rooms to the session for one step.
pub(crate) trait HoldsRooms {
    fn with_rooms<R>(&mut self, f: impl FnOnce(&mut Rooms) -> R) -> R;
}

impl HoldsRooms for Rooms {
    fn with_rooms<R>(&mut self, f: impl FnOnce(&mut Rooms) -> R) -> R {
        f(self)
    }
}

/// What to say to a request.
pub(crate) enum Answer {
    /// This frame, now.
    Now(ServerFrame),
    /// The message was accepted: its `ack`, or `unavailable`, once durable.
    Durable(PendingAck),
    /// Nothing: the connection closed while the request waited.
    Silent,
}

/// A `send` accepted and not yet durable.
pub(crate) struct PendingAck {
    id: Uuid,
    /// The message's position, told with the ack.
    seq: u64,
    epoch: String,
    r#ref: Option<Value>,
    durable: Pin<Box<dyn Future<Output = Result<(), Unavailable>> + Send>>,
}

impl PendingAck {
    /// The answer once the journal has the message (or has given up).
    pub async fn frame(self) -> ServerFrame {
        match self.durable.await {
            Ok(()) => ServerFrame::Ack {
                r#ref: self.r#ref,
                id: self.id,
                seq: self.seq,
                epoch: self.epoch,
            },
            Err(Unavailable(message)) => ServerFrame::Error {
                code: ErrorCode::Unavailable,
                message,
                r#ref: self.r#ref,
                id: Some(self.id),
            },
        }
    }
}

impl Session {
    pub fn new(gateway: &Gateway, identity: Identity) -> Self {
        Self {
            id: gateway.next_conn_id(),
            expires_at: AtomicU64::new(identity.expires_at.unwrap_or(0)),
            identity,
            budget: FrameBudget::new(gateway.config.send_rate),
        }
    }

    /// When the connection must end unless refreshed (Unix seconds).
    pub fn expires_at(&self) -> Option<u64> {
        match self.expires_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// Takes one incoming frame (or event, or control frame) from the
    /// budget; false past ten times the rate: the connection must end.
    pub fn frame_allowed(&self) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|b| b.frame() == Verdict::Allow)
    }

    /// Does what `request` asks. `turn` is held while the connection's rooms
    /// change or a message is accepted, and let go before waiting for the
    /// store or the journal, so the connection's next request may start
    /// (Socket.IO's event order; `/ws` passes `()`). `sink` is how the
    /// room reaches this connection, made only when it joins.
    pub async fn handle<T>(
        &self,
        gateway: &Gateway,
        rooms: &mut impl HoldsRooms,
        sink: impl FnOnce() -> Sink,
        request: Request,
        turn: T,
    ) -> Answer {
        let Request { r#ref, frame } = request;
        match frame {
            ClientFrame::Ping => Answer::Now(ServerFrame::Pong { r#ref }),
            ClientFrame::Refresh { token } => {
                drop(turn);
                let user = self.identity.user.as_deref();
                let current = self.expires_at();
                match gateway
                    .config
                    .auth
                    .refresh(user, current.unwrap_or(0), &token)
                {
                    Ok(fresh) => {
                        self.expires_at
                            .store(fresh.expires_at.unwrap_or(0), Ordering::Relaxed);
                        metrics::counter!("switchboard_token_refreshes_total").increment(1);
                        Answer::Now(ServerFrame::Refreshed {
                            exp: fresh.exp.unwrap_or(0),
                            r#ref,
                        })
                    }
                    Err(err) => Answer::Now(ServerFrame::error(err.with_ref(r#ref))),
                }
            }
            ClientFrame::Join {
                room,
                history,
                since,
                presence,
            } => {
                // Resolved once per join, kept with the membership.
                let policy = gateway.policies.of(room.as_str());
                let watch = presence && policy.presence == PresenceRule::Events;
                let joined = rooms
                    .with_rooms(|rooms| self.join(gateway, rooms, &room, &policy, sink, watch));
                drop(turn);
                let history = match policy.history {
                    0 => 0,
                    default => history.unwrap_or(default),
                };
                let (recent, newly) = match joined {
                    Ok(Some(joined)) => joined,
                    Ok(None) => return Answer::Silent,
                    Err(err) => return Answer::Now(ServerFrame::error(err.with_ref(r#ref))),
                };
                match gateway.joined(&room, history, since, recent, &policy).await {
                    Ok(joined) => {
                        let count = match policy.presence {
                            PresenceRule::Off => None,
                            _ => gateway.presence.count(&room).await,
                        };
                        tracing::debug!(conn_id = self.id, %room, history = joined.history.messages.len(), truncated = joined.history.truncated, recovered = ?joined.recovered, "joined");
                        Answer::Now(ServerFrame::Joined {
                            room,
                            history: joined.history.messages,
                            truncated: joined.history.truncated,
                            position: joined.position,
                            recovered: joined.recovered,
                            count,
                            r#ref,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %room, "history read failed");
                        if newly {
                            rooms.with_rooms(|rooms| self.leave(gateway, rooms, &room));
                        }
                        let err = history_unavailable().with_ref(r#ref);
                        Answer::Now(ServerFrame::error(err))
                    }
                }
            }
            ClientFrame::Presence { room } => {
                let policy = rooms.with_rooms(|rooms| rooms.policy(&room, &gateway.policies));
                drop(turn);
                let Some(policy) = policy else {
                    let err = FrameError::new(
                        ErrorCode::NotJoined,
                        format!("join `{room}` before asking who is in it"),
                    );
                    return Answer::Now(ServerFrame::error(err.with_ref(r#ref)));
                };
                if policy.presence == PresenceRule::Off {
                    let err = FrameError::new(
                        ErrorCode::Forbidden,
                        format!("presence is off in `{room}`"),
                    );
                    return Answer::Now(ServerFrame::error(err.with_ref(r#ref)));
                }
                match gateway.presence.members(&room).await {
                    Ok(listing) => Answer::Now(ServerFrame::Presence {
                        room,
                        count: listing.count,
                        members: listing.members,
                        truncated: listing.truncated,
                        r#ref,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, %room, "presence read failed");
                        let err = FrameError::new(
                            ErrorCode::Unavailable,
                            "presence is unavailable; retry later",
                        );
                        Answer::Now(ServerFrame::error(err.with_ref(r#ref)))
                    }
                }
            }
            ClientFrame::Leave { room } => {
                rooms.with_rooms(|rooms| self.leave(gateway, rooms, &room));
                Answer::Now(ServerFrame::Left { room, r#ref })
            }
            ClientFrame::Send {
                room,
                payload,
                id,
                ephemeral,
            } => {
                let budget = self.budget.as_deref();
                let send = Outgoing {
                    payload: &payload,
                    ephemeral,
                };
                let allowed = rooms.with_rooms(|rooms| {
                    rooms.may_send(&room, send, &self.identity, &gateway.policies, budget)
                });
                let policy = match allowed {
                    Ok(policy) => policy,
                    Err(err) => return Answer::Now(ServerFrame::error(err.with_ref(r#ref))),
                };
                if policy.is_live(ephemeral) {
                    // Live only: acked once handed to the bus.
                    let message = gateway.accept_ephemeral(&self.identity.name, room, payload, id);
                    return Answer::Now(ServerFrame::Ack {
                        r#ref,
                        id: message.id,
                        seq: 0,
                        epoch: String::new(),
                    });
                }
                let accepted = gateway.accept(&self.identity.name, room, payload, id).await;
                // Accepted in order; the next request need not wait for
                // durability.
                drop(turn);
                let (message, durable) = match accepted {
                    Ok(accepted) => accepted,
                    Err(Unavailable(message)) => {
                        return Answer::Now(ServerFrame::Error {
                            code: ErrorCode::Unavailable,
                            message,
                            r#ref,
                            id,
                        });
                    }
                };
                Answer::Durable(PendingAck {
                    id: message.id,
                    seq: message.seq,
                    epoch: message.epoch,
                    r#ref,
                    durable: Box::pin(durable),
                })
            }
        }
    }

    /// Joins `room` (the registry and the connection's list at once):
    /// the room's recent messages and whether the connection is new to
    /// it, or `None` when the connection has closed.
    fn join(
        &self,
        gateway: &Gateway,
        rooms: &mut Rooms,
        room: &RoomName,
        policy: &Arc<Policy>,
        sink: impl FnOnce() -> Sink,
        presence: bool,
    ) -> Result<Option<(Vec<switchboard_protocol::Message>, bool)>, FrameError> {
        if rooms.is_closed() {
            return Ok(None);
        }
        rooms.may_join(
            &self.identity,
            room,
            policy,
            gateway.config.max_rooms_per_connection,
        )?;
        let newly = rooms.join(room, policy);
        let recent = gateway
            .registry
            .join(room, self.id, sink(), &self.identity.name, presence);
        Ok(Some((recent, newly)))
    }

    /// Leaves `room` if the connection is in it.
    fn leave(&self, gateway: &Gateway, rooms: &mut Rooms, room: &RoomName) {
        if rooms.leave(room) {
            gateway.registry.leave(room, self.id);
        }
    }

    /// Leaves every room, once, and joins nothing afterwards; true the
    /// first time.
    pub fn close(&self, registry: &crate::registry::Registry, rooms: &mut Rooms) -> bool {
        let Some(all) = rooms.close() else {
            return false;
        };
        for room in &all {
            registry.leave(room, self.id);
        }
        true
    }
}

/// The answer to a join whose history could not be read (the join is
/// undone; the client retries).
fn history_unavailable() -> FrameError {
    FrameError::new(
        ErrorCode::Unavailable,
        "history is unavailable; retry the join",
    )
}
