"""Callbacks the application registers (state, gaps, presence changes)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Generic, List, Optional, TypeVar, Union

T = TypeVar("T")

#: A callback: a plain function, or one returning an awaitable (run as a task).
Callback = Callable[[T], Union[None, Awaitable[None]]]

log = logging.getLogger("switchboard_client")


class NamedLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The client's log lines, each starting with the client's name."""

    def process(self, msg: Any, kwargs: Any) -> Any:
        return f"[{self.extra['name'] if self.extra else '-'}] {msg}", kwargs


def named_log(name: str) -> NamedLog:
    return NamedLog(log, {"name": name})


class Listeners(Generic[T]):
    """Callbacks of one kind. A callback that raises is logged, not propagated:
    it must not break the connection that told it."""

    def __init__(self, on_failure: Optional[Callable[[BaseException], None]] = None) -> None:
        #: Told of a callback that raised (the client's ``error`` listeners).
        self.on_failure = on_failure
        self._callbacks: List[Callback[T]] = []
        self._tasks: "set[asyncio.Future[Any]]" = set()

    def add(self, callback: Callback[T]) -> Callable[[], None]:
        """Registers ``callback``; returns a function that unregisters it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def emit(self, value: T) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(value)
            except Exception as exc:
                self._failed(exc)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: "asyncio.Future[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        log.error("a callback raised", exc_info=exc)
        if self.on_failure is not None:
            try:
                self.on_failure(exc)
            except Exception:
                log.exception("an error callback raised")
