"""From probabilities to decisions: thresholds, margins (abstention) and route mode.

Pure functions, no I/O. Decisions are taken on the percentage exactly as it is printed
(two decimals), so anyone holding an output record can reproduce its decisions, and a
threshold tuned by `crossguard eval` on printed scores behaves the same in `batch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crossguard_cli.rules import DEFAULT_ABSTAIN, Rule, RuleSet


def percent(p: float) -> float:
    """A probability as the percentage crossguard prints: 0-100, two decimals."""
    return round(float(p) * 100.0, 2)


@dataclass(frozen=True)
class Decision:
    """What the rules made of one prompt's scores."""

    verdict: str
    flagged: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    route: str | None = None


def state(prob: float, threshold: float, margin: float) -> str:
    """'fired' (p >= threshold), 'uncertain' (not fired, |p - threshold| < margin) or 'clear'.

    Compared on printed percentages, rounded so that float noise (0.6 - 0.5 > 0.1 in binary)
    never moves a decision.
    """
    pct = percent(prob)
    limit = round(threshold * 100.0, 6)
    if pct >= limit:
        return "fired"
    if margin > 0 and round(limit - pct, 6) < round(margin * 100.0, 6):
        return "uncertain"
    return "clear"


def abstains(rule: Rule, abstain: float | None) -> bool:
    """Whether the abstention head's uncertain probability (0-1) reaches the rule's `abstain`
    threshold (default 0.5), compared on printed percentages as every threshold is."""
    if abstain is None:
        return False
    limit = rule.abstain if rule.abstain is not None else DEFAULT_ABSTAIN
    return percent(abstain) >= round(limit * 100.0, 6)


def rule_state(rule: Rule, prob: float, abstain: float | None = None) -> str:
    """'fired', 'uncertain' or 'clear' for one rule given its deciding-label probability; a rule
    whose deciding pair abstains is 'uncertain' whatever its probability (it never fires)."""
    if abstains(rule, abstain):
        return "uncertain"
    return state(prob, rule.threshold, rule.margin)


def decide(ruleset: RuleSet, probs: Mapping[str, float], abstain: Mapping[str, float | None] | None = None
           ) -> Decision:
    """Decide a prompt from each rule's deciding-label probability (0-1).

    Args:
        ruleset: the rules, in file order (order breaks ties in route mode).
        probs: rule name -> probability of that rule's deciding label.
        abstain: rule name -> the abstention head's uncertain probability of its deciding pair
            (a model with learned-abstention heads), else None.

    Returns:
        The verdict (`flagged` when any rule fired, else `uncertain` when any rule sits
        within its margin below the threshold, else `allowed`), the rules in each state,
        and in route mode the fired rule with the highest probability (first in file on a tie).
    """
    flagged, uncertain = [], []
    route, route_pct = None, -1.0
    for rule in ruleset.rules:
        state = rule_state(rule, probs[rule.name], abstain.get(rule.name) if abstain else None)
        if state == "fired":
            flagged.append(rule.name)
            pct = percent(probs[rule.name])
            if pct > route_pct:
                route, route_pct = rule.name, pct
        elif state == "uncertain":
            uncertain.append(rule.name)
    verdict = "flagged" if flagged else "uncertain" if uncertain else "allowed"
    return Decision(verdict, flagged, uncertain, route if ruleset.mode == "route" else None)
