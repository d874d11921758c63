"""Error kinds that users see.

Every error the user can cause is a `CrossguardError`: the CLI turns it into exactly one
line, `crossguard: error: WHERE: WHAT`, and exit code 2. Modules raise the kind that fits;
only the CLI prints. Messages say what to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: object, choices: Iterable[str], *, list_choices: bool = False) -> str:
    """A "; did you mean 'x'?" suffix for a typo, or the valid choices when nothing is close."""
    choices = list(choices)
    close = difflib.get_close_matches(str(word).lower(), choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(choices)}" if list_choices else ""


class CrossguardError(Exception):
    """A user-facing error: one line, with an optional location (file:line: field)."""

    exit_code = 2

    def __init__(self, what: str, where: str | None = None) -> None:
        self.what = " ".join(str(what).split())  # one line, whatever the cause said
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


class UsageError(CrossguardError):
    """Bad option values or combinations."""


class RulesError(CrossguardError):
    """A rules file that cannot be used as written."""


class ModelError(CrossguardError):
    """A model that cannot be loaded or is not a 3-label NLI model."""


class InputError(CrossguardError):
    """Input that cannot be read at all (per-record problems become error records instead)."""


class OutputError(CrossguardError):
    """Results that cannot be written (disk full, closed pipe handled separately)."""
