"""Where the engine's notices go: the engine logs, each front end chooses the screen.

The engine says what it is doing (an export, a cache, compiling) through the `crossguard_cli`
logger and never prints. The CLI and the service show those notices on stderr through
`StderrNow`, each with its own line format.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "crossguard_cli"


class StderrNow(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when it writes (tests and embedders swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def notices_on_stderr(formatter: logging.Formatter) -> None:
    """Show the engine's notices (INFO and up) on stderr in `formatter`'s lines; idempotent."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, StderrNow) for h in logger.handlers):
        handler = StderrNow()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


__all__ = ["LOGGER", "StderrNow", "notices_on_stderr"]
