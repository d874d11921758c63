"""`crossguard serve`: the guardrail as an HTTP service (moderation-API compatible, micro-batched)."""

from __future__ import annotations

from typing import Annotated

import typer

from crossguard_cli.cli.options import engine_options
from crossguard_cli.engine.options import EngineOptions

PANEL = "Service"


@engine_options
def serve(
    host: Annotated[str, typer.Option(
        "--host", envvar="CROSSGUARD_HOST", metavar="ADDR", rich_help_panel=PANEL,
        help="Address to listen on; 0.0.0.0 or :: for every interface (set an API key then).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", "-p", envvar="CROSSGUARD_PORT", metavar="N",
        rich_help_panel=PANEL, help="TCP port; 0 picks a free one (the startup line names it).")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="CROSSGUARD_API_KEY", metavar="KEY", rich_help_panel=PANEL, show_default=False,
        help="Require 'Authorization: Bearer KEY' on /v1/ endpoints (/healthz, /readyz, /metrics stay open). "
             "Prefer the environment variable: arguments show in ps.")] = None,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", metavar="MS", rich_help_panel=PANEL,
        help="Most time to gather concurrent requests to score together, spent only while more are on "
             "their way; an idle server scores a lone request at once.")] = 5.0,
    batch_tokens: Annotated[int | None, typer.Option(
        "--batch-tokens", metavar="N", rich_help_panel=PANEL,
        help="Most estimated pair tokens (characters / 4, per hypothesis) gathered to score together; a "
             "request is never split, so 1 scores one request at a time. [default: 4 forward passes of the "
             "device]")] = None,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", metavar="N", rich_help_panel=PANEL,
        help="Inputs waiting to be scored before new requests get 429 with Retry-After.")] = 512,
    max_inputs: Annotated[int, typer.Option(
        "--max-inputs", metavar="N", rich_help_panel=PANEL,
        help="Inputs in one request (413 beyond).")] = 128,
    max_body_bytes: Annotated[int, typer.Option(
        "--max-body-bytes", metavar="N", rich_help_panel=PANEL,
        help="Bytes in one request body (413 beyond).")] = 1 << 20,
    watch: Annotated[bool, typer.Option(
        "--watch", rich_help_panel=PANEL,
        help="Reload the rules file when it changes (SIGHUP always reloads it).")] = False,
    log_format: Annotated[str, typer.Option(
        "--log-format", metavar="FORMAT", rich_help_panel=PANEL,
        help="text or json: one access-log line per request on stderr.")] = "text",
    log_prompts: Annotated[bool, typer.Option(
        "--log-prompts", rich_help_panel=PANEL,
        help="Put the prompts in the access log (never logged otherwise).")] = False,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", metavar="S", rich_help_panel=PANEL,
        help="Seconds to finish requests in flight after SIGTERM or Ctrl-C.")] = 30.0,
    *,
    engine: EngineOptions,
) -> int:
    """Serve the rules over HTTP: POST /v1/moderations (moderation-API shape) and /v1/check (crossguard's
    records); GET /v1/rules, /healthz, /readyz, /metrics, /openapi.json. SIGHUP reloads the rules; SIGTERM drains
    and exits 0."""
    from contextlib import closing

    from crossguard_cli.serve import require_extra
    from crossguard_cli.serve.options import ServeOptions

    # The ranges are declared once, in ServeOptions.check: a bad value is a usage error here,
    # before the web stack is imported or any model loads.
    options = ServeOptions(host=host, port=port, api_key=api_key, batch_wait_ms=batch_wait_ms,
                           batch_tokens=batch_tokens, max_queue=max_queue, max_inputs=max_inputs,
                           max_body_bytes=max_body_bytes, watch=watch, log_format=log_format, log_prompts=log_prompts,
                           drain_timeout=drain_timeout).check(engine.rules)
    require_extra()
    from crossguard_cli.api import Guard
    from crossguard_cli.serve.logs import service_logging
    from crossguard_cli.serve.server import listen, run

    with service_logging(options.log_format), closing(listen(options)) as sock:
        guard = Guard.from_options(engine)
        return run(guard, sock, options)
