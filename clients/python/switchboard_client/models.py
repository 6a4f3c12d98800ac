"""What the client hands to applications: messages, acks, presence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional


@dataclass(frozen=True)
class Message:
    """A room's message. ``sender`` is the wire's ``from`` (also ``from_``)."""

    id: str
    room: str
    sender: str
    text: str
    ts: int
    seq: Optional[int] = None
    epoch: Optional[str] = None
    #: A JSON value, when the sender gave one (``text`` may then be empty).
    data: Any = None
    #: A tombstone: the message ``id`` was deleted (moderation); forget it.
    deleted: bool = False

    @property
    def from_(self) -> str:
        return self.sender

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> "Message":
        seq = obj.get("seq")
        epoch = obj.get("epoch")
        return cls(
            id=str(obj["id"]),
            room=str(obj["room"]),
            sender=str(obj.get("from", "")),
            text=str(obj.get("text", "")),
            ts=int(obj.get("ts", 0)),
            seq=int(seq) if isinstance(seq, int) and seq > 0 else None,
            epoch=str(epoch) if isinstance(epoch, str) and epoch else None,
            data=obj.get("data"),
            deleted=obj.get("deleted") is True,
        )

    @classmethod
    def deletion(cls, room: str, id: str) -> "Message":
        """The tombstone a live ``deleted`` frame stands for."""
        return cls(id=id, room=room, sender="", text="", ts=0, deleted=True)


@dataclass(frozen=True)
class Ack:
    """A send made durable: its id and, when known, its place in the room."""

    id: str
    seq: Optional[int] = None
    epoch: Optional[str] = None


@dataclass(frozen=True)
class Position:
    """A room's place in its stream: ``seq`` counted within ``epoch``."""

    epoch: str
    seq: int


@dataclass(frozen=True)
class Joined:
    """A room was joined: the first time, or again after a reconnect
    (``rejoined``), once that join's history was delivered."""

    room: str
    count: Optional[int]
    rejoined: bool


@dataclass(frozen=True)
class Member:
    name: str
    connections: int
    since: int


@dataclass(frozen=True)
class Presence:
    """Who is in a room: ``count`` names in all, ``members`` listed (at most
    1,000; ``truncated`` when more are in the room)."""

    room: str
    count: int
    members: List[Member] = field(default_factory=list)
    truncated: bool = False

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> "Presence":
        members = [
            Member(
                name=str(m.get("name", "")),
                connections=int(m.get("connections", 0)),
                since=int(m.get("since", 0)),
            )
            for m in obj.get("members", [])
            if isinstance(m, dict)
        ]
        return cls(
            room=str(obj.get("room", "")),
            count=int(obj.get("count", 0)),
            members=members,
            truncated=bool(obj.get("truncated", False)),
        )


@dataclass(frozen=True)
class PresenceChange:
    """A ``presence_change``: ``event`` is ``join``, ``leave`` or ``count``
    (``name`` is None for ``count``)."""

    room: str
    event: str
    count: int
    name: Optional[str] = None

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> "PresenceChange":
        name = obj.get("name")
        return cls(
            room=str(obj.get("room", "")),
            event=str(obj.get("event", "")),
            count=int(obj.get("count", 0)),
            name=str(name) if isinstance(name, str) else None,
        )
