"""crossguard: zero-shot prompt guardrails with NLI cross-encoders.

Importing the package is cheap on purpose (no torch): `crossguard --help` and
`crossguard validate` must stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

DEFAULT_MODEL = "dleemiller/crossingguard-nli-m"

__all__ = ["DEFAULT_MODEL", "__version__"]
