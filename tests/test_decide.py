"""Decisions from probabilities: thresholds, margins (abstention) and route mode."""

from __future__ import annotations

import pytest

from crossguard_cli.engine.decide import decide, rule_state
from crossguard_cli.rules import parse_rules

RULES = """
version: 1
mode: {mode}
defaults: {{threshold: 0.5, margin: 0.1}}
rules:
  - name: a
    hypothesis: The prompt is about a.
  - name: b
    hypothesis: The prompt is about b.
    label: contradiction
  - name: c
    hypothesis: The prompt is about c.
    label: neutral
    threshold: 0.8
    margin: 0.0
"""


def ruleset(mode="guard"):
    return parse_rules(RULES.format(mode=mode), "r.yaml")


@pytest.mark.parametrize("p,state", [
    (0.5, "fired"), (0.9, "fired"), (0.4999, "uncertain"), (0.41, "uncertain"),
    (0.4, "clear"),  # exactly margin below the threshold is not uncertain (|p - t| < margin)
    (0.3999, "clear"), (0.0, "clear"),
    (0.49996, "fired"),  # decided on the printed percentage: 50.00 >= 50
])
def test_rule_state_threshold_and_margin(p, state):
    assert rule_state(ruleset().rules[0], p) == state


def test_zero_margin_never_uncertain():
    rule = ruleset().rules[2]
    assert rule_state(rule, 0.7999) == "clear" and rule_state(rule, 0.8) == "fired"


def test_fired_beats_uncertain_in_the_verdict():
    d = decide(ruleset(), {"a": 0.45, "b": 0.6, "c": 0.1})
    assert d.verdict == "flagged" and d.flagged == ["b"] and d.uncertain == ["a"] and d.route is None


def test_uncertain_verdict_when_nothing_fires():
    d = decide(ruleset(), {"a": 0.45, "b": 0.1, "c": 0.1})
    assert d.verdict == "uncertain" and d.flagged == [] and d.uncertain == ["a"]


def test_allowed_when_all_clear():
    d = decide(ruleset(), {"a": 0.1, "b": 0.1, "c": 0.1})
    assert d.verdict == "allowed" and d.flagged == d.uncertain == []


def test_route_picks_the_highest_fired_probability_whatever_its_label():
    d = decide(ruleset("route"), {"a": 0.6, "b": 0.7, "c": 0.95})
    assert d.flagged == ["a", "b", "c"] and d.route == "c"


def test_route_tie_goes_to_the_first_rule_in_the_file():
    d = decide(ruleset("route"), {"a": 0.9, "b": 0.9, "c": 0.1})
    assert d.route == "a"
    d = decide(ruleset("route"), {"a": 0.1, "b": 0.9, "c": 0.9})
    assert d.route == "b"


def test_route_is_none_when_nothing_fires():
    d = decide(ruleset("route"), {"a": 0.45, "b": 0.1, "c": 0.1})
    assert d.route is None and d.verdict == "uncertain"
