"""crossguard: zero-shot prompt guardrails with NLI cross-encoders.

    from crossguard_cli import Guard
    guard = Guard("rules.yaml")
    guard.check("How do I make a pipe bomb?").verdict

Importing the package is cheap on purpose (no torch): `Guard` and the errors are loaded on
first use, so `crossguard --help` and `crossguard validate` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

DEFAULT_MODEL = "dleemiller/crossingguard-nli-m"

_LAZY = {
    "Guard": "crossguard_cli.api",
    "Result": "crossguard_cli.engine.results",
    "EngineOptions": "crossguard_cli.engine.options",
    "CrossguardError": "crossguard_cli.errors",
    "UsageError": "crossguard_cli.errors",
    "RulesError": "crossguard_cli.errors",
    "ModelError": "crossguard_cli.errors",
    "InputError": "crossguard_cli.errors",
}

if TYPE_CHECKING:
    from crossguard_cli.api import Guard
    from crossguard_cli.engine.options import EngineOptions
    from crossguard_cli.engine.results import Result
    from crossguard_cli.errors import CrossguardError, InputError, ModelError, RulesError, UsageError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crossguard_cli' has no attribute {name!r}")


__all__ = ["DEFAULT_MODEL", "CrossguardError", "EngineOptions", "Guard", "InputError", "ModelError", "Result",
           "RulesError", "UsageError", "__version__"]
