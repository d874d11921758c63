"""Ctrl-C and SIGTERM that never cut a line in half.

A signal handler that raises runs between any two bytecodes, also in the middle of writing an
output record: the buffered writer is left half-way and a broken JSON line reaches the reader.
So the handlers here raise at once only outside `whole_lines()`; inside it (writing and flushing
a group of records) they note the signal, and the exception is raised when the group is whole.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (every line written so far stays complete)."""


class _State:
    depth = 0
    pending: type[BaseException] | None = None


def _handler(signum: int, frame) -> None:  # noqa: ARG001 - the signal module's signature
    exc = KeyboardInterrupt if signum == signal.SIGINT else Terminated
    if _State.depth:
        _State.pending = _State.pending or exc
        return
    raise exc


@contextmanager
def whole_lines() -> Iterator[None]:
    """Defer Ctrl-C and SIGTERM until the block (writing records) is done."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if not _State.depth and _State.pending is not None:
        exc, _State.pending = _State.pending, None
        raise exc


def install() -> Callable[[], None]:
    """Install the handlers (main thread only); returns a function that puts the old ones back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wanted = [s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None]
    previous = {s: signal.signal(s, _handler) for s in wanted}
    _State.depth, _State.pending = 0, None

    def restore() -> None:
        for s, old in previous.items():
            signal.signal(s, old)

    return restore


__all__ = ["Terminated", "install", "whole_lines"]
