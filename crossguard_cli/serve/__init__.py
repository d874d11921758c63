"""`crossguard serve`: the guardrail as an HTTP service, a thin front end over one `Guard`.

The stages, one module each:

- `options.py`  the service's own settings (`ServeOptions`), checked once
- `protocol.py` request bodies in, response and error bodies out (the moderation API's shapes)
- `batcher.py`  the one scoring worker: gathers the inputs of concurrent requests, scores them
                together with `Guard.check_many`, swaps rules between rounds
- `sizing.py`   what a request costs, and which requests share a pass
- `metrics.py`  Prometheus metrics on a private registry
- `security.py` the API key and the loopback check
- `access.py`   one access-log line and the request metrics per request; a last-resort 500
- `logs.py`     text or JSON log lines on stderr
- `reload.py`   rules reloads on SIGHUP and, with `--watch`, on file change
- `openapi.py`  the OpenAPI 3.1 document `GET /openapi.json` serves (checked against real answers)
- `app.py`      the Starlette app: routes and handlers
- `server.py`   the listening socket, uvicorn, signals (drain on SIGTERM / Ctrl-C)
- `testing.py`  a server in a subprocess and a stdlib HTTP client, for tests and benchmarks

Nothing here is imported by `crossguard --help`; the web stack (Starlette, uvicorn,
prometheus-client) is the `serve` extra and is imported only when the service starts.
"""

from __future__ import annotations

import importlib

from crossguard_cli.errors import CrossguardError

EXTRA_MODULES = ("starlette", "uvicorn", "prometheus_client")


class ServeError(CrossguardError):
    """The service cannot start as asked: a missing extra, an address that cannot be listened on."""


def require_extra() -> None:
    """Fail with one line naming the install command when the `serve` extra is missing.

    Raises:
        ServeError: a module of the extra cannot be imported.
    """
    missing = []
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ServeError(f"crossguard serve needs {', '.join(missing)}: pip install 'crossguard[serve]'")


__all__ = ["EXTRA_MODULES", "ServeError", "require_extra"]
