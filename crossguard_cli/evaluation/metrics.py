"""Threshold metrics for `crossguard eval`: pure numpy, no I/O, no model.

Everything takes `scores` (the deciding-label probability per record, 0..1) and `labels`
(True = the rule should fire) for the records whose label is known; callers drop unknown
labels first. A rule fires when `score >= threshold`, the same comparison `decide` uses, so a
threshold taken from this module reproduces its metrics exactly when applied.

Undefined values are `None` (JSON null), never 0.0 or NaN: precision with no predicted
positives, recall and average precision with no positives, false-positive rate with no
negatives. Reporting 0.0 there would read as "bad" when the truth is "not measurable".
F1 is `2tp / (2tp + fp + fn)`, which is 0.0 when there are positives but none is found, and
`None` only when there are neither positives nor predicted positives.

Threshold searches run over the distinct score values (ties form one threshold, as in
scikit-learn), and return the score value itself, so `p >= t` reproduces the reported figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Confusion:
    """Counts of one decision against known labels."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn


def _arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} != {y.size}")
    return s, y


def confusion_from_predictions(predicted: ArrayLike, labels: ArrayLike) -> Confusion:
    """Counts for boolean decisions made elsewhere (e.g. 'any rule fired')."""
    p = np.asarray(predicted, dtype=bool).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {p.size} != {y.size}")
    return Confusion(tp=int(np.sum(p & y)), fp=int(np.sum(p & ~y)),
                     fn=int(np.sum(~p & y)), tn=int(np.sum(~p & ~y)))


def precision(c: Confusion) -> float | None:
    """tp / (tp + fp); None when nothing was predicted positive."""
    return c.tp / (c.tp + c.fp) if c.tp + c.fp else None


def recall(c: Confusion) -> float | None:
    """tp / (tp + fn); None when there are no positives."""
    return c.tp / c.positives if c.positives else None


def f1(c: Confusion) -> float | None:
    """2tp / (2tp + fp + fn); None only with neither positives nor predicted positives."""
    denominator = 2 * c.tp + c.fp + c.fn
    return 2 * c.tp / denominator if denominator else None


def fpr(c: Confusion) -> float | None:
    """fp / (fp + tn); None when there are no negatives."""
    return c.fp / c.negatives if c.negatives else None


def accuracy(c: Confusion) -> float | None:
    """(tp + tn) / n; None for no records."""
    return (c.tp + c.tn) / c.n if c.n else None


def _sweep(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Distinct thresholds (descending) with tp and fp counts at `score >= threshold`."""
    s, y = _arrays(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(y)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return s[last_of_tie], tps, fps, int(y.sum())


def pr_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), one point per distinct score, thresholds descending.

    Recall is all zeros when there are no positives (callers plot nothing then).
    """
    thresholds, tps, fps, positives = _sweep(scores, labels)
    prec = tps / np.maximum(tps + fps, 1)
    rec = tps / positives if positives else np.zeros_like(prec, dtype=np.float64)
    return prec, rec, thresholds


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float | None:
    """Threshold-free summary, computed as scikit-learn does: sum of (R_n - R_{n-1}) * P_n.

    Steps over distinct thresholds (tied scores enter together, no interpolation).
    None when there are no positives.
    """
    prec, rec, _ = pr_curve(scores, labels)
    if not rec.size or rec[-1] == 0:
        return None
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def best_f1_threshold(scores: ArrayLike, labels: ArrayLike) -> tuple[float | None, float | None]:
    """(threshold, F1) maximising F1 over the distinct score values.

    Ties in F1 go to the higher threshold (fewer alerts for the same F1). The threshold is a
    score value, so `score >= threshold` gives exactly the F1 returned. (None, None) when
    there are no positives: nothing to tune for.
    """
    thresholds, tps, fps, positives = _sweep(scores, labels)
    if not positives:
        return None, None
    f1s = 2 * tps / (tps + fps + positives)  # 2tp / (2tp + fp + fn), fn = positives - tp
    best = int(np.argmax(f1s))  # first maximum = highest threshold
    return float(thresholds[best]), float(f1s[best])


def target_precision_threshold(
    scores: ArrayLike, labels: ArrayLike, target: float
) -> tuple[float | None, float | None]:
    """(threshold, recall) for the lowest threshold whose precision is >= `target`.

    The lowest such threshold has the highest recall. (None, None) when no threshold reaches
    the target (or there are no positives).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    thresholds, tps, fps, positives = _sweep(scores, labels)
    if not positives:
        return None, None
    ok = np.flatnonzero(tps / (tps + fps) >= target)
    if not ok.size:
        return None, None
    i = int(ok[-1])
    return float(thresholds[i]), float(tps[i] / positives)


def uncertain_mask(scores: ArrayLike, threshold: float, margin: float) -> np.ndarray:
    """Records that did not fire but lie within `margin` below the threshold.

    The very rule `batch` applies (`decide.state`), so eval and batch can never disagree.
    Broadcasts: a (records, rules) matrix with per-rule threshold and margin vectors works.
    """
    from crossguard_cli.engine.decide import state

    s = np.asarray(scores, dtype=np.float64)
    return np.vectorize(lambda p, t, m: state(p, t, m) == "uncertain", otypes=[bool])(s, threshold, margin)


def abstention_from_decisions(
    predicted: ArrayLike, uncertain: ArrayLike, labels: ArrayLike
) -> tuple[float | None, float | None]:
    """(uncertain rate, accuracy on the records that were not uncertain).

    What abstention buys: compare the confident accuracy with plain accuracy. None for no
    records, or no confident records.
    """
    u = np.asarray(uncertain, dtype=bool).reshape(-1)
    if not u.size:
        return None, None
    keep = ~u
    c = confusion_from_predictions(np.asarray(predicted, dtype=bool)[keep], np.asarray(labels, bool)[keep])
    return float(u.mean()), accuracy(c)


@dataclass
class Summary:
    """Every figure `crossguard eval` reports for one decision against known labels."""

    n: int  # records with a known label
    support: int  # positives among them
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    fpr: float | None
    accuracy: float | None
    ap: float | None
    best_f1_threshold: float | None
    best_f1: float | None
    target_precision_threshold: float | None
    target_precision_recall: float | None
    uncertain_rate: float | None
    confident_accuracy: float | None


def summarize(scores: ArrayLike, labels: ArrayLike, fired: ArrayLike, uncertain: ArrayLike,
              target_precision: float) -> Summary:
    """All figures at once. `fired`/`uncertain` are the current decisions (for one rule,
    `scores >= threshold` and `uncertain_mask`); `scores` drive the threshold-free figures."""
    s, y = _arrays(scores, labels)
    c = confusion_from_predictions(fired, y)
    best_t, best_f = best_f1_threshold(s, y)
    target_t, target_r = target_precision_threshold(s, y, target_precision)
    unc, conf = abstention_from_decisions(fired, uncertain, y)
    return Summary(c.n, c.positives, c.tp, c.fp, c.fn, c.tn, precision(c), recall(c), f1(c), fpr(c),
                   accuracy(c), average_precision(s, y), best_t, best_f, target_t, target_r, unc, conf)
