"""Handing items between the engine's threads through bounded queues, without anyone hanging.

A thread that puts or takes must notice when the other side has gone away (the caller stopped
early, Ctrl-C): every wait here is a short poll of a stop event. A failure travels down the
queue as a `Failure` and is raised in the consumer's thread; `END` closes a queue.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

END = object()  # no more items


@dataclass
class Failure:
    """An exception raised in a producer thread, to be raised again by the consumer."""

    exc: BaseException


def put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item`; False, without putting it, once `stop` is set (then no thread blocks forever)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def take(q: queue.Queue, stop: threading.Event | None) -> object:
    """The next item; `END` once `stop` is set. Without `stop`, waits as long as it takes."""
    if stop is None:
        return q.get()
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return END


__all__ = ["END", "Failure", "put", "take"]
