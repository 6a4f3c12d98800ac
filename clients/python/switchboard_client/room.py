"""A joined room: its messages as an async iterator, and what to do in it."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional

from .errors import SwitchboardError
from .events import Callback, Listeners
from .merge import RoomMerge
from .models import Ack, Joined, Message, Position, Presence, PresenceChange

if TYPE_CHECKING:
    from .client import Client


class Inbox:
    """A bounded queue of messages with an end.

    ``put`` waits while the queue is full (that is the backpressure: the
    client stops reading the socket); ``get`` gives what is queued, then,
    once closed, raises the closing error or ``StopAsyncIteration``.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: Deque[Message] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._closed = False
        self._error: Optional[BaseException] = None

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: Message) -> bool:
        """Queues ``item``; False (and drops it) when the inbox is closed."""
        while self.full() and not self._closed:
            self._not_full.clear()
            await self._not_full.wait()
        if self._closed:
            return False
        self._items.append(item)
        self._not_empty.set()
        return True

    async def get(self) -> Message:
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._not_empty.clear()
            await self._not_empty.wait()
        item = self._items.popleft()
        self._not_full.set()
        return item

    def close(self, error: Optional[BaseException] = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._not_empty.set()
        self._not_full.set()


class Room:
    """A room this client is in. Made by :meth:`Client.join`.

    ``async for message in room`` yields each of the room's messages once,
    in ``seq`` order: the join's history first, then live ones, across
    reconnects. The iteration ends after :meth:`leave` or
    :meth:`Client.close` (once what was queued is read), and raises
    :class:`SwitchboardError` when the room was lost for good (a rejoin
    refused, e.g. ``forbidden``).
    """

    def __init__(
        self,
        client: "Client",
        name: str,
        history: Optional[int],
        presence: bool,
        queue_max: int,
        dedupe_window: int,
    ) -> None:
        self.name = name
        self.history_size = history
        self.watch_presence = presence
        #: Names in the room when it was last joined, if the server said.
        self.count: Optional[int] = None
        self._client = client
        self._inbox = Inbox(queue_max)
        self._merge = RoomMerge(dedupe_window)
        self._presence = Listeners[PresenceChange](client._emit_error)
        self._gaps = Listeners[str](client._emit_error)
        self._joins = Listeners[Joined](client._emit_error)
        self._joined: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        # The connection the last join was sent on, and the one whose
        # ``joined`` arrived (sends wait for it).
        self._join_sent_on: Optional[object] = None
        self._joined_on: Optional[object] = None
        self._ended = False
        self._joined_once = False
        self._join_tries = 0

    def __repr__(self) -> str:
        return f"<Room {self.name!r} queued={len(self._inbox)}>"

    # --- for applications -------------------------------------------------

    def __aiter__(self) -> "Room":
        return self

    async def __anext__(self) -> Message:
        return await self._inbox.get()

    async def send(
        self,
        text: Optional[str] = None,
        *,
        id: Optional[str] = None,
        data: Any = None,
        ephemeral: bool = False,
    ) -> Ack:
        """Sends ``text``, ``data`` (any JSON value, where the room's policy
        takes data) or both; returns its :class:`Ack` once the server made it
        durable (``ephemeral``: once handed to the cluster, without a
        position). ``id`` (a fresh UUID, v4 by default) makes retries safe: the
        client resends with the same id after a reconnect and on
        ``rate_limited``/``unavailable``. Raises :class:`SwitchboardError`
        with the server's code when refused, ``outbox_full`` at once when too
        many sends are unanswered, ``closed`` when the client closes first."""
        return await self._client._send(self, text, id, data, ephemeral)

    async def presence(self) -> Presence:
        """Who is in the room, across every node (the ``presence`` frame)."""
        return await self._client._presence(self)

    async def history(self, before: Optional[str] = None, limit: int = 50) -> List[Message]:
        """The room's stored messages before message id ``before`` (the
        latest when None), oldest first, over the HTTP API."""
        return await self._client._history(self.name, before, limit)

    async def leave(self) -> None:
        """Leaves the room; the iteration ends once the queued messages are read."""
        await self._client._leave(self)

    def on_presence(self, callback: Callback[PresenceChange]) -> Callable[[], None]:
        """Calls ``callback`` with each ``presence_change`` (join with
        ``presence=True``). Returns a function that unregisters it."""
        return self._presence.add(callback)

    def on_gap(self, callback: Callback[str]) -> Callable[[], None]:
        """Calls ``callback(room_name)`` when messages may have been missed
        (see the README). Returns a function that unregisters it."""
        return self._gaps.add(callback)

    def on_joined(self, callback: Callback[Joined]) -> Callable[[], None]:
        """Calls ``callback(Joined(room, count, rejoined))`` after every
        ``joined`` (the first, and each after a reconnect), once its history
        was queued. Returns a function that unregisters it."""
        return self._joins.add(callback)

    @property
    def state(self) -> str:
        """``joining`` (also while reconnecting), ``joined`` or ``left``."""
        if self._ended:
            return "left"
        return "joined" if self._joined_on is not None else "joining"

    @property
    def joined(self) -> bool:
        """Whether the room is joined on the current connection."""
        return self.state == "joined"

    @property
    def position(self) -> Optional[Position]:
        """The position of the last message delivered (or of the last
        ``joined``): where a rejoin picks up. None without one."""
        since = self._merge.since()
        if since is None:
            return None
        return Position(epoch=str(since["epoch"]), seq=int(since["seq"]))

    @property
    def queued(self) -> int:
        """Messages received and not yet read."""
        return len(self._inbox)

    # --- for the client ---------------------------------------------------

    async def _wait_joined(self) -> None:
        await asyncio.shield(self._joined)

    def _first_joined(self) -> None:
        if not self._joined.done():
            self._joined.set_result(None)

    def _end(self, error: Optional[SwitchboardError] = None) -> None:
        self._ended = True
        self._joined_on = None
        if not self._joined.done():
            self._joined.set_exception(error or SwitchboardError("closed", "the room was left"))
            self._joined.exception()  # retrieved here: join() may not be waiting
        self._inbox.close(error)

    def _emit_presence(self, change: PresenceChange) -> None:
        self.count = change.count
        self._presence.emit(change)

    def _emit_joined(self, rejoined: bool) -> None:
        self._joins.emit(Joined(room=self.name, count=self.count, rejoined=rejoined))

    def _emit_gap(self) -> None:
        self._gaps.emit(self.name)
