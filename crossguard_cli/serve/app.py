"""The HTTP app: routes, handlers, and the order in which a request is refused or scored.

A scoring request (`/v1/moderations`, `/v1/check`) is announced to the batcher, its body read
within `--max-body-bytes`, parsed and checked (every input must be scorable text), queued
(429 at once when the queue is full), then awaited: the event loop never runs the model.
Any input that was not scored fails the whole request closed (503), so no input is ever
reported as not flagged without having been scored.

Starlette (not FastAPI): the service has seven routes and must answer in the moderation API's
error shape, with its own limits, before anything parses the body; Starlette gives exactly
that with no model-validation layer in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crossguard_cli.serve import openapi, protocol
from crossguard_cli.serve.access import NOTE, AccessMiddleware
from crossguard_cli.serve.batcher import MicroBatcher
from crossguard_cli.serve.jobs import QueueFull, ScoringFailed, Unavailable
from crossguard_cli.serve.metrics import Metrics
from crossguard_cli.serve.options import ServeOptions
from crossguard_cli.serve.protocol import ApiError
from crossguard_cli.serve.reload import watch
from crossguard_cli.serve.security import ApiKeyMiddleware


class Service:
    """The handlers, over one batcher. `draining` is set when shutdown starts (readiness goes 503)."""

    def __init__(self, batcher: MicroBatcher, metrics: Metrics, options: ServeOptions) -> None:
        self.batcher = batcher
        self.metrics = metrics
        self.options = options
        self.draining = False
        self._openapi: bytes | None = None

    # -- scoring ------------------------------------------------------------------------------

    async def moderations(self, request: Request) -> Response:
        return await self._score(request, moderation=True)

    async def check(self, request: Request) -> Response:
        return await self._score(request, moderation=False)

    async def _score(self, request: Request, *, moderation: bool) -> Response:
        note = request.scope.setdefault(NOTE, {})
        try:
            with self.batcher.arrival() as ticket:
                body = await self._body(request)
                records = protocol.parse_request(body, max_inputs=self.options.max_inputs,
                                                 max_chars=self.batcher.guard.options.max_chars)
                note["inputs"] = len(records)
                if self.options.log_prompts:
                    note["prompts"] = [rec.text for rec in records]
                try:
                    future = ticket.submit(records)
                except QueueFull as exc:
                    raise ApiError(429, f"too many inputs waiting to be scored; retry in {exc.retry_after} s",
                                   code="rate_limit_exceeded", type="rate_limit_error",
                                   headers={"Retry-After": str(exc.retry_after)}) from None
                except Unavailable as exc:
                    raise ApiError(503, str(exc), code="unavailable", type="server_error",
                                   headers={"Retry-After": "1"}) from None
            try:
                guard, results = await future
            except ScoringFailed as exc:
                raise ApiError(503, f"{exc}; nothing was scored", code="scoring_failed", type="server_error") from None
            failed = protocol.unscored(results, records)
            if failed is not None:
                raise failed
        except ApiError as exc:
            note["error"] = exc.code
            return error_response(exc)
        note["flagged"] = sum(1 for r in results if r.verdict == "flagged")
        if moderation:
            out = protocol.moderation_response(results, guard.rules, guard.model_name)
        else:
            out = protocol.check_response(results, guard.model_name)
        note["id"] = out["id"]
        return JSONResponse(out)

    async def _body(self, request: Request) -> bytes:
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, f"Content-Length is not a number: {declared!r}", code="invalid_request")
            if int(declared) > limit:
                raise protocol.too_large(f"request body is {declared} bytes; at most {limit} (--max-body-bytes)",
                                         code="request_too_large")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise protocol.too_large(f"request body is over {limit} bytes (--max-body-bytes)",
                                             code="request_too_large")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "the client went away before sending the whole body", code="client_disconnected") \
                from None
        return b"".join(chunks)

    # -- the rest ---------------------------------------------------------------------------------

    async def rules(self, request: Request) -> Response:  # noqa: ARG002 - Starlette's handler signature
        guard = self.batcher.guard
        loaded = datetime.datetime.fromtimestamp(self.batcher.loaded_at, tz=datetime.timezone.utc)
        return JSONResponse(protocol.rules_response(guard.rules, guard.model_name,
                                                    loaded.isoformat(timespec="seconds").replace("+00:00", "Z")))

    async def healthz(self, request: Request) -> Response:  # noqa: ARG002
        if self.batcher.failed:  # alive, but it will never score again: let the orchestrator restart it
            return JSONResponse({"status": "failed", "reason": "the scoring worker failed"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:  # noqa: ARG002
        if self.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not self.batcher.ready:
            return JSONResponse({"status": "not ready", "reason": "the scoring worker is not running"},
                                status_code=503)
        guard = self.batcher.guard
        return JSONResponse({"status": "ready", "model": guard.model_name, "rules": len(guard.rules.rules)})

    async def metrics_text(self, request: Request) -> Response:  # noqa: ARG002
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)

    async def openapi_json(self, request: Request) -> Response:  # noqa: ARG002
        if self._openapi is None:
            from crossguard_cli import __version__

            self._openapi = JSONResponse(openapi.document(__version__)).body
        return Response(self._openapi, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    """A handler's error answer: the same bytes and headers as `protocol.send_error` sends."""
    return Response(exc.encoded(), status_code=exc.status, headers=exc.headers, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:  # noqa: ARG001
    assert isinstance(exc, HTTPException)
    codes = {404: ("not_found", f"no such endpoint: {request.url.path}"),
             405: ("method_not_allowed", f"{request.method} is not allowed on {request.url.path}")}
    code, message = codes.get(exc.status_code, ("http_error", str(exc.detail)))
    return error_response(ApiError(exc.status_code, message, code=code, headers=dict(exc.headers or {})))


async def _internal_error(request: Request, exc: Exception) -> Response:  # noqa: ARG001
    return error_response(ApiError(500, "internal error; the request was not scored (see the server log)",
                                   code="internal_error", type="server_error"))


def build_app(service: Service, api_key: str | None) -> Any:
    """The ASGI app: the access log outermost, then the key check, then the routes."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:  # noqa: ARG001
        service.batcher.start()
        watcher = None
        if service.options.watch and service.batcher.rules_path:
            watcher = asyncio.create_task(watch(service.batcher.rules_path, service.batcher))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            # Scores what is queued first, for --drain-timeout at most.
            await asyncio.to_thread(service.batcher.stop, service.options.drain_timeout)

    routes = [
        Route("/v1/moderations", service.moderations, methods=["POST"]),
        Route("/v1/check", service.check, methods=["POST"]),
        Route("/v1/rules", service.rules, methods=["GET"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/openapi.json", service.openapi_json, methods=["GET"]),
    ]
    app: Any = Starlette(routes=routes, lifespan=lifespan,
                         exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    if api_key:
        app = ApiKeyMiddleware(app, api_key)
    return AccessMiddleware(app, service.metrics)


__all__ = ["Service", "build_app", "error_response"]
