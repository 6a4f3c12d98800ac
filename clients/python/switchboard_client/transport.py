"""The WebSocket underneath, over the ``websockets`` package.

``websockets.asyncio.client`` (websockets >= 13) is used when it is there,
else the older API of websockets 12. Either way the client sees one small
interface: :class:`Socket`, and :class:`Refused` for an upgrade the server
answered with an HTTP status.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Optional, Tuple
from urllib.parse import quote, urlsplit, urlunsplit

import websockets
import websockets.exceptions as wsx

try:
    _connect: Any = importlib.import_module("websockets.asyncio.client").connect
    NEW_API = True
except ImportError:  # websockets 12
    _connect = importlib.import_module("websockets.legacy.client").connect
    NEW_API = False

#: Largest frame accepted from the server: a ``joined`` holds at most
#: 512 KiB of history, plus the frame around it.
MAX_INCOMING = 4 * 1024 * 1024

VERSION = str(getattr(websockets, "__version__", "?"))

#: The server's code for an upgrade refused with this status, for when the
#: JSON body that names it cannot be read (websockets 12 does not keep it).
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden_origin",
    408: "request_timeout",
    429: "rate_limited",
    503: "over_capacity",
}


class Refused(Exception):
    """The server answered the upgrade with an HTTP status, not a WebSocket."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Closed(Exception):
    """The connection ended (close code and reason when the server sent them)."""

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(f"closed ({code}) {reason}")
        self.code = code
        self.reason = reason


def endpoints(url: str) -> Tuple[str, str]:
    """The WebSocket URL (``.../ws``) and the HTTP base URL of a node.

    ``http://h:p``, ``ws://h:p`` and ``ws://h:p/ws`` all name the same node;
    a path before ``/ws`` (a node behind a proxy at a prefix) is kept.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "ws"):
        ws_scheme, http_scheme = "ws", "http"
    elif scheme in ("https", "wss"):
        ws_scheme, http_scheme = "wss", "https"
    else:
        raise ValueError(f"unsupported URL scheme in {url!r} (http, https, ws or wss)")
    if not parts.netloc:
        raise ValueError(f"no host in {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    ws_url = urlunsplit((ws_scheme, parts.netloc, path + "/ws", "", ""))
    http_url = urlunsplit((http_scheme, parts.netloc, path, "", ""))
    return ws_url, http_url


def with_query(ws_url: str, name: Optional[str], token: Optional[str]) -> str:
    query = []
    if name is not None:
        query.append("name=" + quote(name, safe=""))
    if token is not None:
        query.append("token=" + quote(token, safe=""))
    return ws_url + ("?" + "&".join(query) if query else "")


def _refusal(exc: BaseException) -> Optional[Refused]:
    """The HTTP status (and JSON error body) of a refused upgrade, if it was one."""
    status: Optional[int] = None
    body = b""
    response = getattr(exc, "response", None)
    if response is not None and isinstance(getattr(response, "status_code", None), int):
        status = response.status_code
        raw = getattr(response, "body", b"")
        body = bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else b""
    elif isinstance(getattr(exc, "status_code", None), int):
        status = getattr(exc, "status_code")
    if status is None:
        return None
    code, message = STATUS_CODES.get(status, f"http_{status}"), ""
    try:
        obj = json.loads(body.decode("utf-8")) if body else None
    except (ValueError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, dict):
        code = str(obj.get("code", code))
        message = str(obj.get("message", ""))
    return Refused(status, code, message)


class Socket:
    """One open WebSocket connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, url: str, open_timeout: float) -> "Socket":
        """Dials ``url``; raises :class:`Refused` on an HTTP refusal, other
        exceptions (``OSError``, timeouts, handshake errors) when the node
        could not be reached."""
        kwargs: dict[str, Any] = {
            "open_timeout": open_timeout,
            # The client keeps the connection alive itself (protocol pings),
            # the server's WebSocket pings are answered by the library.
            "ping_interval": None,
            "close_timeout": 2,
            "max_size": MAX_INCOMING,
            "compression": None,
        }
        try:
            conn = await _connect(url, **kwargs)
        except wsx.InvalidHandshake as exc:
            refused = _refusal(exc)
            if refused is not None:
                raise refused from exc
            raise
        return cls(conn)

    async def send(self, text: str) -> None:
        try:
            await self._conn.send(text)
        except wsx.ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> str:
        """The next text frame (binary frames are skipped)."""
        while True:
            try:
                data = await self._conn.recv()
            except wsx.ConnectionClosed as exc:
                raise _closed(exc) from exc
            if isinstance(data, str):
                return data

    async def close(self) -> None:
        try:
            await self._conn.close()
        except Exception:
            self.abort()

    def abort(self) -> None:
        """Drops the connection at once, without a closing handshake."""
        transport = getattr(self._conn, "transport", None)
        if transport is not None:
            transport.abort()


def _closed(exc: Any) -> Closed:
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return Closed(getattr(rcvd, "code", None), str(getattr(rcvd, "reason", "")))
    return Closed(None, "no close frame")
