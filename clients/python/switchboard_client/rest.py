"""The HTTP API (history, presence), with the standard library in a thread."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any, Dict, Optional
from urllib.parse import quote, urlencode

from .errors import SwitchboardError


def _get(url: str, token: Optional[str], timeout: float) -> Any:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        code, message = f"http_{exc.code}", exc.reason if isinstance(exc.reason, str) else ""
        try:
            body = json.loads(exc.read().decode("utf-8"))
            if isinstance(body, dict):
                code = str(body.get("code", code))
                message = str(body.get("message", message))
        except (ValueError, UnicodeDecodeError, OSError):
            pass
        raise SwitchboardError(code, message, status=exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SwitchboardError("unavailable", f"GET {url}: {exc}") from None


async def get_json(
    base: str,
    path: str,
    params: Dict[str, Any],
    token: Optional[str],
    timeout: float = 30.0,
) -> Any:
    """``GET base + path?params`` and its JSON body; non-2xx answers raise
    :class:`SwitchboardError` with the server's code."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    url = base + path + ("?" + query if query else "")
    return await asyncio.to_thread(_get, url, token, timeout)


def room_path(room: str, what: str) -> str:
    return f"/api/rooms/{quote(room, safe='')}/{what}"
