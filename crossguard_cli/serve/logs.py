"""The service's log lines on stderr: `crossguard: ...` text, or one JSON object a line.

Every line is one line, whatever a message holds. Access lines come from the
`crossguard_cli.serve.access` logger with their fields in `record.access`; in text they read
`crossguard: 127.0.0.1:50312 POST /v1/moderations 200 3 inputs 1 flagged 12.4 ms modr-...`.
Prompt text appears only when the access fields hold it (`--log-prompts`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import Iterator

from crossguard_cli.notices import LOGGER, StderrNow

OUR_LOGGERS = (LOGGER,)
QUIET_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is not None:
            return "crossguard: " + access_text(access)
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}.get(
            record.levelno, "")
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:  # one line, never a traceback
            exc = record.exc_info[1]
            message += f": {type(exc).__name__}: {exc}"
        return "crossguard: " + prefix + _one_line(message)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        out = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "level": record.levelname.lower()}
        access = getattr(record, "access", None)
        if access is not None:
            out.update(event="access", **access)
        else:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            out.update(event="log", message=_one_line(message))
        return json.dumps(out, ensure_ascii=False, default=str)


def access_text(fields: dict) -> str:
    parts = [fields.get("client") or "-", fields["method"], fields["path"], str(fields["status"])]
    if "inputs" in fields:
        parts.append(f"{fields['inputs']} input{'' if fields['inputs'] == 1 else 's'}")
    if "flagged" in fields:
        parts.append(f"{fields['flagged']} flagged")
    parts.append(f"{fields['ms']:.1f} ms")
    if fields.get("error"):
        parts.append(fields["error"])
    if fields.get("id"):
        parts.append(fields["id"])
    if "prompts" in fields:
        parts.append("prompts=" + json.dumps(fields["prompts"], ensure_ascii=False))
    return " ".join(parts)


@contextlib.contextmanager
def service_logging(log_format: str) -> Iterator[None]:
    """Route crossguard's and uvicorn's loggers to stderr in `log_format` while the service runs."""
    handler = StderrNow()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    saved = []
    for name in (*OUR_LOGGERS, *QUIET_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if name in OUR_LOGGERS else logging.WARNING)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.removeHandler(handler)
            for old in handlers:
                logger.addHandler(old)
            logger.setLevel(level)
            logger.propagate = propagate


__all__ = ["JsonFormatter", "TextFormatter", "access_text", "service_logging"]
