"""Abstention bands learned from labels: the search, the figures the model card reports, the split.

A band [low, high) of a rule's deciding probability is where the rule says "uncertain"; below
it the rule is clear, at or above it the rule fires. `search_band` finds, among all bands, the
one that decides the most records (the highest coverage) while the decided records reach a
target accuracy. It is written into a rules file as `threshold: high` and a margin a little
wider than `high - low`, so that `decide.state` (uncertain when `threshold - pct < margin`)
gives exactly the band's decisions.

Everything works in *ticks*: a printed percentage has two decimals, so a score is an integer
number of 0.01 % steps, 0..10,000, and decisions on printed scores are exact integer
comparisons. Band ends are score values (the low end at a score makes that score uncertain),
plus 10,000 (1.0) for "nothing fires". Pure numpy, no model, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from crossguard_cli.engine.decide import percent

TICKS = 10_000  # 1.0 as a number of printed 0.01 % steps
MIN_PER_CLASS = 20  # fewer labelled positives or negatives than this: no band (the search would fit noise)


def to_ticks(probs: ArrayLike) -> np.ndarray:
    """Probabilities (0..1) -> printed-percentage steps, rounded exactly as `decide` rounds them."""
    return np.array([round(percent(p) * 100) for p in np.asarray(probs, dtype=np.float64).reshape(-1)],
                    dtype=np.int64)


@dataclass(frozen=True)
class Band:
    """Uncertain when `low <= ticks < high`; fires at `high` and above; `low == high`: no band."""

    low: int
    high: int
    decided: int  # records outside the band, among the records searched
    correct: int  # of which decided right
    n: int

    @property
    def threshold(self) -> float:
        return self.high / TICKS

    @property
    def margin(self) -> float:
        """The margin that reproduces the band under `decide.state`: `high - low` plus half a step.

        `decide` says uncertain when `threshold - pct < margin`, strictly; with half a printed step
        more, a score exactly at `low` is uncertain and the one a step below it is clear.
        """
        return 0.0 if self.low == self.high else (self.high - self.low + 0.5) / TICKS

    @property
    def coverage(self) -> float:
        return self.decided / self.n if self.n else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.decided if self.decided else None


def search_band(ticks: ArrayLike, labels: ArrayLike, target: float) -> Band | None:
    """The band with the most decided records whose accuracy on them is >= `target`.

    Ends are taken from the distinct scores (and 10,000): every other band decides the same
    records as one of these. Among bands of equal coverage the most correct wins, then the
    narrowest, then the lowest. None when no band decides any record at the target accuracy.
    Acceptance is `correct / decided >= target` in floating point, as a reader would check it.
    O(m^2) in the distinct scores (at most 10,001 of them), vectorised per upper end.
    """
    t = np.asarray(ticks, dtype=np.int64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if t.shape != y.shape:
        raise ValueError(f"ticks and labels differ in length: {t.size} != {y.size}")
    if not t.size:
        return None
    values = np.unique(t)
    cand = values if values[-1] == TICKS else np.r_[values, TICKS]
    below = np.searchsorted(np.sort(t), cand, side="left")  # records clear when the band starts here
    neg_below = np.searchsorted(np.sort(t[~y]), cand, side="left")  # ... of which rightly clear
    pos_below = np.searchsorted(np.sort(t[y]), cand, side="left")
    n, positives = t.size, int(y.sum())
    best: tuple[int, int, int, int] | None = None
    for j, high in enumerate(cand):
        fired, fired_right = n - below[j], positives - pos_below[j]
        decided = below[: j + 1] + fired
        correct = neg_below[: j + 1] + fired_right
        ok = (decided > 0) & (correct / np.maximum(decided, 1) >= target)
        ok &= high - cand[: j + 1] < TICKS  # a margin must stay below 1
        hits = np.flatnonzero(ok)
        if not hits.size:
            continue
        i = int(hits[-1])  # the highest low end decides the most records for this high end
        key = (int(decided[i]), int(correct[i]), -int(high - cand[i]), -int(high))
        if best is None or key > best:
            best = key
    if best is None:
        return None
    decided, correct, width, high = best[0], best[1], -best[2], -best[3]
    return Band(high - width, high, decided, correct, n)


@dataclass(frozen=True)
class Abstention:
    """What abstaining on some records buys against the plain threshold: the card's figures."""

    n: int
    abstained: int
    correct: int  # decided records decided right
    errors: int  # the plain threshold's errors, on all n records
    caught: int  # of which abstained on

    @property
    def decided(self) -> int:
        return self.n - self.abstained

    @property
    def coverage(self) -> float | None:
        return self.decided / self.n if self.n else None

    @property
    def accuracy(self) -> float | None:
        """Accuracy on the decided records."""
        return self.correct / self.decided if self.decided else None

    @property
    def errors_caught(self) -> float | None:
        """Share of the plain threshold's errors that were abstained on."""
        return self.caught / self.errors if self.errors else None

    @property
    def precision(self) -> float | None:
        """Abstention precision: share of the abstained records the plain threshold got wrong."""
        return self.caught / self.abstained if self.abstained else None

    def to_json(self) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {"n": self.n, "decided": self.decided, "abstained": self.abstained, "coverage": r(self.coverage),
                "accuracy": r(self.accuracy), "errors_caught": r(self.errors_caught),
                "abstention_precision": r(self.precision), "errors": self.errors, "caught": self.caught}


