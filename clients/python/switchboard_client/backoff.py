"""Exponential backoff with jitter, reset after a stable connection."""

from __future__ import annotations

import random
from typing import Callable, Optional


def backoff_delay(
    attempt: int,
    minimum: float,
    maximum: float,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """The delay before retry number ``attempt`` (0 for the first one).

    ``min(maximum, minimum * 2**attempt)`` scaled by a uniform factor in
    ``[0.5, 1.0]``, so clients that lost the same server do not all come
    back at the same instant.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # 2**attempt overflows floats past ~1024; the cap is reached long before.
    base = maximum if attempt >= 64 else min(maximum, minimum * (2.0**attempt))
    return base * rand(0.5, 1.0)


class Backoff:
    """Counts failed attempts and gives the delay before the next one.

    The count resets once a connection stayed open ``stable_after``
    seconds (see :meth:`closed`), so a flapping server is not hammered but
    a long-lived connection that drops is retried quickly.
    """

    def __init__(
        self,
        minimum: float = 0.25,
        maximum: float = 10.0,
        stable_after: float = 10.0,
        rand: Optional[Callable[[float, float], float]] = None,
    ) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError("backoff needs 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.stable_after = stable_after
        self.attempt = 0
        self._rand = rand if rand is not None else random.uniform

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more attempt."""
        delay = backoff_delay(self.attempt, self.minimum, self.maximum, self._rand)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def closed(self, open_for: float) -> None:
        """A connection that had been open ``open_for`` seconds ended."""
        if open_for >= self.stable_after:
            self.reset()
