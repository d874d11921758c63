"""A live progress bar on stderr for `batch` (terminal only; nothing when stderr is piped)."""

from __future__ import annotations

import time
from typing import Any


class Progress:
    """Records, records/s and flagged so far; transient, so the terminal is left clean."""

    def __init__(self, console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._start = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.fields[records]} records"),
                TextColumn("{task.fields[rate]:.1f}/s"),
                TextColumn("[red]{task.fields[flagged]} flagged"),
                TextColumn("{task.fields[errors]} errors"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("batch", total=None, records=0, rate=0.0, flagged=0, errors=0)
        return self

    def update(self, counts: dict[str, Any]) -> None:
        if self._progress is not None:
            rate = counts["records"] / max(1e-9, time.monotonic() - self._start)
            self._progress.update(self._task, records=counts["records"], rate=rate,
                                  flagged=counts["flagged"], errors=counts["errors"])

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
