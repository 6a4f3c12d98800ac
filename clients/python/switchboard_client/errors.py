"""The one exception type of the client, with the server's error codes."""

from __future__ import annotations

from typing import Optional

#: Codes the server answers a request with (docs/protocol.md, "errors").
SERVER_CODES = frozenset(
    {
        "bad_frame",
        "bad_room",
        "too_large",
        "not_joined",
        "too_many_rooms",
        "forbidden",
        "rate_limited",
        "unavailable",
    }
)

#: Codes the client adds of its own:
#: ``outbox_full`` (more unacknowledged sends than ``outbox_max``),
#: ``closed`` (the client was closed before the request was answered),
#: ``refused`` (the server refused the WebSocket upgrade for good: a bad name,
#: a refused origin, a token refused without ``get_token`` to ask for another).
CLIENT_CODES = frozenset({"outbox_full", "closed", "refused"})

#: Codes after which a ``send`` is tried again (with the same id) by the client.
RETRYABLE_SEND_CODES = frozenset({"rate_limited", "unavailable"})


class SwitchboardError(Exception):
    """A request the server (or the client) refused.

    ``code`` is a stable machine-readable code: one of the server's codes
    (``forbidden``, ``too_large``, ``not_joined``, ``bad_frame``,
    ``bad_room``, ``too_many_rooms``, ``rate_limited``, ``unavailable``), an
    HTTP refusal's code (``unauthorized``, ``bad_name``, ...), or one of the
    client's (``outbox_full``, ``closed``, ``refused``).
    """

    def __init__(self, code: str, message: str = "", *, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        #: The HTTP status, for refusals that came as an HTTP answer.
        self.status = status

    def __repr__(self) -> str:
        return f"SwitchboardError(code={self.code!r}, message={self.message!r})"
