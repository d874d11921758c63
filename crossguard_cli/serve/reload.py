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


def reloaded(guard: Any, path: str | None) -> Any:
    """The Guard for the rules file as it is now (sharing `guard`'s model), or None, logged in one
    line, when the file is bad: the rules in force stay. Never raises: a reload must never take
    the service down."""
    from crossguard_cli.errors import CrossguardError

    try:
        new = guard.with_rules(path)
    except CrossguardError as exc:
        log.error("rules reload refused: %s; the rules in force stay", exc)
        return None
    except Exception as exc:  # noqa: BLE001
        log.error("rules reload refused: %s: %s; the rules in force stay", type(exc).__name__,
                  " ".join(str(exc).split()))
        return None
    if not guard.options.model:  # the model came from the rules file: has its `model:` changed?
        from crossguard_cli.engine.models.loader import model_name

        wanted = model_name(None, new.rules, path)
        if wanted != guard.model_name:
            log.warning("the rules file now names model %r; the service keeps %r until it is restarted",
                        wanted, guard.model_name)
    count = len(new.rules.rules)
    log.info("rules reloaded from %s: %d rule%s", path or "the packaged rules", count, "" if count == 1 else "s")
    return new


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


__all__ = ["POLL_SECONDS", "reloaded", "sighup_handler", "watch"]
