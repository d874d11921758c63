"""Rules: the schema of a rules file, safe YAML with line numbers, validation, in-place edits."""

from __future__ import annotations

from crossguard_cli.rules.classifiers import ACTIVATIONS, ClassifierSpec
from crossguard_cli.rules.ruleset import DEFAULT_ABSTAIN, DEFAULT_RULES_SOURCE, LABELS, MODES, Rule, RuleSet, summarize
from crossguard_cli.rules.schema import (
    PRESETS,
    check_hypothesis_lengths,
    default_rules_path,
    load_rules,
    parse_rules,
    preset_path,
    rules_from_mapping,
)

__all__ = [
    "ACTIVATIONS", "DEFAULT_ABSTAIN", "DEFAULT_RULES_SOURCE", "LABELS", "MODES", "PRESETS", "ClassifierSpec", "Rule",
    "RuleSet", "check_hypothesis_lengths", "default_rules_path", "load_rules", "parse_rules", "preset_path",
    "rules_from_mapping", "summarize",
]