def figures(abstained: ArrayLike, fired: ArrayLike, labels: ArrayLike, plain_fired: ArrayLike) -> Abstention:
    """Figures for abstaining on `abstained` and deciding the rest by `fired`; errors are counted
    against the plain threshold's decisions `plain_fired`, as the card counts the NLI head's."""
    a, f, y, p = (np.asarray(v, dtype=bool).reshape(-1) for v in (abstained, fired, labels, plain_fired))
    wrong = p != y
    return Abstention(n=int(y.size), abstained=int(a.sum()), correct=int(np.sum(~a & (f == y))),
                      errors=int(wrong.sum()), caught=int(np.sum(a & wrong)))


def band_mask(ticks: ArrayLike, band: Band) -> tuple[np.ndarray, np.ndarray]:
    """(uncertain, fired) of each record under `band`."""
    t = np.asarray(ticks, dtype=np.int64).reshape(-1)
    return (t >= band.low) & (t < band.high), t >= band.high


def distance(ticks: ArrayLike, threshold: float) -> np.ndarray:
    """|pct - threshold %| in printed steps: how far a record is from the plain threshold."""
    return np.abs(np.asarray(ticks, dtype=np.float64) - round(threshold * 100.0, 6) * 100.0)


def confidence_cut(ticks: ArrayLike, threshold: float, count: int) -> np.ndarray:
    """The plain confidence cut: abstain on the `count` records closest to the threshold
    (smallest |p - t|, ties in record order), so it can be set beside a band of the same coverage."""
    d = distance(ticks, threshold)
    mask = np.zeros(d.size, dtype=bool)
    mask[np.argsort(d, kind="stable")[:count]] = True
    return mask


def risk_coverage(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) when deciding the most confident records first (ties in record order):
    risk is the error rate on the decided records; one point per record count 1..n."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if not c.size:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-c, kind="stable")
    k = np.arange(1, c.size + 1)
    return k / c.size, np.cumsum(~ok[order]) / k


def holdout_mask(keys: Sequence[str], fraction: float) -> np.ndarray:
    """True for held-out records: a hash of each record's key (its id, else source and line), so the
    split is the same on every run and machine and does not move when records are added or reordered."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    return np.array([int.from_bytes(hashlib.sha256(k.encode("utf-8")).digest()[:8], "big") < fraction * 2**64
                     for k in keys], dtype=bool)
