"""`crossguard eval --target-accuracy`: per-rule abstention bands, beside a plain confidence cut
and (with an abstention-heads model) the model's own head, in the figures its card reports.

A band is tuned on the tuning records (all of them, or the rest after `--holdout`) and every
figure is measured on the held-out records (all of them, in-sample, without `--holdout`). The
confidence cut abstains on as many measured records as the band does, those closest to the
plain threshold, so band and cut are compared at the same coverage. The head abstains where a
record's `scores[rule]["abstain"]` (percent) reaches the rule's `abstain` threshold; its
figures are read only when every measured record carries that score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossguard_cli.engine.decide import abstains as decide_abstains
from crossguard_cli.engine.decide import state
from crossguard_cli.errors import InputError
from crossguard_cli.evaluation import bands as bd
from crossguard_cli.rules import DEFAULT_ABSTAIN

METHODS = (("band", "band"), ("cut", "confidence cut"), ("head", "abstention head"),
           ("head_cut", "confidence cut at the head's coverage"))


@dataclass
class BandRow:
    """One rule: its band (or why none), and the figures of each way of abstaining."""

    name: str
    threshold: float  # the plain threshold the errors are counted against
    positives: int  # labelled positives / negatives among the tuning records
    negatives: int
    band: bd.Band | None = None  # tuned; its decided / correct are on the tuning records
    reason: str | None = None  # why there is no band
    short_reason: str | None = None  # the same for a table cell
    abstain_threshold: float | None = None  # set when the records carry the head's score
    figures: dict[str, bd.Abstention | None] = field(default_factory=dict)  # keys of METHODS
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)


@dataclass
class BandReport:
    target_accuracy: float
    holdout: float | None  # the fraction held out; None: in-sample
    tuned_on: int  # scored records the bands were tuned on
    measured_on: int  # scored records the figures are measured on
    rules: list[BandRow]

    @property
    def in_sample(self) -> bool:
        return self.holdout is None


def head_scores(outs: Sequence[Mapping[str, Any]], rule: Any, wheres: Sequence[str]) -> np.ndarray | None:
    """Each record's abstention-head percentage for `rule`, or None when some record has none."""
    values = []
    for out, where in zip(outs, wheres, strict=True):
        pct = (out.get("scores") or {}).get(rule.name, {}).get("abstain")
        if pct is None:
            return None
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
            raise InputError(f"scores.{rule.name}.abstain: expected a percentage, got {pct!r}", where)
        values.append(float(pct))
    return np.array(values, dtype=np.float64)


def _plain_fired(probs: np.ndarray, threshold: float) -> np.ndarray:
    return np.array([state(p, threshold, 0.0) == "fired" for p in probs], dtype=bool)


def build_row(rule: Any, probs: np.ndarray, labels: np.ndarray, head: np.ndarray | None,
              tune: np.ndarray, measure: np.ndarray, target: float) -> BandRow:
    """Tune `rule`'s band on `tune` records and measure every figure on `measure` records.

    `probs` (0..1), `labels`, `head` (percent or None) and both masks cover the records whose
    label for this rule is known.
    """
    ticks = bd.to_ticks(probs)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y[tune].sum()), int((~y[tune]).sum())
    row = BandRow(rule.name, rule.threshold, pos, neg)
    t_m, y_m = ticks[measure], y[measure]
    plain = _plain_fired(probs[measure], rule.threshold)
    if min(pos, neg) < bd.MIN_PER_CLASS:
        row.reason = (f"too few labelled records to tune on: {pos} positive and {neg} negative; "
                      f"a band needs at least {bd.MIN_PER_CLASS} of each")
        row.short_reason = f"too few labels ({pos}+ {neg}-; needs {bd.MIN_PER_CLASS} each)"
    else:
        row.band = bd.search_band(ticks[tune], y[tune], target)
        if row.band is None:
            row.reason = f"no band reaches accuracy {target:g} on the tuning records"
            row.short_reason = f"none reaches {target:g}"
    if row.band is not None:
        uncertain, fired = bd.band_mask(t_m, row.band)
        row.figures["band"] = bd.figures(uncertain, fired, y_m, plain)
        row.figures["cut"] = bd.figures(bd.confidence_cut(t_m, rule.threshold, int(uncertain.sum())), plain, y_m,
                                        plain)
    if head is not None and y_m.size:
        row.abstain_threshold = DEFAULT_ABSTAIN if rule.abstain is None else rule.abstain
        abstains = np.array([decide_abstains(rule, pct / 100) for pct in head[measure]], dtype=bool)
        row.figures["head"] = bd.figures(abstains, plain, y_m, plain)
        row.figures["head_cut"] = bd.figures(bd.confidence_cut(t_m, rule.threshold, int(abstains.sum())), plain,
                                             y_m, plain)
        row.curves["abstention head"] = bd.risk_coverage(-head[measure], plain == y_m)
    row.curves["confidence cut"] = bd.risk_coverage(bd.distance(t_m, rule.threshold), plain == y_m)
    return row


def band_to_json(report: BandReport) -> dict[str, Any]:
    """The `bands` part of `--format json`: every figure, null where undefined."""
    def row(r: BandRow) -> dict[str, Any]:
        band = None if r.band is None else {
            "low": r.band.low / bd.TICKS, "high": r.band.high / bd.TICKS, "threshold": r.band.threshold,
            "margin": r.band.margin, "tuned_coverage": round(r.band.coverage, 4),
            "tuned_accuracy": None if r.band.accuracy is None else round(r.band.accuracy, 4)}
        figures = {key: (None if r.figures.get(key) is None else r.figures[key].to_json()) for key, _ in METHODS}
        return {"name": r.name, "threshold": r.threshold, "tuned_positives": r.positives,
                "tuned_negatives": r.negatives, "band": band, "reason": r.reason,
                "abstain_threshold": r.abstain_threshold, "figures": figures}

    return {"target_accuracy": report.target_accuracy, "holdout": report.holdout, "in_sample": report.in_sample,
            "tuned_on": report.tuned_on, "measured_on": report.measured_on, "rules": [row(r) for r in report.rules]}


def band_rows(report: BandReport) -> list[dict[str, str]]:
    """Display rows (header -> text): one per rule and way of abstaining; a rule without a band says why."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    rows = []
    for r in report.rules:
        if r.positives + r.negatives == 0 and not any(r.figures.values()):
            continue  # a rule the labels say nothing about, as in the main table
        if r.band is None:
            rows.append({"rule": r.name, "method": "band", "abstains on": f"no band: {r.short_reason}", "coverage": "-",
                         "accuracy": "-", "errors caught": "-", "abst. precision": "-"})
        for key, method in METHODS:
            fig = r.figures.get(key)
            if fig is None:
                continue
            if key == "band" and r.band.low == r.band.high:
                how = f"nothing; fires at >= {r.band.threshold:.4f}"
            elif key == "band":
                how = f"[{r.band.low / bd.TICKS:.4f}, {r.band.high / bd.TICKS:.4f})"
            elif key == "head":
                how = f"abstain >= {r.abstain_threshold:g}"
            else:
                how = f"{fig.abstained} closest to {r.threshold:g}"
            rows.append({"rule": r.name, "method": method, "abstains on": how, "coverage": pct(fig.coverage),
                         "accuracy": pct(fig.accuracy), "errors caught": pct(fig.errors_caught),
                         "abst. precision": pct(fig.precision)})
    return rows
