"""When to reload the rules: on SIGHUP, and with `--watch` when the file changes.

Both only *ask* the batcher to reload; its worker builds the new Guard between two passes
(`Guard.with_rules`, sharing the loaded model) and swaps it in, or logs one line and keeps
the old rules when the file is bad. Watching is a stat of the file once a second: no extra
dependency, works for editors that write in place and those that rename a new file over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("crossguard_cli.serve")

POLL_SECONDS = 1.0
SETTLE_SECONDS = 0.25  # a file still being written is read once it has stopped changing


def sighup_handler(loop: asyncio.AbstractEventLoop, batcher: Any, path: str | None) -> Callable[[int, Any], None]:
    """A signal handler that hands the reload to the event loop (no lock is taken in the handler)."""

    def request() -> None:
        log.info("SIGHUP: reloading the rules from %s", path or "the packaged rules")
        batcher.request_reload()

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are exiting anyway
            loop.call_soon_threadsafe(request)

    return handler


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def watch(path: str, batcher: Any, interval: float = POLL_SECONDS) -> None:
    """Ask for a reload whenever `path` changes (run as a task; cancel it to stop)."""
    last = _stamp(path)
    while True:
        await asyncio.sleep(interval)
        now = _stamp(path)
        if now is None or now == last:
            continue  # missing for a moment (an editor's rename): wait for it to come back
        while True:  # let a writer finish
            await asyncio.sleep(SETTLE_SECONDS)
            settled = _stamp(path)
            if settled == now:
                break
            now = settled
        last = now
        log.info("%s changed: reloading the rules", path)
        batcher.request_reload()


__all__ = ["POLL_SECONDS", "sighup_handler", "watch"]
