"""Running the service: the listening socket, uvicorn, and what signals do.

- The socket is bound before the model loads, so a port in use is one error line at once
  (not after seconds of loading); connections are refused until the model is ready.
- SIGTERM / Ctrl-C: stop accepting, finish every request in flight (`--drain-timeout`), stop the
  worker once the queue is empty, exit 0. A second signal stops at once (exit 130 or 143).
- SIGHUP: reload the rules (see `reload.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from crossguard_cli.api import Guard
from crossguard_cli.serve import ServeError
from crossguard_cli.serve.app import Service, build_app
from crossguard_cli.serve.batcher import MicroBatcher
from crossguard_cli.serve.metrics import Metrics
from crossguard_cli.serve.options import ServeOptions
from crossguard_cli.serve.reload import sighup_handler
from crossguard_cli.serve.security import is_loopback

log = logging.getLogger("crossguard_cli.serve")


def listen(options: ServeOptions) -> socket.socket:
    """A socket bound to `--host`/`--port` (not yet listening), or one line saying why not.

    Binding beyond loopback without an API key logs a warning: anyone who can reach the port
    can use the service.

    Raises:
        ServeError: the host does not resolve, or the address is in use or not ours.
    """
    host, port = options.host, options.port
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {shown}: {exc.strerror}", where="--host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {shown}: {exc.strerror or exc}", where="--port") from None
    if not is_loopback(host) and not options.api_key:
        log.warning("listening on %s beyond this machine without an API key: anyone who can reach it can use it; "
                    "set --api-key or CROSSGUARD_API_KEY", shown)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(guard: Guard, sock: socket.socket, options: ServeOptions) -> int:
    """Serve until SIGTERM / Ctrl-C; the exit code (0 after a clean drain).

    Raises:
        ServeError: the server could not start.
    """
    holder: dict[str, MicroBatcher] = {}
    metrics = Metrics(queued=lambda: holder["batcher"].queued, model=guard.model_name,
                      scoring=lambda: holder["batcher"].scoring)
    batcher = holder["batcher"] = MicroBatcher(
        guard, batch_wait_ms=options.batch_wait_ms, batch_tokens=options.batch_tokens, max_queue=options.max_queue,
        rules_path=guard.options.rules, metrics=metrics, warm_up=True)
    service = Service(batcher, metrics, options)
    config = uvicorn.Config(build_app(service, options.api_key), lifespan="on", log_config=None, access_log=False,
                            ws="none", server_header=False, timeout_graceful_shutdown=options.drain_timeout)
    server = _Server(config, service, guard)
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's own exit on a failed startup
        raise ServeError("the service failed to start (see the lines above)") from None
    finally:
        sock.close()
    return server.exit_code


class _Server(uvicorn.Server):
    """uvicorn's Server, with our signals: drain and exit 0, SIGHUP reloads, no signal raised again after."""

    def __init__(self, config: uvicorn.Config, service: Any, guard: Guard) -> None:
        super().__init__(config)
        self.service = service
        self.guard = guard
        self.exit_code = 0

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers: dict[int, Any] = {signal.SIGINT: self.handle_exit, signal.SIGTERM: self.handle_exit}
        if hasattr(signal, "SIGHUP"):
            batcher = self.service.batcher
            handlers[signal.SIGHUP] = sighup_handler(asyncio.get_running_loop(), batcher, batcher.rules_path)
        saved = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:  # noqa: ARG002 - the signal module's signature
        self.service.draining = True  # readiness says 503 at once, so balancers stop sending
        if self.should_exit:  # a second signal: stop now
            self.force_exit = True
            self.exit_code = 128 + int(sig)
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            guard, rules = self.guard, self.guard.rules
            dtype = str(guard.model.dtype).removeprefix("torch.")
            count = len(rules.rules)
            log.info("listening on %s: model %s (%s, %s), %d rule%s from %s; POST /v1/moderations, /v1/check",
                     url_of(sockets[0]), guard.model_name, guard.model.device, dtype, count, "" if count == 1 else "s",
                     rules.source)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        busy = len(self.server_state.tasks)
        log.info("shutting down: finishing %d request%s in flight", busy, "" if busy == 1 else "s")
        await super().shutdown(sockets=sockets)
        log.info("stopped")


__all__ = ["listen", "run", "url_of"]
