"""Reading a JWT's expiry (without verifying it: only the server can)."""

from __future__ import annotations

import base64
import json
from typing import Optional


def token_expiry(token: str) -> Optional[float]:
    """The ``exp`` claim of a JWT in Unix seconds, or None when it has none
    or the token cannot be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def token_expired(token: str, now: float) -> bool:
    exp = token_expiry(token)
    return exp is not None and exp <= now
