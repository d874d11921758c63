"""From every pair's probabilities to each prompt's rule scores: best window, then best hypothesis.

Vectorised: at GPU speeds (tens of thousands of pairs a second) a per-pair Python loop here
would cost more than the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from crossguard_cli.rules import LABELS, RuleSet

LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}  # E, N, C: the column order of scores


class RuleScore(NamedTuple):
    """E/N/C probabilities (0-1) of a rule's deciding pair: its best hypothesis and window.

    A named tuple: a group of 1,024 prompts makes some 13,000 of these, and a frozen
    dataclass's constructor cost more than the rest of the reduction.
    """

    entailment: float
    neutral: float
    contradiction: float
    hypothesis: int = 0
    abstain: float | None = None  # the abstention head's uncertain probability of the same pair

    def prob(self, label: str) -> float:
        return getattr(self, label)

    def fields(self) -> dict[str, float]:
        """The record's fields of this score: E/N/C probabilities (0-1), and `abstain` when the
        model has abstention heads."""
        out = {"entailment": self.entailment, "neutral": self.neutral, "contradiction": self.contradiction}
        if self.abstain is not None:
            out["abstain"] = self.abstain
        return out


class ClassScore(NamedTuple):
    """A classifier rule's probability (0-1) of its column, in the prompt's best window."""

    probability: float

    def prob(self, field: str = "probability") -> float:
        return self.probability

    def fields(self) -> dict[str, float]:
        return {"probability": self.probability}


@dataclass(frozen=True)
class PromptScores:
    """Everything the scorer knows about one prompt."""

    rules: dict[str, RuleScore]
    windows: int
    truncated: bool
    error: str | None = None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (half-precision logits are upcast first, as `predict` does)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def best_scores(ruleset: RuleSet, n_prompts: int, prompt: np.ndarray, hypothesis: np.ndarray, probs: np.ndarray,
                failed: np.ndarray, cut: np.ndarray, dtype: object) -> list[PromptScores]:
    """Each prompt's scores from its pairs' E/N/C probabilities.

    A window is chosen separately for each deciding label, so a hypothesis shared by an
    entailment rule and a contradiction rule gives each its own best window; ties go to the
    earliest window, then the first hypothesis of the rule. A prompt with a pair that failed
    (out of memory alone) or gave a non-finite score is an error, never "allowed".

    Args:
        ruleset: the rules; hypothesis indices are positions in `ruleset.hypotheses`.
        n_prompts: prompts in the group.
        prompt, hypothesis: per pair, whose it is; pairs of one (prompt, hypothesis) in window order.
        probs: per pair, E/N/C probabilities, and a 4th column (the abstention head's uncertain
            probability) that travels with the chosen pair but never chooses it.
        failed: per pair, whether it could not be scored.
        cut: per prompt, whether windows were dropped (truncation).
        dtype: the model's dtype, named in the non-finite error.
    """
    n_hyp = len(ruleset.hypotheses)
    n_pairs = len(prompt)
    bad = np.zeros(n_prompts, dtype=bool)
    bad[prompt[failed]] = True
    # Overflow in half precision gives NaN; a guardrail must never read that as "allowed".
    finite = np.isfinite(probs).all(axis=1)
    nonfinite = np.zeros(n_prompts, dtype=bool)
    nonfinite[prompt[~finite]] = True
    usable = ~(failed | ~finite)
    # Pairs come grouped by (prompt, hypothesis), windows in order: each cell is a run of rows.
    cell = prompt * n_hyp + hypothesis
    clean = np.where(usable[:, None], probs, -1.0)  # a prompt with an unusable pair is an error anyway
    width = probs.shape[1]
    best = np.full((n_prompts * n_hyp, 3, width), -1.0)  # [prompt x hypothesis, deciding label, E/N/C(/U)]
    windows = np.zeros(n_prompts * n_hyp, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]]) if n_pairs else np.zeros(0, dtype=np.int64)
    if len(starts) == n_pairs:  # one window a cell (prompts that fit): each pair is its cell's best
        windows[cell] = 1
        best[cell] = clean[:, None, :]
    else:
        counts = np.diff(np.r_[starts, n_pairs])
        windows[cell[starts]] = counts
        run_of = np.repeat(np.arange(len(starts)), counts)
        for lab in range(3):
            top = np.maximum.reduceat(clean[:, lab], starts)
            hit = np.flatnonzero(clean[:, lab] == top[run_of])
            first = hit[np.r_[True, run_of[hit[1:]] != run_of[hit[:-1]]]] if len(hit) else hit  # earliest best
            best[cell[first], lab] = clean[first]
    best = best.reshape(n_prompts, n_hyp, 3, width)
    idx, lab, valid = _rule_table(ruleset)
    # Every rule at once: its hypotheses' deciding-label probabilities, padding slots below any score.
    deciding = best[:, idx, lab[:, None], lab[:, None]]  # [prompt, rule, slot]
    deciding[:, ~valid] = -2.0
    pos = np.argmax(deciding, axis=2)  # first best hypothesis on a tie
    chosen = idx[np.arange(len(lab)), pos]  # [prompt, rule]: hypothesis index
    enc = best[np.arange(n_prompts)[:, None], chosen, lab[None, :]]  # [prompt, rule, E/N/C(/U)]
    names = [rule.name for rule in ruleset.rules]
    k = windows.reshape(n_prompts, n_hyp).max(axis=1, initial=1).tolist()
    values, positions = enc.tolist(), pos.tolist()
    results = []
    for p in range(n_prompts):
        if bad[p] or nonfinite[p]:
            why = ("out of memory scoring this prompt even one pair at a time" if bad[p] else
                   f"the model gave non-finite scores in {dtype}; try --dtype float32")
            results.append(PromptScores({}, k[p], bool(cut[p]), why))
            continue
        rules = {name: RuleScore(v[0], v[1], v[2], h, v[3] if width > 3 else None)
                 for name, v, h in zip(names, values[p], positions[p], strict=True)}
        results.append(PromptScores(rules, k[p], bool(cut[p])))
    return results


_TABLES: dict[int, tuple[RuleSet, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}


def _rule_table(ruleset: RuleSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rule: its hypotheses' indices (padded to the longest rule), its label's column, and
    which slots are real. Built once per rule set: a group's reduction must not walk the rules."""
    cached = _TABLES.get(id(ruleset))
    if cached is not None and cached[0] is ruleset:
        return cached[1]
    hyps = ruleset.hypotheses
    rules = ruleset.rules
    width = max((len(rule.hypotheses) for rule in rules), default=1)
    idx = np.zeros((len(rules), width), dtype=np.int64)
    valid = np.zeros((len(rules), width), dtype=bool)
    for r, rule in enumerate(rules):
        row = [hyps.index(h) for h in rule.hypotheses]
        idx[r, : len(row)] = row
        valid[r, : len(row)] = True
    lab = np.asarray([LABEL_INDEX[rule.label] for rule in rules], dtype=np.int64)
    if len(_TABLES) > 64:  # rule sets come and go with reloads: keep the cache small
        _TABLES.clear()
    _TABLES[id(ruleset)] = (ruleset, (idx, lab, valid))
    return idx, lab, valid


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic in float64, stable for large |x|."""
    z = logits.astype(np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def best_classes(names: list[str], columns: list[int], n_prompts: int, prompt: np.ndarray, probs: np.ndarray,
                 failed: np.ndarray, windows: np.ndarray, cut: np.ndarray, dtype: object) -> list[PromptScores]:
    """Each prompt's classifier-rule scores: per rule, its column's highest probability over the
    prompt's windows. A failed or non-finite window makes the prompt an error, never "allowed".

    Args:
        names, columns: per rule, its name and the probability column it decides on.
        prompt: per window row, the prompt index; probs: per row, every column's probability.
        failed: per row, whether it could not be scored; windows: per prompt, its window count.
    """
    usable = ~failed & np.isfinite(probs).all(axis=1)
    bad = np.zeros(n_prompts, dtype=bool)
    bad[prompt[failed]] = True
    nonfinite = np.zeros(n_prompts, dtype=bool)
    nonfinite[prompt[~np.isfinite(probs).all(axis=1)]] = True
    best = np.full((n_prompts, probs.shape[1]), -1.0)
    if len(prompt):
        np.maximum.at(best, prompt[usable], probs[usable])
    picked = best[:, columns].tolist() if columns else [[] for _ in range(n_prompts)]
    results = []
    for p in range(n_prompts):
        k, truncated = int(windows[p]), bool(cut[p])
        if bad[p] or nonfinite[p]:
            why = ("out of memory scoring this prompt even one window at a time" if bad[p] else
                   f"the classifier gave non-finite scores in {dtype}; try --dtype float32")
            results.append(PromptScores({}, k, truncated, why))
        else:
            results.append(PromptScores(dict(zip(names, map(ClassScore, picked[p]), strict=True)), k, truncated))
    return results


__all__ = ["LABEL_INDEX", "ClassScore", "PromptScores", "RuleScore", "best_classes", "best_scores", "sigmoid",
           "softmax"]
