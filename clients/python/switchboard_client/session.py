"""One connection: rejoining, reading frames, pacing sends, keeping alive."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from .backoff import backoff_delay
from .errors import RETRYABLE_SEND_CODES, SwitchboardError
from .models import Ack, Message, Presence, PresenceChange
from .outbox import PendingSend
from .rest import get_json, room_path
from .room import Room
from .transport import Closed, Socket

if TYPE_CHECKING:
    from .client import Client


#: Work done in one go before letting the other tasks of the loop run.
FAIR_BATCH = 64
#: Most messages read from the history API to complete a recovery cut to fit
#: one frame (the largest RECOVERY_MAX a server takes), the page size asked
#: for (the server's default HISTORY_MAX), and tries when one is missing.
FILL_MAX = 100_000
FILL_PAGE = 500
FILL_RETRIES = 5
#: Joins answered ``unavailable`` tried again before the room is given up.
REJOIN_TRIES = 8


@dataclass(eq=False)
class Request:
    """A ``join``, ``leave`` or ``presence`` waiting for its answer."""

    kind: str
    room: Room
    future: "Optional[asyncio.Future[Any]]"
    session: "Optional[Session]"


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


class Session:
    def __init__(self, client: "Client", socket: Socket, http_url: str) -> None:
        self.client = client
        self.log = client.log
        self.socket = socket
        self.http_url = http_url
        self.alive = True
        #: The server's close code, when it closed the connection.
        self.close_code: Optional[int] = None
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.last_heard = loop.time()
        # The reader waiting for room to make space in a full queue, and when
        # it last stopped waiting: the keepalive does not blame the network.
        self.blocked = False
        self.unblocked_at = 0.0
        # Token renewals under way (kept so they are not collected early).
        self._renewals: Set["asyncio.Task[None]"] = set()

    async def write(self, frame: Dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame, separators=(",", ":")))

    # --- the connection's life ------------------------------------------------

    async def run(self, rooms: List[Room]) -> None:
        """Rejoins ``rooms``, asks again what was unanswered, then reads until
        the connection ends (the sends follow each room's ``joined``)."""
        pump = keepalive = None
        self.log.info("connected to %s", self.http_url)
        try:
            keepalive = asyncio.ensure_future(self._guard(self._keepalive()))
            for room in rooms:
                await self.send_join(room)
            pump = asyncio.ensure_future(self._guard(self._pump()))
            frames = 0
            while True:
                raw = await self.socket.recv()
                self.last_heard = self.loop.time()
                await self.dispatch(raw)
                frames += 1
                if frames % FAIR_BATCH == 0:
                    await asyncio.sleep(0)  # buffered frames: let the others run too
        except Closed as closed:
            self.close_code = closed.code
            self.log.info("connection to %s ended: %s", self.http_url, closed)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("dropping the connection to %s after an error", self.http_url)
        finally:
            self.alive = False
            for task in (pump, keepalive):
                if task is not None:
                    task.cancel()

    async def _guard(self, work: Any) -> None:
        """Runs a side task of the connection; its failure ends the connection."""
        try:
            await work
        except Closed:
            pass  # the reader sees the end too
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("a connection task failed; dropping the connection")
            self.socket.abort()

    async def send_join(self, room: Room) -> None:
        if room._join_sent_on is self or room._ended:
            return
        room._join_sent_on = self
        ref = self.client._new_ref()
        self.client._requests[ref] = Request("join", room, None, self)
        frame: Dict[str, Any] = {"type": "join", "room": room.name, "ref": ref}
        if room.history_size is not None:
            frame["history"] = room.history_size
        if room.watch_presence:
            frame["presence"] = True
        since = room._merge.since() if room._merge.started else None
        if since is not None:
            frame["since"] = since
        await self.write(frame)

    # --- frames from the server -------------------------------------------------

    async def dispatch(self, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            self.log.warning("ignoring a frame that is not JSON: %.200s", raw)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "message":
            await self._on_message(frame)
        elif kind == "ack":
            self._on_ack(frame)
        elif kind == "joined":
            await self._on_joined(frame)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "presence":
            request = self._take_request(frame)
            if request is not None and request.future is not None and not request.future.done():
                request.future.set_result(Presence.from_wire(frame))
        elif kind == "deleted":
            room = self.client._rooms.get(str(frame.get("room")))
            if room is not None and isinstance(frame.get("id"), str):
                # A deletion has no position: told in the stream, as a tombstone.
                await room._inbox.put(Message.deletion(room.name, frame["id"]))
        elif kind == "presence_change":
            room = self.client._rooms.get(str(frame.get("room")))
            if room is not None:
                room._emit_presence(PresenceChange.from_wire(frame))
        elif kind == "token_expiring":
            self._renew_token()
        elif kind == "refreshed":
            self.log.debug("token refreshed until %s", frame.get("exp"))
        elif kind == "left":
            request = self._take_request(frame)
            if request is not None and request.future is not None and not request.future.done():
                request.future.set_result(None)
        elif kind != "pong":
            self.log.debug("ignoring a frame of type %r", kind)

    def _renew_token(self) -> None:
        """The server warned that the token expires soon: with ``get_token``,
        a new one is asked for and sent as ``refresh`` so the connection goes
        on; without, the server closes it at expiry (4001) and the client
        reconnects."""
        get_token = self.client._get_token
        if get_token is None:
            return

        async def renew() -> None:
            try:
                token = await get_token()
                self.client._token = token
                if self.alive:
                    await self.write({"type": "refresh", "token": token})
            except Exception as exc:  # the provider's or the socket's failure
                self.client._emit_error(exc)

        task = self.loop.create_task(renew())
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

    def _take_request(self, frame: Dict[str, Any]) -> Optional[Request]:
        ref = _int(frame.get("ref"))
        return self.client._requests.pop(ref, None) if ref is not None else None

    def _note_position(self, msg: Message) -> None:
        entry = self.client._outbox.get(msg.id)
        if entry is not None and msg.seq is not None:
            entry.seq, entry.epoch = msg.seq, msg.epoch

    async def _on_message(self, frame: Dict[str, Any]) -> None:
        msg = Message.from_wire(frame)
        self._note_position(msg)
        room = self.client._rooms.get(msg.room)
        if room is None or room._ended:
            return
        merge = room._merge
        if merge.live_gap(msg):
            self._gap(room)
        elif (
            msg.seq is not None and msg.epoch is not None and msg.epoch == merge.epoch
            and merge.seq is not None and merge.seq + 1 < msg.seq <= merge.seq + 1 + FILL_MAX
            and merge.accepts(msg)
        ):
            # The node skipped messages (it gave up waiting for them): they
            # are read from the history API before this one, else it is a gap.
            self.log.warning("room %s: seq %d..%d skipped by the node", room.name, merge.seq + 1, msg.seq - 1)
            self.blocked = True
            try:
                filled = await self._fill(room, merge.seq, msg.epoch, msg)
            finally:
                self.blocked = False
                self.unblocked_at = self.loop.time()
            if not filled:
                merge.epoch = merge.seq = None
                self._gap(room)
        await self._deliver(room, msg)

    async def _deliver(self, room: Room, msg: Message) -> None:
        merge = room._merge
        if not merge.accepts(msg):
            return
        if room._inbox.full() and not self.blocked:
            self.blocked = True
            try:
                delivered = await room._inbox.put(msg)
            finally:
                self.blocked = False
                self.unblocked_at = self.loop.time()
        else:
            delivered = await room._inbox.put(msg)
        if delivered:
            merge.commit(msg)

    def _gap(self, room: Room) -> None:
        self.log.info("room %s: messages may have been missed (gap)", room.name)
        room._emit_gap()
        self.client._gap_listeners.emit(room.name)

    async def _on_joined(self, frame: Dict[str, Any]) -> None:
        self._take_request(frame)
        room = self.client._rooms.get(str(frame.get("room")))
        if room is None or room._ended or room._join_sent_on is not self:
            return
        epoch = _str(frame.get("epoch"))
        seq = _int(frame.get("seq"))
        recovered = frame.get("recovered")
        merge = room._merge
        since = merge.since() if merge.started else None
        history = [Message.from_wire(m) for m in frame.get("history") or [] if isinstance(m, dict)]
        # A recovery cut to fit one frame comes as ``truncated`` (and, from
        # the server, ``recovered: false``) with the latest of the missed
        # messages: the older ones are read from the history API by position.
        fill_after: Optional[int] = None
        if frame.get("truncated") and since is not None and history and epoch == since["epoch"]:
            after, first = int(since["seq"]), history[0]
            if first.epoch == epoch and first.seq is not None and after < first.seq <= after + 1 + FILL_MAX:
                fill_after = after
        if not isinstance(recovered, bool):
            recovered = None
        if since is not None:
            self.log.info(
                "room %s: rejoined since %s at %s/%s, recovered=%s, %d in history%s",
                room.name, since["seq"], epoch, seq, recovered, len(history),
                " (truncated)" if frame.get("truncated") else "",
            )
        gap = merge.begin_joined(epoch, True if fill_after is not None else recovered)
        if gap:
            self._gap(room)
        if fill_after is not None:
            self.blocked = True  # reading over HTTP, not the socket: not the network's fault
            try:
                filled = await self._fill(room, fill_after, str(epoch), history[0])
            finally:
                self.blocked = False
                self.unblocked_at = self.loop.time()
            if not filled:
                merge.epoch = merge.seq = None
                self._gap(room)
        for i, msg in enumerate(history, start=1):
            self._note_position(msg)
            await self._deliver(room, msg)
            if i % FAIR_BATCH == 0:
                await asyncio.sleep(0)
        merge.end_joined(epoch, seq)
        count = _int(frame.get("count"))
        if count is not None:
            room.count = count
        room._joined_on = self
        room._join_tries = 0
        rejoined = room._joined_once
        room._joined_once = True
        room._first_joined()
        room._emit_joined(rejoined)
        self.client._wake_pump()

    async def _fill(self, room: Room, after: int, epoch: str, first: Message) -> bool:
        """Delivers the messages after seq ``after`` and before ``first``
        over HTTP; False when they could not all be had (a hole that stays,
        e.g. the store no longer has them)."""
        assert first.seq is not None
        self.log.info("room %s: reading seq %d..%d over HTTP", room.name, after + 1, first.seq - 1)
        holes = 0
        limit: Optional[int] = FILL_PAGE
        while after < first.seq - 1:
            try:
                page = await get_json(
                    self.http_url, room_path(room.name, "messages"),
                    {"after_seq": after, "epoch": epoch, "limit": limit}, self.client._token,
                )
            except SwitchboardError as exc:
                if exc.code == "bad_limit" and limit is not None:
                    limit = None  # a server with a smaller HISTORY_MAX: its default page
                    continue
                self.log.warning("room %s: cannot complete the recovery: %s", room.name, exc)
                return False
            msgs = [Message.from_wire(m) for m in page if isinstance(m, dict)] if isinstance(page, list) else []
            progressed = False
            for msg in msgs:
                if msg.seq != after + 1 or msg.epoch != epoch or msg.seq >= first.seq:
                    break
                await self._deliver(room, msg)
                after, progressed = msg.seq, True
            if not progressed:
                # The store may lag the live stream a little: try again, then give up.
                holes += 1
                if holes > FILL_RETRIES:
                    self.log.warning("room %s: seq %d is not in the store", room.name, after + 1)
                    return False
                await asyncio.sleep(0.2 * holes)
        return True

    def _on_ack(self, frame: Dict[str, Any]) -> None:
        id = _str(frame.get("id"))
        outbox = self.client._outbox
        entry = outbox.get(id) if id is not None else None
        if entry is None or id is None:
            return
        seq = _int(frame.get("seq"))
        epoch = _str(frame.get("epoch"))
        if seq is None or seq <= 0 or epoch is None:
            seq, epoch = entry.seq, entry.epoch
        outbox.resolve(id, Ack(id=id, seq=seq, epoch=epoch))
        client = self.client
        client._window = min(float(client._max_inflight), client._window + 1.0)
        client._wake_pump()

    def _on_error(self, frame: Dict[str, Any]) -> None:
        code = str(frame.get("code", "unknown"))
        message = str(frame.get("message", ""))
        ref = _int(frame.get("ref"))
        outbox = self.client._outbox
        entry = outbox.by_ref(ref) if ref is not None else None
        id = _str(frame.get("id"))
        if entry is None and id is not None:
            entry = outbox.get(id)
        if entry is not None:
            self._send_failed(entry, code, message)
            return
        request = self.client._requests.pop(ref, None) if ref is not None else None
        error = SwitchboardError(code, message)
        if request is None:
            self.log.warning("error frame answering nothing known: %s %s", code, message)
            self.client._emit_error(error)
            return
        if request.kind == "join":
            self._join_failed(request.room, error)
        elif request.future is not None and not request.future.done():
            if request.kind == "leave":
                request.future.set_result(None)
            else:
                request.future.set_exception(error)

    def _join_failed(self, room: Room, error: SwitchboardError) -> None:
        client = self.client
        room._join_sent_on = None
        room._join_tries += 1
        if error.code == "unavailable" and not room._ended and room._join_tries <= REJOIN_TRIES:
            # The room's history could not be read: join again a bit later.
            self._rejoin_later(room, room._join_tries - 1)
            return
        if client._rooms.get(room.name) is room:
            del client._rooms[room.name]
        if room._joined_once:
            self.log.warning("room %s is lost: %s", room.name, error)
            client._emit_error(error)
        room._end(error)
        client._outbox.reject_room(room.name, error)

    def _rejoin_later(self, room: Room, attempt: int) -> None:
        client = self.client
        delay = backoff_delay(attempt, client._backoff.minimum, client._backoff.maximum)
        self.loop.call_later(delay, lambda: asyncio.ensure_future(self._rejoin(room)))

    async def _rejoin(self, room: Room) -> None:
        if self.alive and self.client._rooms.get(room.name) is room:
            try:
                await self.send_join(room)
            except Closed:
                pass

    def _send_failed(self, entry: PendingSend, code: str, message: str) -> None:
        client = self.client
        outbox = client._outbox
        outbox.unmark(entry)
        if outbox.get(entry.id) is not entry:
            return  # settled already
        entry.tries += 1
        room = client._rooms.get(entry.room)
        if code == "not_joined" and entry.tries < client._send_tries and room is not None and not room._ended:
            # The server no longer has this connection in the room: join it
            # again; the send goes out once it is joined.
            if room._joined_on is self:
                room._joined_on = None
                room._join_sent_on = None
                asyncio.ensure_future(self._rejoin(room))
        elif code in RETRYABLE_SEND_CODES and entry.tries < client._send_tries:
            now = self.loop.time()
            delay = backoff_delay(entry.tries - 1, client._backoff.minimum, client._backoff.maximum)
            entry.not_before = now + delay
            if code == "rate_limited":
                client._pause_until = max(client._pause_until, now + delay)
                client._window = max(1.0, client._window / 2)
        else:
            outbox.reject(entry.id, SwitchboardError(code, message))
        client._wake_pump()

    # --- sends and keepalive ----------------------------------------------------

    async def _pump(self) -> None:
        """Writes the outbox's waiting sends, oldest first, once their room is
        joined on this connection, keeping at most the window unanswered."""
        client = self.client
        outbox = client._outbox
        wake = client._wake
        assert wake is not None
        while self.alive:
            wake.clear()
            now = self.loop.time()
            timeout: Optional[float] = None
            if now < client._pause_until:
                timeout = client._pause_until - now
            else:
                sent = 0
                for entry in outbox.waiting(now):
                    if not self.alive or self.loop.time() < client._pause_until:
                        break
                    if outbox.inflight_count() >= int(client._window):
                        break
                    if outbox.get(entry.id) is not entry or entry.inflight:
                        continue  # settled or sent while we were writing
                    room = client._rooms.get(entry.room)
                    if room is None or room._ended:
                        outbox.reject(entry.id, SwitchboardError("not_joined", f"room {entry.room!r} was left"))
                        continue
                    if room._joined_on is not self:
                        continue
                    ref = client._new_ref()
                    outbox.mark_sent(entry, ref)
                    await self.write(send_frame(entry, ref))
                    sent += 1
                    if sent % FAIR_BATCH == 0:
                        await asyncio.sleep(0)
                due = outbox.next_due(now)
                if due is not None:
                    timeout = due - now
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _keepalive(self) -> None:
        """A ``ping`` every ``ping_interval``; the connection is dropped when
        nothing at all arrives within ``ping_timeout`` after it (or the ping
        cannot even be written in that time)."""
        client = self.client
        while self.alive:
            await asyncio.sleep(client._ping_interval)
            sent = self.loop.time()
            try:
                await asyncio.wait_for(self.write({"type": "ping"}), client._ping_timeout)
            except asyncio.TimeoutError:
                self.log.info("cannot write a ping to %s: reconnecting", self.http_url)
                self.socket.abort()
                return
            await asyncio.sleep(max(0.0, sent + client._ping_timeout - self.loop.time()))
            if self.last_heard < sent and not self.blocked and self.unblocked_at < sent:
                self.log.info("no answer from %s to a ping: reconnecting", self.http_url)
                self.socket.abort()
                return


def send_frame(entry: PendingSend, ref: int) -> Dict[str, Any]:
    """The ``send`` frame of a pending send, with this connection's ``ref``."""
    frame: Dict[str, Any] = {"type": "send", "room": entry.room, "id": entry.id, "ref": ref}
    if entry.text:
        frame["text"] = entry.text
    frame.update(entry.fields)
    return frame
