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
use switchboard_protocol::{
    ClientFrame, ErrorCode, FrameError, Request, RoomName, ServerFrame, json_string_len,
};
use uuid::Uuid;

use crate::auth::Identity;
use crate::limits::{FrameBudget, Verdict};
use crate::policy::{Policies, Policy, PresenceRule};
use crate::registry::Sink;
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
                text,
                id,
                ephemeral,
            } => {
                let budget = self.budget.as_deref();
                let send = Outgoing {
                    text: &text,
                    ephemeral,
                };
                let allowed = rooms.with_rooms(|rooms| {
                    rooms.may_send(&room, send, &self.identity, &gateway.policies, budget)
                });
                let policy = match allowed {
                    Ok(policy) => policy,
                    Err(err) => return Answer::Now(ServerFrame::error(err.with_ref(r#ref))),
                };
                if ephemeral || !policy.store {
                    // Live only: acked once handed to the bus.
                    let message = gateway.accept_ephemeral(&self.identity.name, room, text, id);
                    return Answer::Now(ServerFrame::Ack {
                        r#ref,
                        id: message.id,
                        seq: 0,
                        epoch: String::new(),
                    });
                }
                let accepted = gateway.accept(&self.identity.name, room, text, id).await;
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
        if rooms.closed {
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

/// What a `send` asks, as the checks see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub text: &'a str,
    /// Asked to be live only.
    pub ephemeral: bool,
}

/// The rooms a connection is in. A list, not a set: connections are in
/// few rooms (at most `MAX_ROOMS_PER_CONNECTION`), and an idle one should
/// cost as little as possible.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    /// Each with its policy, resolved when joined.
    joined: Vec<(RoomName, Arc<Policy>)>,
    /// In `lobby` the original Socket.IO way (`event:listen` strings), not
    /// by a `join`; such a socket is in `lobby` without counting a room.
    legacy_lobby: bool,
    /// The connection has ended (or was cut): it joins nothing more.
    closed: bool,
}

impl Rooms {
    /// No rooms; `legacy_lobby` for a Socket.IO socket in `lobby` from the
    /// start.
    pub fn new(legacy_lobby: bool) -> Self {
        Self {
            joined: Vec::new(),
            legacy_lobby,
            closed: false,
        }
    }

    /// Whether `identity` may join `room` now: `forbidden` when its token
    /// does not allow the room, `too_many_rooms` past `max` (joining a
    /// room again is always allowed).
    pub fn may_join(
        &self,
        identity: &Identity,
        room: &RoomName,
        policy: &Policy,
        max: usize,
    ) -> Result<(), FrameError> {
        identity.check_join(room, policy.join)?;
        if !self.is_member(room) && self.joined.len() >= max {
            return Err(FrameError::new(
                ErrorCode::TooManyRooms,
                format!("at most {max} rooms per connection"),
            ));
        }
        Ok(())
    }

    /// Records a join; true when the connection was not in the room before
    /// (a legacy `lobby` member joining `lobby` was: it only switches to
    /// `message` frames).
    pub fn join(&mut self, room: &RoomName, policy: &Arc<Policy>) -> bool {
        if let Some((_, kept)) = self.joined.iter_mut().find(|(r, _)| r == room) {
            *kept = policy.clone();
            return false;
        }
        self.joined.push((room.clone(), policy.clone()));
        let was_legacy = self.is_lobby(room) && std::mem::take(&mut self.legacy_lobby);
        !was_legacy
    }

    /// Records a leave; true when the connection was in the room (then the
    /// registry must be told).
    pub fn leave(&mut self, room: &RoomName) -> bool {
        if let Some(at) = self.joined.iter().position(|(r, _)| r == room) {
            self.joined.swap_remove(at);
            return true;
        }
        self.is_lobby(room) && std::mem::take(&mut self.legacy_lobby)
    }

    /// Whether `text` may be sent to `room`: `not_joined` unless the
    /// connection is in the room, `forbidden` unless the room's policy and
    /// the token let it publish, `too_large` past the room's size, then
    /// `rate_limited` when `budget` is spent (a refused send spends none).
    pub fn may_send(
        &self,
        room: &RoomName,
        send: Outgoing<'_>,
        identity: &Identity,
        policies: &Policies,
        budget: Option<&FrameBudget>,
    ) -> Result<Arc<Policy>, FrameError> {
        let Some(policy) = self.policy(room, policies) else {
            return Err(FrameError::new(
                ErrorCode::NotJoined,
                format!("join `{room}` before sending to it"),
            ));
        };
        identity.check_publish(room, policy.publish)?;
        if send.ephemeral && policy.store && !policy.ephemeral {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("ephemeral sends are not allowed in `{room}`"),
            ));
        }
        if json_string_len(send.text) > policy.max_message_bytes {
            return Err(FrameError::new(
                ErrorCode::TooLarge,
                format!(
                    "messages in `{room}` are at most {} bytes",
                    policy.max_message_bytes
                ),
            ));
        }
        FrameBudget::check_send(budget)?;
        Ok(policy)
    }

    /// The policy of `room` if the connection is in it (joined, or in
    /// `lobby` the legacy way).
    pub fn policy(&self, room: &RoomName, policies: &Policies) -> Option<Arc<Policy>> {
        if let Some((_, policy)) = self.joined.iter().find(|(r, _)| r == room) {
            return Some(policy.clone());
        }
        (self.legacy_lobby && self.is_lobby(room)).then(|| policies.of(room.as_str()))
    }

    /// Whether it joined `room`.
    fn is_member(&self, room: &RoomName) -> bool {
        self.joined.iter().any(|(r, _)| r == room)
    }

    /// Whether it is in `lobby` the legacy way.
    pub fn in_legacy_lobby(&self) -> bool {
        self.legacy_lobby
    }

    /// Whether it has closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Every room it is in, emptied, and closed for good; `None` when it
    /// was closed already.
    pub fn close(&mut self) -> Option<Vec<RoomName>> {
        if std::mem::replace(&mut self.closed, true) {
            return None;
        }
        let mut all: Vec<RoomName> = std::mem::take(&mut self.joined)
            .into_iter()
            .map(|(room, _)| room)
            .collect();
        if std::mem::take(&mut self.legacy_lobby) {
            all.push(lobby());
        }
        Some(all)
    }

    fn is_lobby(&self, room: &RoomName) -> bool {
        room.as_str() == crate::LOBBY
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

/// The room every Socket.IO connection is in from the start.
pub(crate) fn lobby() -> RoomName {
    RoomName::parse(crate::LOBBY).unwrap_or_else(|_| unreachable!("`lobby` is a valid room name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Bounds, JoinRule, PublishRule};

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn text(text: &str) -> Outgoing<'_> {
        Outgoing {
            text,
            ephemeral: false,
        }
    }

    fn policies() -> Policies {
        let bounds = Bounds {
            history_default: 50,
            history_max: 500,
            recovery_max: 1000,
            max_message_bytes: 100,
            max_frame_bytes: 65536,
        };
        let file = "[namespaces.news]\npublish = \"server\"\n[namespaces.vip]\njoin = \"granted\"\nmax_message_bytes = 10\n";
        Policies::parse("t.toml", file, bounds).unwrap()
    }

    #[test]
    fn joins_are_bounded_and_forbidden_rooms_refused() {
        let anyone = Identity::anonymous("a".into());
        let p = policies();
        let open = p.of("a");
        let mut rooms = Rooms::new(false);
        assert!(rooms.may_join(&anyone, &room("a"), &open, 2).is_ok());
        assert!(rooms.join(&room("a"), &open));
        assert!(!rooms.join(&room("a"), &open), "a second join is not new");
        assert!(rooms.join(&room("b"), &open));
        let full = rooms.may_join(&anyone, &room("c"), &open, 2).unwrap_err();
        assert_eq!(full.code, ErrorCode::TooManyRooms);
        assert!(
            rooms.may_join(&anyone, &room("a"), &open, 2).is_ok(),
            "rejoining is fine"
        );
        let vip = p.of("vip:x");
        assert_eq!(vip.join, JoinRule::Granted);
        let refused = rooms
            .may_join(&anyone, &room("vip:x"), &vip, 10)
            .unwrap_err();
        assert_eq!(
            refused.code,
            ErrorCode::Forbidden,
            "a granted namespace needs a token"
        );
        let limited = Identity {
            rooms: Some(Arc::from(vec!["team-*".to_owned()])),
            ..Identity::anonymous("t".into())
        };
        let refused = rooms.may_join(&limited, &room("a"), &open, 10).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert!(rooms.leave(&room("a")));
        assert!(!rooms.leave(&room("a")));
        assert_eq!(rooms.close(), Some(vec![room("b")]));
        assert_eq!(rooms.close(), None, "closed once");
        assert!(rooms.is_closed());
    }

    #[test]
    fn sends_need_the_room_the_right_to_publish_and_a_size_within_the_policy() {
        let p = policies();
        let me = Identity::anonymous("a".into());
        let mut rooms = Rooms::new(false);
        let err = rooms
            .may_send(&room("x"), text("hi"), &me, &p, None)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotJoined);
        rooms.join(&room("x"), &p.of("x"));
        assert!(
            rooms
                .may_send(&room("x"), text("hi"), &me, &p, None)
                .is_ok()
        );
        let live = Outgoing {
            text: "typing",
            ephemeral: true,
        };
        let err = rooms.may_send(&room("x"), live, &me, &p, None).unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::Forbidden,
            "the policy does not allow ephemeral sends"
        );
        let long = "x".repeat(101);
        let err = rooms
            .may_send(&room("x"), text(&long), &me, &p, None)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        rooms.join(&room("vip:x"), &p.of("vip:x"));
        let err = rooms
            .may_send(&room("vip:x"), text("eleven byte"), &me, &p, None)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge, "the namespace's own size");
        let news = p.of("news:today");
        assert_eq!(news.publish, PublishRule::Server);
        rooms.join(&room("news:today"), &news);
        let err = rooms
            .may_send(&room("news:today"), text("hi"), &me, &p, None)
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::Forbidden,
            "members read, the server writes"
        );
    }

    #[test]
    fn the_legacy_lobby_is_a_membership_without_a_room() {
        let p = policies();
        let mut rooms = Rooms::new(true);
        assert!(rooms.policy(&lobby(), &p).is_some());
        let me = Identity::anonymous("a".into());
        assert!(rooms.may_send(&lobby(), text("hi"), &me, &p, None).is_ok());
        assert!(
            !rooms.join(&lobby(), &p.of("lobby")),
            "joining lobby only switches frames"
        );
        assert!(!rooms.in_legacy_lobby() && rooms.policy(&lobby(), &p).is_some());
        let mut legacy = Rooms::new(true);
        assert!(legacy.leave(&lobby()));
        assert!(legacy.policy(&lobby(), &p).is_none());
        assert_eq!(Rooms::new(true).close(), Some(vec![lobby()]));
    }
}
