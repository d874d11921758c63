"""A live progress bar on stderr for `batch` (terminal only; nothing when stderr is piped)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Records, records/s and flagged so far; transient, so the terminal is left clean.

    Args:
        console: a Rich console on stderr.
        enabled: draw the bar (the CLI enables it when stderr is a terminal).
    """

    def __init__(self, console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._start = time.monotonic()

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
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
                # Rich would reroute sys.stdout into this stderr console: results must stay on stdout.
                redirect_stdout=False,
                redirect_stderr=False,  # our own stderr lines go through `line`
            )
            self._progress.start()
            self._task = self._progress.add_task("batch", total=None, records=0, rate=0.0, flagged=0, errors=0)
        return self

    def update(self, counts: Any) -> None:
        """Show the counts so far (an object with records, flagged and errors attributes)."""
        if self._progress is not None:
            rate = counts.records / max(1e-9, time.monotonic() - self._start)
            self._progress.update(self._task, records=counts.records, rate=rate,
                                  flagged=counts.flagged, errors=counts.errors)

    def line(self, text: str) -> None:
        """Write one line on stderr, above the bar when it is shown, never wrapped or styled."""
        if self._progress is not None:
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
