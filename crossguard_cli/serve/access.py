"""One access-log line and the request metrics for every request, and a last-resort 500.

The outermost ASGI middleware: it sees every answer, the 401s of the key check and the 404s of
the router included. Handlers add what they know (inputs, flags, the response id, the prompts
when `--log-prompts` asks) to `scope["crossguard"]`; the prompt text is never logged otherwise.
An exception that escapes a handler (a bug) is answered with a 500 in the error shape and one
log line, never a traceback on stderr or a dropped connection.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from crossguard_cli.serve.protocol import ApiError, send_error

access_log = logging.getLogger("crossguard_cli.serve.access")
log = logging.getLogger("crossguard_cli.serve")
NOTE = "crossguard"


class AccessMiddleware:
    def __init__(self, app: Any, metrics: Any = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        note: dict[str, Any] = {}
        scope[NOTE] = note
        sent = {"status": 500, "started": False}

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                sent["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: a 500 in the error shape
            log.error("internal error on %s %s: %s: %s", scope["method"], scope["path"], type(exc).__name__,
                      " ".join(str(exc).split()))
            sent["status"] = 500
            note["error"] = "internal_error"
            if not sent["started"]:
                await _internal_error(send)
        finally:
            seconds = time.perf_counter() - start
            status = sent["status"]
            if self.metrics is not None:
                self.metrics.observe_request(scope["path"], status, seconds)
            client = scope.get("client")
            fields: dict[str, Any] = {"client": f"{client[0]}:{client[1]}" if client else None,
                                      "method": scope["method"], "path": scope["path"], "status": status,
                                      "ms": round(seconds * 1000.0, 2)}
            fields.update(note)
            access_log.info("access", extra={"access": fields})


async def _internal_error(send: Any) -> None:
    await send_error(send, ApiError(500, "internal error; the request was not scored (see the server log)",
                                    code="internal_error", type="server_error"))


__all__ = ["NOTE", "AccessMiddleware"]
