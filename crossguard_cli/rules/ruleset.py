"""What a validated rules file is: `Rule` and `RuleSet`, the values every stage reads.

Kept apart from the loading and validation (schema.py) so that readers of rules (the scorer,
decisions, writers) depend on the shape, not on YAML parsing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossguard_cli.rules.classifiers import ClassifierSpec

LABELS = ("entailment", "neutral", "contradiction")
MODES = ("guard", "route")
DEFAULT_RULES_SOURCE = "<default rules>"
DEFAULT_ABSTAIN = 0.5  # a rule of a model with abstention heads abstains at this uncertain probability


@dataclass(frozen=True)
class Rule:
    """One rule: fires when its deciding label's probability reaches `threshold`.

    The rule's score is that of its highest-scoring hypothesis. `line` and `hypothesis_lines`
    let later checks (hypothesis length needs the model's tokenizer) still point at the file;
    `hypothesis_key` says which key the file used, so those messages name the right field.
    """

    name: str
    hypotheses: tuple[str, ...]
    label: str = "entailment"
    threshold: float = 0.5
    margin: float = 0.0
    description: str | None = None
    line: int | None = None
    hypothesis_lines: tuple[int | None, ...] = ()
    hypothesis_key: str = "hypotheses"
    classifier: str | None = None
    label_index: int | None = None  # a classifier rule's label given as a column index
    label_line: int | None = None  # where a classifier rule's label is, for errors found at load
    abstain: float | None = None  # set in the file: the model must have abstention heads
    abstain_line: int | None = None  # where it was set (the rule's key, or defaults')

    @property
    def score_field(self) -> str:
        """The key of this rule's deciding probability in a record's `scores[name]`: its NLI label,
        or "probability" for a classifier rule."""
        return "probability" if self.classifier else self.label


@dataclass(frozen=True)
class RuleSet:
    """A validated rules file. `source` is the path as the user gave it, for messages."""

    rules: tuple[Rule, ...]
    mode: str = "guard"
    model: str | None = None
    version: int = 1
    source: str = DEFAULT_RULES_SOURCE
    classifiers: tuple[ClassifierSpec, ...] = ()

    @property
    def nli_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.classifier is None)

    def classifier(self, name: str) -> ClassifierSpec:
        return next(c for c in self.classifiers if c.name == name)

    def subset(self, rules: Sequence[Rule]) -> RuleSet:
        """The same file's settings with only `rules` (one model's share of a mixed file)."""
        return dataclasses.replace(self, rules=tuple(rules))

    def with_threshold(self, threshold: float) -> RuleSet:
        """Return a copy in which every rule uses `threshold` (the `--threshold` option)."""
        if isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
        rules = tuple(dataclasses.replace(r, threshold=float(threshold)) for r in self.rules)
        return dataclasses.replace(self, rules=rules)

    @functools.cached_property
    def hypotheses(self) -> tuple[str, ...]:
        """Every distinct hypothesis in file order: each is scored once per prompt, however
        many rules share it. (Computed once: the service sizes every request with it.)"""
        return tuple(dict.fromkeys(h for rule in self.rules for h in rule.hypotheses))

    @property
    def used_classifiers(self) -> tuple[ClassifierSpec, ...]:
        """The classifiers some rule uses, in file order: only these are loaded."""
        used = {r.classifier for r in self.rules}
        return tuple(c for c in self.classifiers if c.name in used)


def summarize(ruleset: RuleSet) -> list[dict[str, Any]]:
    """One row per rule, for `crossguard validate` to print."""
    return [
        {"name": r.name, "label": r.label, "threshold": r.threshold, "margin": r.margin,
         "hypotheses": len(r.hypotheses), "classifier": r.classifier}
        for r in ruleset.rules
    ]


__all__ = ["DEFAULT_ABSTAIN", "DEFAULT_RULES_SOURCE", "LABELS", "MODES", "Rule", "RuleSet", "summarize"]
