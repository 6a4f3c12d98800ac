"""The sends not yet answered, in the order they were made.

Each entry is resent (same id) on every new connection until the server
acks it or refuses it for good; every entry settles exactly once. The
outbox is bounded: a send past ``max_size`` fails at once with
``outbox_full`` instead of growing memory while the server is away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from .errors import SwitchboardError
from .models import Ack


@dataclass
class PendingSend:
    id: str
    room: str
    text: str
    future: "asyncio.Future[Ack]"
    #: The send frame's other fields: ``data``, ``ephemeral``.
    fields: Dict[str, Any] = field(default_factory=dict)
    #: Answers with a retryable code (``rate_limited``, ``unavailable``) so far.
    tries: int = 0
    #: The ``ref`` of the frame on the wire, None while not sent on this
    #: connection (or waiting for a retry).
    ref: Optional[int] = None
    #: Not to be sent before this loop time (a retry's delay).
    not_before: float = 0.0
    #: Position taken from the sender's own ``message`` frame, for an ack
    #: that carries none.
    seq: Optional[int] = None
    epoch: Optional[str] = None

    @property
    def inflight(self) -> bool:
        return self.ref is not None


class Outbox:
    def __init__(self, max_size: int = 1000) -> None:
        if max_size < 1:
            raise ValueError("outbox max_size must be >= 1")
        self.max_size = max_size
        # dicts keep insertion order: the order of the sends.
        self._entries: Dict[str, PendingSend] = {}
        self._by_ref: Dict[int, PendingSend] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[PendingSend]:
        return iter(list(self._entries.values()))

    def add(
        self,
        id: str,
        room: str,
        text: str,
        future: "asyncio.Future[Ack]",
        fields: Optional[Dict[str, Any]] = None,
    ) -> PendingSend:
        if len(self._entries) >= self.max_size:
            raise SwitchboardError(
                "outbox_full", f"{len(self._entries)} sends are waiting for an answer"
            )
        if id in self._entries:
            raise SwitchboardError("duplicate_id", f"a send with id {id} is already waiting")
        entry = PendingSend(id=id, room=room, text=text, future=future, fields=fields or {})
        self._entries[id] = entry
        return entry

    def get(self, id: str) -> Optional[PendingSend]:
        return self._entries.get(id)

    def by_ref(self, ref: int) -> Optional[PendingSend]:
        return self._by_ref.get(ref)

    def mark_sent(self, entry: PendingSend, ref: int) -> None:
        self.unmark(entry)
        entry.ref = ref
        self._by_ref[ref] = entry

    def unmark(self, entry: PendingSend) -> None:
        """The entry is no longer on the wire (answered, or its connection ended)."""
        if entry.ref is not None:
            self._by_ref.pop(entry.ref, None)
            entry.ref = None

    def requeue_all(self) -> None:
        """The connection ended: everything unanswered is to be sent again."""
        for entry in self._entries.values():
            entry.ref = None
        self._by_ref.clear()

    def inflight_count(self) -> int:
        return len(self._by_ref)

    def waiting(self, now: float) -> List[PendingSend]:
        """Entries to send now, oldest first (not on the wire, delay over)."""
        return [e for e in self._entries.values() if e.ref is None and e.not_before <= now]

    def next_due(self, now: float) -> Optional[float]:
        """The earliest ``not_before`` after ``now`` of an entry waiting for a retry."""
        due = [e.not_before for e in self._entries.values() if e.ref is None and e.not_before > now]
        return min(due) if due else None

    def resolve(self, id: str, ack: Ack) -> bool:
        """Settles ``id`` with its ack; False when it was already settled."""
        entry = self._entries.pop(id, None)
        if entry is None:
            return False
        self.unmark(entry)
        if not entry.future.done():
            entry.future.set_result(ack)
        return True

    def reject(self, id: str, error: BaseException) -> bool:
        """Settles ``id`` with an error; False when it was already settled."""
        entry = self._entries.pop(id, None)
        if entry is None:
            return False
        self.unmark(entry)
        if not entry.future.done():
            entry.future.set_exception(error)
        return True

    def reject_room(self, room: str, error: SwitchboardError) -> int:
        """Settles the entries of ``room`` not on the wire (those that are get
        the server's answer)."""
        ids = [e.id for e in self._entries.values() if e.room == room and e.ref is None]
        for id in ids:
            self.reject(id, SwitchboardError(error.code, error.message))
        return len(ids)

    def reject_all(self, error: SwitchboardError) -> int:
        ids = list(self._entries)
        for id in ids:
            self.reject(id, SwitchboardError(error.code, error.message))
        return len(ids)
