//! A connection's rooms and the rules of joining, leaving and sending,
//! written once for every protocol: `/ws` owns its [`Rooms`], a Socket.IO
//! socket keeps its own behind a lock (its events run in tasks of their
//! own); both ask the same questions and get the same typed answers.

use switchboard_protocol::{ErrorCode, FrameError, RoomName};

use crate::auth::Identity;
use crate::limits::FrameBudget;

/// The rooms a connection is in. A list, not a set: connections are in
/// few rooms (at most `MAX_ROOMS_PER_CONNECTION`), and an idle one should
/// cost as little as possible.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    joined: Vec<RoomName>,
    /// In `lobby` the original Socket.IO way (`event:listen` strings), not
    /// by a `join`; such a socket is in `lobby` without counting a room.
    legacy_lobby: bool,
}

impl Rooms {
    /// No rooms; `legacy_lobby` for a Socket.IO socket in `lobby` from the
    /// start.
    pub fn new(legacy_lobby: bool) -> Self {
        Self {
            joined: Vec::new(),
            legacy_lobby,
        }
    }

    /// Whether `identity` may join `room` now: `forbidden` when its token
    /// does not allow the room, `too_many_rooms` past `max` (joining a
    /// room again is always allowed).
    pub fn may_join(
        &self,
        identity: &Identity,
        room: &RoomName,
        max: usize,
    ) -> Result<(), FrameError> {
        identity.check_join(room)?;
        if !self.joined.contains(room) && self.joined.len() >= max {
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
    pub fn join(&mut self, room: &RoomName) -> bool {
        if self.joined.contains(room) {
            return false;
        }
        self.joined.push(room.clone());
        let was_legacy = self.is_lobby(room) && std::mem::take(&mut self.legacy_lobby);
        !was_legacy
    }

    /// Records a leave; true when the connection was in the room (then the
    /// registry must be told).
    pub fn leave(&mut self, room: &RoomName) -> bool {
        if let Some(at) = self.joined.iter().position(|r| r == room) {
            self.joined.swap_remove(at);
            return true;
        }
        self.is_lobby(room) && std::mem::take(&mut self.legacy_lobby)
    }

    /// Whether a `send` to `room` may be accepted: `not_joined` unless the
    /// connection is in the room, then `rate_limited` when `budget` is spent.
    pub fn may_send(
        &self,
        room: &RoomName,
        budget: Option<&FrameBudget>,
    ) -> Result<(), FrameError> {
        if !self.contains(room) {
            return Err(FrameError::new(
                ErrorCode::NotJoined,
                format!("join `{room}` before sending to it"),
            ));
        }
        FrameBudget::check_send(budget)
    }

    /// Whether the connection is in `room`, joined or the legacy way.
    pub fn contains(&self, room: &RoomName) -> bool {
        self.joined.contains(room) || (self.legacy_lobby && self.is_lobby(room))
    }

    /// Whether it is in `lobby` the legacy way.
    pub fn in_legacy_lobby(&self) -> bool {
        self.legacy_lobby
    }

    /// Every room it is in, emptied (the connection is ending).
    pub fn take_all(&mut self) -> Vec<RoomName> {
        let mut all = std::mem::take(&mut self.joined);
        if std::mem::take(&mut self.legacy_lobby) {
            all.push(lobby());
        }
        all
    }

    fn is_lobby(&self, room: &RoomName) -> bool {
        room.as_str() == crate::LOBBY
    }
}

/// The answer to a join whose history could not be read (the join is
/// undone; the client retries).
pub(crate) fn history_unavailable() -> FrameError {
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
    use std::sync::Arc;

    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn joins_are_bounded_and_forbidden_rooms_refused() {
        let anyone = Identity::anonymous("a".into());
        let mut rooms = Rooms::new(false);
        assert!(rooms.may_join(&anyone, &room("a"), 2).is_ok());
        assert!(rooms.join(&room("a")));
        assert!(!rooms.join(&room("a")), "a second join is not new");
        assert!(rooms.join(&room("b")));
        let full = rooms.may_join(&anyone, &room("c"), 2).unwrap_err();
        assert_eq!(full.code, ErrorCode::TooManyRooms);
        assert!(
            rooms.may_join(&anyone, &room("a"), 2).is_ok(),
            "rejoining is fine"
        );
        let limited = Identity {
            rooms: Some(Arc::from(vec!["team-*".to_owned()])),
            ..Identity::anonymous("t".into())
        };
        let refused = rooms.may_join(&limited, &room("a"), 10).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert!(rooms.leave(&room("a")));
        assert!(!rooms.leave(&room("a")));
        assert_eq!(rooms.take_all(), vec![room("b")]);
    }

    #[test]
    fn sends_need_the_room() {
        let mut rooms = Rooms::new(false);
        let err = rooms.may_send(&room("x"), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotJoined);
        rooms.join(&room("x"));
        assert!(rooms.may_send(&room("x"), None).is_ok());
    }

    #[test]
    fn the_legacy_lobby_is_a_membership_without_a_room() {
        let mut rooms = Rooms::new(true);
        assert!(rooms.contains(&lobby()));
        assert!(rooms.may_send(&lobby(), None).is_ok());
        assert!(!rooms.join(&lobby()), "joining lobby only switches frames");
        assert!(!rooms.in_legacy_lobby() && rooms.contains(&lobby()));
        let mut legacy = Rooms::new(true);
        assert!(legacy.leave(&lobby()));
        assert!(!legacy.contains(&lobby()));
        assert_eq!(Rooms::new(true).take_all(), vec![lobby()]);
    }
}
