//! The rooms a connection is in, each with the policy it joined under,
//! and the checks a join or a send must pass against them.

use std::sync::Arc;

use switchboard_protocol::{ErrorCode, FrameError, Payload, RoomName};

use crate::auth::Identity;
use crate::limits::FrameBudget;
use crate::policy::{Policies, Policy};

/// What a `send` asks, as the checks see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub payload: &'a Payload,
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
        policy.admits(room, send.payload, send.ephemeral)?;
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

    fn text(payload: &Payload) -> Outgoing<'_> {
        Outgoing {
            payload,
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
        let file = "[namespaces.news]\npublish = \"server\"\n[namespaces.vip]\njoin = \"granted\"\nmax_message_bytes = 10\n[namespaces.game]\ndata = true\n";
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
        let hi = Payload::text("hi");
        let err = rooms
            .may_send(&room("x"), text(&hi), &me, &p, None)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotJoined);
        rooms.join(&room("x"), &p.of("x"));
        assert!(rooms.may_send(&room("x"), text(&hi), &me, &p, None).is_ok());
        let typing = Payload::text("typing");
        let live = Outgoing {
            payload: &typing,
            ephemeral: true,
        };
        let err = rooms.may_send(&room("x"), live, &me, &p, None).unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::Forbidden,
            "the policy does not allow ephemeral sends"
        );
        let long = Payload::text("x".repeat(101));
        let err = rooms
            .may_send(&room("x"), text(&long), &me, &p, None)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        let data = Payload {
            text: String::new(),
            data: Some(switchboard_protocol::Data::from_value(
                &serde_json::json!({"a": 1}),
            )),
        };
        let err = rooms
            .may_send(&room("x"), text(&data), &me, &p, None)
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::Forbidden,
            "data only where the policy allows"
        );
        rooms.join(&room("game:1"), &p.of("game:1"));
        assert!(
            rooms
                .may_send(&room("game:1"), text(&data), &me, &p, None)
                .is_ok()
        );
        let big = Payload {
            text: "x".repeat(60),
            data: Some(switchboard_protocol::Data::from_value(&serde_json::json!(
                "y".repeat(40)
            ))),
        };
        let err = rooms
            .may_send(&room("game:1"), text(&big), &me, &p, None)
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::TooLarge,
            "text and data count together: 60 + 42"
        );
        rooms.join(&room("vip:x"), &p.of("vip:x"));
        let err = rooms
            .may_send(
                &room("vip:x"),
                text(&Payload::text("eleven byte")),
                &me,
                &p,
                None,
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge, "the namespace's own size");
        let news = p.of("news:today");
        assert_eq!(news.publish, PublishRule::Server);
        rooms.join(&room("news:today"), &news);
        let err = rooms
            .may_send(&room("news:today"), text(&hi), &me, &p, None)
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
        let hi = Payload::text("hi");
        assert!(rooms.may_send(&lobby(), text(&hi), &me, &p, None).is_ok());
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
