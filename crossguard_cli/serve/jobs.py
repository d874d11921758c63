"""A request as the scoring worker sees it, and how its answer gets back to the event loop.

Apart from the batcher so that the policy (`batcher.py`) reads on its own: a `Job` is one
request's inputs with the rules in force when it was accepted; its answer is settled on the
request's own event loop, never from the worker thread directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from crossguard_cli.api import Guard
from crossguard_cli.records.inputs import Record


class QueueFull(Exception):
    """The queue holds `--max-queue` inputs: refuse now, and say when to retry."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"the queue is full; retry in {retry_after} s")


class Unavailable(Exception):
    """The worker is not running (stopping, or it failed): nothing can be scored."""


class ScoringFailed(Exception):
    """Scoring raised instead of giving error records: the requests in flight fail closed (503)."""


@dataclass(eq=False)
class Job:
    """One request's inputs, the Guard in force when it was accepted, and where its answer goes."""

    records: list[Record]
    guard: Guard
    tokens: int  # estimated pair tokens of all its inputs
    width: int  # estimated tokens of its longest pair
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    taken: bool = False  # off the queue and counted in `scoring` until answered


class Ticket:
    """An announced request: while it is open, the worker knows one more request is on its way."""

    def __init__(self, batcher: Any) -> None:
        self._batcher = batcher
        self.open = True

    def submit(self, records: list[Record]) -> asyncio.Future:
        """Queue the request's inputs; the future gives `(guard, results)`.

        Raises:
            QueueFull: no room for these inputs now.
            Unavailable: the worker is not running.
        """
        return self._batcher._submit(records, self)


def deliver(job: Job, value: Any = None, error: BaseException | None = None) -> None:
    """Settle the job's future on its event loop (thread-safe); a request that went away is skipped."""
    def settle() -> None:
        if job.future.done():  # the handler went away (cancelled)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(settle)


__all__ = ["Job", "QueueFull", "ScoringFailed", "Ticket", "Unavailable", "deliver"]
