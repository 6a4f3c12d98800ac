"""Merging recovered and live messages of one room into one stream.

A room's *position* is the ``(epoch, seq)`` of the last message handed to
the application (or of the last ``joined``). The server numbers a room's
messages 1, 2, 3, ... within an epoch, so:

- a message of the position's epoch at or below its seq was already
  delivered: it is dropped;
- a message whose id was delivered recently is dropped too (this covers
  messages without a position and the same message seen across epochs);
  ``window`` ids are remembered per room;
- a ``joined`` after a reconnect that says ``recovered: false``, or whose
  epoch differs from the position's, is a *gap*: messages may have been
  missed. Its history becomes the new start, minus the ids already delivered.

The class is pure bookkeeping (no I/O) so it can be tested on its own:
:meth:`accepts` decides, :meth:`commit` records a delivered message.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Union

from .models import Message


class RecentIds:
    """The last ``capacity`` ids added, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._ids: "OrderedDict[str, None]" = OrderedDict()

    def add(self, id: str) -> None:
        if id in self._ids:
            self._ids.move_to_end(id)
            return
        self._ids[id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def __contains__(self, id: object) -> bool:
        return id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class RoomMerge:
    """One room's position and recently delivered ids."""

    def __init__(self, window: int = 10_000) -> None:
        self.epoch: Optional[str] = None
        self.seq: Optional[int] = None
        self.recent = RecentIds(window)
        #: Whether a ``joined`` was ever taken in (a later one is a rejoin).
        self.started = False

    def since(self) -> Optional[Dict[str, Union[int, str]]]:
        """The ``since`` of a rejoin, or None when there is no position."""
        if self.epoch is None or self.seq is None:
            return None
        return {"seq": self.seq, "epoch": self.epoch}

    def begin_joined(self, epoch: Optional[str], recovered: Optional[bool]) -> bool:
        """A ``joined`` arrived; returns whether it is a gap.

        Call before handing its history to :meth:`accepts`/:meth:`commit`,
        then :meth:`end_joined`. On a gap the position is forgotten, so the
        history is filtered by id only.
        """
        rejoin = self.started
        self.started = True
        gap = rejoin and (recovered is not True or epoch is None or epoch != self.epoch)
        if gap or not rejoin:
            self.epoch = None
            self.seq = None
        return gap

    def end_joined(self, epoch: Optional[str], seq: Optional[int]) -> None:
        """The ``joined``'s history is taken in: its position is the room's."""
        if epoch is None or seq is None:
            return
        if epoch != self.epoch or self.seq is None or seq > self.seq:
            self.epoch = epoch
            self.seq = seq

    def accepts(self, msg: Message) -> bool:
        """Whether ``msg`` is new (not yet delivered)."""
        if msg.id in self.recent:
            return False
        if (
            msg.seq is not None
            and msg.epoch is not None
            and msg.epoch == self.epoch
            and self.seq is not None
            and msg.seq <= self.seq
        ):
            return False
        return True

    def live_gap(self, msg: Message) -> bool:
        """Whether a live ``msg`` moves the room to another epoch: a gap (the
        ordering point lost the room's count while connected). The position
        is then forgotten, so ``msg`` is filtered by id only."""
        if msg.epoch is not None and self.epoch is not None and msg.epoch != self.epoch:
            self.epoch = None
            self.seq = None
            return True
        return False

    def commit(self, msg: Message) -> None:
        """``msg`` was handed to the application."""
        self.recent.add(msg.id)
        if msg.seq is None or msg.epoch is None:
            return
        if msg.epoch != self.epoch or self.seq is None or msg.seq > self.seq:
            self.epoch = msg.epoch
            self.seq = msg.seq
