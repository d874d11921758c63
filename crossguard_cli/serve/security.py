"""Who may call: the API key on every `/v1/` endpoint, and a warning for a server open to the network.

Health, readiness and metrics stay open (probes and scrapers carry no key). The key is compared
in constant time (`hmac.compare_digest`), so response timing says nothing about it.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from crossguard_cli.serve.protocol import ApiError, send_error

PROTECTED_PREFIX = "/v1/"
LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def is_loopback(host: str) -> bool:
    """Whether `host` listens on this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authorized(header: bytes | None, key: bytes) -> bool:
    """Whether an `Authorization` header value carries `Bearer <key>` (constant-time compare)."""
    if header is None:
        return False
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key)


class ApiKeyMiddleware:
    """ASGI middleware: a `/v1/` request without the right bearer token gets 401, nothing else runs."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.key = key.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if authorized(header, self.key):
            await self.app(scope, receive, send)
            return
        message = ("missing API key: send 'Authorization: Bearer <key>'" if header is None
                   else "invalid API key")
        await send_error(send, ApiError(401, message, code="invalid_api_key",
                                        headers={"WWW-Authenticate": 'Bearer realm="crossguard"'}))


__all__ = ["ApiKeyMiddleware", "authorized", "is_loopback"]
