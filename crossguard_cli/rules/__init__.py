"""Rules: the schema of a rules file, safe YAML with line numbers, validation, in-place edits."""

from __future__ import annotations

from crossguard_cli.rules.schema import (
    DEFAULT_RULES_SOURCE,
    LABELS,
    MODES,
    Rule,
    RuleSet,
    check_hypothesis_lengths,
    default_rules_path,
    load_rules,
    parse_rules,
    rules_from_mapping,
    summarize,
)

__all__ = [
    "DEFAULT_RULES_SOURCE", "LABELS", "MODES", "Rule", "RuleSet", "check_hypothesis_lengths",
    "default_rules_path", "load_rules", "parse_rules", "rules_from_mapping", "summarize",
]
