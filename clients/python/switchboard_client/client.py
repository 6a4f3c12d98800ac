"""The client: one connection at a time to one of the nodes, kept up by itself.

The public surface is :func:`connect` and :class:`Client`; the handling of
one connection's frames lives in :mod:`switchboard_client.session`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Union

from .auth import token_expired
from .backoff import Backoff
from .errors import SwitchboardError
from .events import Callback, Listeners, named_log
from .models import Ack, Message, Presence
from .outbox import Outbox
from .rest import get_json, room_path
from .room import Room
from .session import Request, Session
from .transport import Closed, Refused, Socket, endpoints, with_query

#: The close code of a connection the server API disconnected.
DISCONNECTED = 4002

log = logging.getLogger("switchboard_client")

#: The states of a client, in :attr:`Client.state`.
STATES = ("connecting", "open", "reconnecting", "closed")

TokenProvider = Callable[[], Awaitable[str]]


class Client:
    """A connection to a switchboard cluster that reconnects by itself.

    ``urls``: a node's base URL (``http://host:port``, ``ws://host:port``,
    or either with ``/ws``), or a list of them: every reconnect attempt
    dials the next one. ``name``: the display name (a token's ``name``
    replaces it). ``token``: a JWT, or ``get_token``: an async function
    giving one, called before the first connection, after a 401 and when
    the token's ``exp`` has passed.

    Reconnects wait ``min(backoff_max, backoff_min * 2**attempt)`` times a
    uniform factor in [0.5, 1]; the attempt count resets once a connection
    stayed open ``stable_after`` seconds. At most ``outbox_max`` sends wait
    for an answer at once, and each room queues at most ``queue_max``
    unread messages (then the client stops reading the socket).
    """

    def __init__(
        self,
        urls: Union[str, Sequence[str]],
        *,
        name: Optional[str] = None,
        token: Optional[str] = None,
        get_token: Optional[TokenProvider] = None,
        backoff_min: float = 0.25,
        backoff_max: float = 10.0,
        stable_after: float = 10.0,
        outbox_max: int = 1000,
        queue_max: int = 10_000,
        dedupe_window: int = 10_000,
        send_tries: int = 6,
        max_inflight: int = 256,
        ping_interval: float = 25.0,
        ping_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_frame_bytes: int = 65_536,
    ) -> None:
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if not url_list:
            raise ValueError("give at least one URL")
        self._endpoints = [endpoints(u) for u in url_list]
        self._url_index = 0
        self.name = name
        self.log = named_log(name or "anon")
        self._token = token
        self._get_token = get_token
        self._token_stale = False
        self._backoff = Backoff(backoff_min, backoff_max, stable_after)
        self._outbox = Outbox(outbox_max)
        self._queue_max = queue_max
        self._dedupe_window = dedupe_window
        self._send_tries = max(1, send_tries)
        self._max_inflight = max(1, max_inflight)
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout
        self._max_frame_bytes = max_frame_bytes
        self._rooms: Dict[str, Room] = {}
        self._refs = itertools.count(1)
        self._requests: Dict[int, Request] = {}
        self._session: Optional[Session] = None
        self._state = "connecting"
        self._error_listeners = Listeners[BaseException]()
        self._state_listeners = Listeners[str](self._emit_error)
        self._gap_listeners = Listeners[str](self._emit_error)
        self._task: Optional["asyncio.Task[None]"] = None
        self._closing = False
        self._ever_open = False
        #: Why the client stopped by itself (a refusal that retrying cannot fix).
        self.error: Optional[SwitchboardError] = None
        # Made once a loop runs (open()): set to end the wait between two
        # attempts (close() and reconnect()).
        self._stop: Optional[asyncio.Event] = None
        self._wake: Optional[asyncio.Event] = None
        self._first_open: Optional["asyncio.Future[None]"] = None
        # Sending pace: a window of unanswered sends (halved on rate_limited,
        # grown by one per ack) and a pause after rate_limited.
        self._window = float(self._max_inflight)
        self._pause_until = 0.0

    # --- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> "Client":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> "Client":
        """Starts connecting; returns once the first connection is open.

        Raises :class:`SwitchboardError` when the server refuses the client
        for good (``bad_name``, ``unauthorized`` with a static token, ...).
        Unreachable nodes are retried without end: bound the wait with
        ``asyncio.wait_for`` if needed.
        """
        if self._task is not None:
            raise RuntimeError("the client was already opened")
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._first_open = loop.create_future()
        self._task = loop.create_task(self._run())
        try:
            await asyncio.shield(self._first_open)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Closes for good: unanswered sends fail with ``closed``, room
        iterations end once their queued messages are read."""
        if self._closing and self._task is None:
            return
        self._closing = True
        if self._stop is not None:
            self._stop.set()
        session = self._session
        if session is not None:
            await session.socket.close()
        task, self._task = self._task, None
        if task is not None and task is not _current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._shutdown(None)

    def _shutdown(self, error: Optional[SwitchboardError]) -> None:
        self._closing = True
        closed = SwitchboardError(
            "closed", f"the client stopped: {error}" if error else "the client was closed"
        )
        self._outbox.reject_all(closed)
        for request in list(self._requests.values()):
            if request.future is not None and not request.future.done():
                request.future.set_exception(SwitchboardError(closed.code, closed.message))
        self._requests.clear()
        for room in list(self._rooms.values()):
            room._end(error)
        self._rooms.clear()
        if self._first_open is not None and not self._first_open.done():
            self._first_open.set_exception(error or closed)
        self._set_state("closed")

    # --- state --------------------------------------------------------------

    @property
    def state(self) -> str:
        """``connecting`` (before the first connection), ``open``,
        ``reconnecting`` or ``closed``."""
        return self._state

    def on_state(self, callback: Callback[str]) -> Callable[[], None]:
        """Calls ``callback(state)`` on every change of :attr:`state`.
        Returns a function that unregisters it."""
        return self._state_listeners.add(callback)

    def on_gap(self, callback: Callback[str]) -> Callable[[], None]:
        """Calls ``callback(room_name)`` when a room's messages may have been
        missed (any room; :meth:`Room.on_gap` for one)."""
        return self._gap_listeners.add(callback)

    def on_error(self, callback: Callback[BaseException]) -> Callable[[], None]:
        """Calls ``callback(error)`` for errors tied to no request: a room
        lost for good (a rejoin refused), an error frame answering nothing,
        the refusal that stopped the client, a callback that raised."""
        return self._error_listeners.add(callback)

    def _emit_error(self, error: BaseException) -> None:
        self._error_listeners.emit(error)

    def reconnect(self) -> None:
        """Tries to connect now instead of waiting out the backoff (e.g. when
        the network is known to be back); nothing while open or closed."""
        if self._state in ("connecting", "reconnecting") and self._stop is not None and not self._closing:
            self._backoff.reset()
            self._stop.set()

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._state_listeners.emit(state)

    @property
    def url(self) -> str:
        """The HTTP base URL of the node in use (or to be tried next)."""
        return self._endpoints[self._url_index][1]

    @property
    def rooms(self) -> Dict[str, Room]:
        return dict(self._rooms)

    # --- the connection loop ------------------------------------------------

    async def _fresh_token(self) -> Optional[str]:
        if self._get_token is None:
            return self._token
        if self._token is None or self._token_stale or token_expired(self._token, time.time()):
            self._token = await self._get_token()
            self._token_stale = False
        return self._token

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._stop is not None and self._first_open is not None
        while not self._closing:
            ws_url, http_url = self._endpoints[self._url_index]
            try:
                token = await self._fresh_token()
                socket = await Socket.open(with_query(ws_url, self.name, token), self._connect_timeout)
            except Refused as refused:
                if refused.status == 401 and self._get_token is not None:
                    self._token_stale = True
                    self.log.info("%s refused the token (%s); asking for another", ws_url, refused.message)
                elif refused.status in (408, 429) or refused.status >= 500:
                    self.log.info("%s is busy: %s", ws_url, refused)
                else:
                    self.error = SwitchboardError(refused.code, refused.message, status=refused.status)
                    self.log.error("%s refused the connection: %s", ws_url, refused)
                    self._emit_error(self.error)
                    self._task = None
                    self._shutdown(self.error)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.info("cannot connect to %s: %r", ws_url, exc)
            else:
                opened = loop.time()
                code = await self._serve(socket, http_url)
                self._backoff.closed(loop.time() - opened)
                if code == DISCONNECTED:
                    # The server API disconnected this user: not to be undone
                    # by reconnecting.
                    self.error = SwitchboardError("disconnected", "the server disconnected this user (4002)")
                    self.log.warning("%s", self.error)
                    self._emit_error(self.error)
                    self._task = None
                    self._shutdown(self.error)
                    return
            if self._closing:
                break
            self._set_state("reconnecting" if self._ever_open else "connecting")
            self._url_index = (self._url_index + 1) % len(self._endpoints)
            delay = self._backoff.next_delay()
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            if not self._closing:
                self._stop.clear()  # set by reconnect(): dial now

    async def _serve(self, socket: Socket, http_url: str) -> Optional[int]:
        """Runs one connection until it ends; the server's close code."""
        assert self._first_open is not None
        session = Session(self, socket, http_url)
        self._session = session
        self._ever_open = True
        self._set_state("open")
        if not self._first_open.done():
            self._first_open.set_result(None)
        try:
            await session.run(list(self._rooms.values()))
        finally:
            self._session = None
            session.alive = False
            socket.abort()
            self._outbox.requeue_all()
            for room in self._rooms.values():
                room._joined_on = None
            dropped = SwitchboardError("disconnected", "the connection dropped before the answer")
            for ref, request in list(self._requests.items()):
                if request.session is session:
                    del self._requests[ref]
                    if request.future is None or request.future.done():
                        continue  # a join: the next connection joins again
                    if request.kind == "leave":
                        request.future.set_result(None)
                    else:
                        request.future.set_exception(SwitchboardError(dropped.code, dropped.message))
        return session.close_code

    # --- rooms --------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closing or self._task is None:
            raise SwitchboardError("closed", "the client is not open")

    async def join(self, room: str, *, history: Optional[int] = None, presence: bool = False) -> Room:
        """Joins ``room``; returns once the server answered ``joined``.

        ``history`` messages from before the join (the room's policy default,
        50 without one, when None; 0 for none) are delivered first by the
        room's iteration; ``presence=True`` also subscribes to
        ``presence_change`` events (see :meth:`Room.on_presence`). Joining a
        room already joined raises ``already_joined``.
        """
        self._check_usable()
        if room in self._rooms:
            raise SwitchboardError("already_joined", f"{room} is joined already")
        joined = Room(self, room, history, presence, self._queue_max, self._dedupe_window)
        self._rooms[room] = joined
        session = self._session
        if session is not None:
            try:
                await session.send_join(joined)
            except Closed:
                pass  # the next connection joins it
        try:
            await joined._wait_joined()
        except BaseException:
            if self._rooms.get(room) is joined:
                del self._rooms[room]
                joined._end(None)
            raise
        return joined

    def _new_ref(self) -> int:
        return next(self._refs)

    async def _leave(self, room: Room) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        was_joined_on = room._join_sent_on
        room._end(None)
        self._outbox.reject_room(room.name, SwitchboardError("not_joined", f"{room.name} was left"))
        session = self._session
        if session is None or was_joined_on is not session:
            return
        future: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        ref = self._new_ref()
        self._requests[ref] = Request("leave", room, future, session)
        try:
            await session.write({"type": "leave", "room": room.name, "ref": ref})
        except Closed:
            return
        await future

    async def _presence(self, room: Room) -> Presence:
        self._check_usable()
        session = self._session
        if session is None:
            raise SwitchboardError("disconnected", "not connected")
        future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        ref = self._new_ref()
        self._requests[ref] = Request("presence", room, future, session)
        try:
            await session.write({"type": "presence", "room": room.name, "ref": ref})
        except Closed:
            pass  # the connection's end rejects the request
        result = await asyncio.shield(future)
        assert isinstance(result, Presence)
        return result

    async def _history(self, room: str, before: Optional[str], limit: int) -> List[Message]:
        token = await self._fresh_token() if self._get_token is not None else self._token
        base = self._session.http_url if self._session is not None else self.url
        body = await get_json(base, room_path(room, "messages"), {"limit": limit, "before": before}, token)
        if not isinstance(body, list):
            raise SwitchboardError("bad_answer", "the history API did not answer a list")
        return [Message.from_wire(m) for m in body if isinstance(m, dict)]

    async def presence(self, room: str) -> Presence:
        """Who is in ``room`` (joined or not) over the HTTP API."""
        token = await self._fresh_token() if self._get_token is not None else self._token
        base = self._session.http_url if self._session is not None else self.url
        body = await get_json(base, room_path(room, "presence"), {}, token)
        if not isinstance(body, dict):
            raise SwitchboardError("bad_answer", "the presence API did not answer an object")
        return Presence.from_wire(body)

    # --- sends --------------------------------------------------------------

    async def _send(
        self, room: Room, text: Optional[str], id: Optional[str], data: Any, ephemeral: bool
    ) -> Ack:
        self._check_usable()
        if room._ended or self._rooms.get(room.name) is not room:
            raise SwitchboardError("not_joined", f"room {room.name!r} was left")
        if id is None:
            id = str(uuid.uuid4())
        else:
            try:
                id = str(uuid.UUID(id))
            except ValueError:
                raise SwitchboardError("bad_frame", f"id {id!r} is not a UUID") from None
        fields: Dict[str, Any] = {}
        if data is not None:
            fields["data"] = data
        if ephemeral:
            fields["ephemeral"] = True
        if not text and data is None:
            raise SwitchboardError("bad_frame", "a send needs a text or data")
        frame = {"type": "send", "room": room.name, "text": text or "", "id": id, "ref": 2**53, **fields}
        try:
            encoded = json.dumps(frame)
        except (TypeError, ValueError) as e:
            raise SwitchboardError("bad_frame", f"data is not JSON: {e}") from None
        if len(encoded.encode("utf-8")) > self._max_frame_bytes:
            raise SwitchboardError("too_large", f"the frame is over {self._max_frame_bytes} bytes")
        future: "asyncio.Future[Ack]" = asyncio.get_running_loop().create_future()
        # Retrieved here too, so an abandoned send does not warn when it fails.
        future.add_done_callback(_retrieve)
        self._outbox.add(id, room.name, text or "", future, fields)
        self._wake_pump()
        # Shielded: cancelling the caller does not take back the send.
        return await asyncio.shield(future)

    def _wake_pump(self) -> None:
        if self._wake is not None:
            self._wake.set()


def _retrieve(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


def _current_task() -> Optional["asyncio.Task[Any]"]:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


#: ``connect(urls, **options)``: a :class:`Client` for the node at ``urls``
#: (or any of several nodes), the class itself so its options are written
#: and typed once. Use it as ``async with connect(url, name="bot") as sb:``:
#: entering waits for the first connection, leaving closes the client.
connect = Client
