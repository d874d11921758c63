"""Wiring the stages from options: rules -> model -> scorer.

Shared by `check`, `batch` and `eval`, so the three commands resolve the model and apply
overrides the same way: `--model` (or `CROSSGUARD_MODEL`) beats the rules file's `model:`,
which beats the default CrossingGuard model.
"""

from __future__ import annotations

import os

from crossguard_cli import DEFAULT_MODEL
from crossguard_cli.rules import RuleSet, load_rules


def quiet_libraries() -> None:
    """Silence library chatter (loading bars, advisory warnings): stderr is for our own lines."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import warnings

    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", module="sentence_transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def resolve_rules(rules_path: str | None, threshold: float | None) -> RuleSet:
    ruleset = load_rules(rules_path)
    return ruleset.with_threshold(threshold) if threshold is not None else ruleset


def _rules_model(ruleset: RuleSet, rules_path: str | None) -> str | None:
    """The rules file's `model:`; a relative folder is found beside the rules file, like an include."""
    name = ruleset.model
    if name and rules_path and not os.path.isabs(name):
        beside = os.path.join(os.path.dirname(rules_path), name)
        if os.path.isdir(beside):
            return beside
    return name


def build_scorer(
    *,
    rules_path: str | None,
    model: str | None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    max_length: int = 512,
    max_chars: int = 50_000,
    threshold: float | None = None,
    long_input: str = "window",
    backend: str = "torch",
    ruleset: RuleSet | None = None,
):
    """Load the rules, then the model, and return a ready `Scorer`.

    Rules load first: a broken rules file is reported before a model is downloaded. A caller
    that has already loaded them (eval reads them before the labels) passes `ruleset`.
    """
    ruleset = ruleset or resolve_rules(rules_path, threshold)
    quiet_libraries()
    from crossguard_cli.model import load_model
    from crossguard_cli.scorer import Scorer

    name = model or _rules_model(ruleset, rules_path) or DEFAULT_MODEL
    loaded = load_model(name, revision=revision, device=device, dtype=dtype, max_length=max_length,
                        backend=backend)
    return Scorer(loaded, ruleset, long_input=long_input, max_chars=max_chars, batch_size=batch_size)
