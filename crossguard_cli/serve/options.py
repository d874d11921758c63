"""The service's own settings, beside the engine's (`EngineOptions`): where to listen, how to batch,
what to refuse, how to log. Checked once, so a bad value is a usage error before any model loads."""

from __future__ import annotations

from dataclasses import dataclass

from crossguard_cli.errors import UsageError

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class ServeOptions:
    """Settings of `crossguard serve` (its `--help` explains each).

    Attributes:
        host, port: where to listen; port 0 lets the OS pick a free port (the startup line names it).
        api_key: when set, every `/v1/` endpoint wants `Authorization: Bearer <api_key>`.
        batch_wait_ms: the most the worker waits to gather more requests to score together, and
            only while more are on their way; an idle server scores a lone request at once.
        batch_tokens: budget of one round of gathered requests in estimated pair tokens
            (characters / 4 of each input, plus its hypothesis, per hypothesis); None: four of the
            device's forward passes. A request is never split, so 1 means one request at a time
            (no micro-batching).
        max_queue: inputs waiting to be scored before new requests get 429.
        max_inputs: inputs in one request (413 beyond).
        max_body_bytes: bytes of one request body (413 beyond).
        watch: reload the rules file when it changes (SIGHUP always reloads).
        log_format: "text" (`crossguard: ...` lines) or "json" (one object a line).
        log_prompts: put the prompts in the access log (off: prompt text is never logged).
        drain_timeout: seconds to finish in-flight requests after SIGTERM / Ctrl-C.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    batch_wait_ms: float = 5.0
    batch_tokens: int | None = None
    max_queue: int = 512
    max_inputs: int = 128
    max_body_bytes: int = 1 << 20
    watch: bool = False
    log_format: str = "text"
    log_prompts: bool = False
    drain_timeout: float = 30.0

    def check(self, rules_path: str | None = None) -> ServeOptions:
        """Return self if every value is acceptable.

        Raises:
            UsageError: the first bad value, named by its flag.
        """
        ranges = {"port": (0, 65535), "batch_wait_ms": (0, 1000), "batch_tokens": (1, None),
                  "max_queue": (1, None), "max_inputs": (1, None), "max_body_bytes": (64, None),
                  "drain_timeout": (0, None)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                    high is not None and value > high):
                want = f"at least {low}" if high is None else f"between {low} and {high}"
                raise UsageError(f"must be {want}, got {value!r}", where=_flag(name))
        if self.log_format not in LOG_FORMATS:
            raise UsageError(f"{self.log_format!r} is not one of {', '.join(LOG_FORMATS)}", where="--log-format")
        if not self.host:
            raise UsageError("must not be empty", where="--host")
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("is empty; give a key or leave it unset", where="--api-key")
        if self.watch and rules_path is None:
            raise UsageError("needs a rules file (--rules or CROSSGUARD_RULES) to watch", where="--watch")
        return self


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


__all__ = ["LOG_FORMATS", "ServeOptions"]
