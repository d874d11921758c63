"""`crossguard eval`: labelled records + scored records -> a per-rule and overall report.

The CLI wires it one of two ways, reading the labels first (labels.py) so a bad label fails
before any model loads:

    labelled = read_labelled(path, rule_names, parse_maps(map_specs, rule_names))
    pairs = pair_in_order(labelled, guard_outputs)                          # scored by the model now
    pairs = join_scores(labelled.labelled, read_objects(scores, bad), scores)  # or `--scores scored.jsonl`
    report = build_report(pairs, ruleset.rules, target_precision=0.95)

Decisions are recomputed from the scores with the rules' current thresholds and margins, by
`decide.rule_state` itself, so an old `batch` output can be re-judged under new thresholds
without running the model. A rule's score is its deciding percentage / 100 (`scores[rule][rule.score_field]`:
the NLI label, or "probability" for a classifier rule). Records
whose status is not "ok" (error, empty) are counted as skipped. "Overall" compares "any rule
fired" with the record's expected verdict, over the rules the labels speak about (see
`build_report`); its threshold-free score is the record's highest probability among those
rules, so its suggested thresholds are values for `--threshold` (which overrides every rule).
With `target_accuracy`, per-rule abstention bands come too (band_report.py, bands.py); with
`holdout`, thresholds and bands are tuned on the other records and every figure is measured on
the held-out ones. What to do with a report (tuned rules file, plots) lives in tune.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from crossguard_cli.engine.decide import rule_state
from crossguard_cli.errors import InputError, UsageError
from crossguard_cli.evaluation import band_report as br
from crossguard_cli.evaluation import bands as bd
from crossguard_cli.evaluation import metrics
from crossguard_cli.evaluation.labels import Pair

OVERALL_CURVE = "overall (any rule)"  # key of the overall curve in Report.curves; never a rule name


@dataclass
class Row(metrics.Summary):
    """One report line: a rule, or "overall" (label, threshold and margin None: each rule's own)."""

    name: str = ""
    label: str | None = None
    threshold: float | None = None  # the threshold evaluated
    margin: float | None = None


@dataclass
class Report:
    rules: list[Row]
    overall: Row
    target_precision: float
    records: int  # labelled records
    scored: int  # of which scored ("ok")
    skipped: int  # error or empty, left out
    overall_rules: list[str]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    holdout: float | None = None  # the fraction held out; None: figures are in-sample
    tuned_on: int = 0  # scored records thresholds (and bands) were tuned on
    measured_on: int = 0  # scored records the figures are measured on (all of them without holdout)
    bands: br.BandReport | None = None  # with --target-accuracy


def _score(out: Mapping[str, Any], rule: Any, where: str) -> float:
    key = rule.score_field
    try:
        pct = out["scores"][rule.name][key]
    except (KeyError, TypeError):
        raise InputError(f"its scored record has no {key} score for rule {rule.name!r}; "
                         "score with the same rules file", where) from None
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise InputError(f"scores.{rule.name}.{key}: expected a percentage, got {pct!r}", where)
    return round(pct / 100, 10)  # 87.31 -> 0.8731, the same float as the YAML text "0.8731"


def _abstain(out: Mapping[str, Any], rule: Any, where: str) -> float | None:
    """The abstention head's uncertain probability (0-1) of the rule's deciding pair, if scored."""
    pct = out["scores"][rule.name].get("abstain")
    if pct is None:
        return None
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise InputError(f"scores.{rule.name}.abstain: expected a percentage, got {pct!r}", where)
    return pct / 100


def build_report(pairs: Sequence[Pair], rules: Sequence[Any], *, target_precision: float = 0.95,
                 overall_rules: Sequence[str] | None = None, target_accuracy: float | None = None,
                 holdout: float | None = None) -> Report:
    """Metrics per rule (records with a known label for it) and overall; bands with `target_accuracy`.

    Overall uses the rules that some record has a label for (all rules when labels are only
    `"expected"` verdicts): with `--map` to four rules, a fifth rule firing is not counted
    against data that never labelled it. Records whose overall truth is unknown are left out.
    With `holdout` (a fraction), thresholds and bands are tuned on the other records and every
    figure is measured on the held-out ones (`bands.holdout_mask`: by id, else source and line).
    """
    if not 0.0 < target_precision <= 1.0:
        raise UsageError(f"must be in (0, 1], got {target_precision}", "--target-precision")
    if target_accuracy is not None and not 0.0 < target_accuracy <= 1.0:
        raise UsageError(f"must be in (0, 1], got {target_accuracy:g}", "--target-accuracy")
    ok = [(rec, out) for rec, out in pairs if out.get("status") == "ok"]
    s = np.array([[_score(out, r, rec.where) for r in rules] for rec, out in ok], dtype=np.float64)
    s = s.reshape(len(ok), len(rules))
    held = np.ones(len(ok), dtype=bool)  # measured on; tuned on `tuned`
    tuned = held
    if holdout is not None:
        held = bd.holdout_mask([f"id:{rec.id}" if rec.id is not None else rec.where for rec, _ in ok], holdout)
        tuned = ~held
        if ok and (held.all() or not held.any()):
            raise UsageError(f"{holdout:g} of {len(ok)} scored records leaves {'no' if held.all() else 'none'} "
                             f"record to {'tune on' if held.all() else 'measure on'}; give more records or "
                             "another fraction", "--holdout")
    # Current decisions exactly as `batch` takes them (decide works on the printed percentage); a
    # rule whose abstention head abstains (an `abstain` score, heads models only) is uncertain.
    states = np.array([[rule_state(r, p, _abstain(out, r, rec.where)) for r, p in zip(rules, row, strict=True)]
                       for row, (rec, out) in zip(s, ok, strict=True)], dtype="U9")
    states = states.reshape(s.shape)
    fired, near = states == "fired", states == "uncertain"
    rows, curves, band_rows = [], {}, []
    for j, rule in enumerate(rules):
        known = np.array([rule.name in rec.labels for rec, _ in ok], dtype=bool)
        y = np.array([rec.labels[rule.name] for rec, _ in ok if rule.name in rec.labels], dtype=bool)
        m, t = held[known], tuned[known]
        summary = _summary(s[known, j], y, fired[known, j], near[known, j], target_precision, m, t)
        rows.append(Row(**asdict(summary), name=rule.name, label=rule.label, threshold=rule.threshold,
                        margin=rule.margin))
        curves[rule.name] = (s[known, j][m], y[m])
        if target_accuracy is not None:
            kept = [(rec, out) for (rec, out), k in zip(ok, known, strict=True) if k]
            head = br.head_scores([out for _, out in kept], rule, [rec.where for rec, _ in kept])
            band_rows.append(br.build_row(rule, s[known, j], y, head, t, m, target_accuracy))
    if overall_rules is None:
        labelled = {name for rec, _ in ok for name in rec.labels}
        overall_rules = [r.name for r in rules if r.name in labelled] or [r.name for r in rules]
    chosen = set(overall_rules)
    cols = [j for j, r in enumerate(rules) if r.name in chosen]
    known = np.array([rec.expected is not None for rec, _ in ok], dtype=bool)
    y = np.array([rec.expected for rec, _ in ok if rec.expected is not None], dtype=bool)
    any_fired = fired[:, cols].any(axis=1)
    top = s[:, cols].max(axis=1) if cols else np.zeros(len(ok))
    summary = _summary(top[known], y, any_fired[known], (~any_fired & near[:, cols].any(axis=1))[known],
                       target_precision, held[known], tuned[known])
    overall = Row(**asdict(summary), name="overall")
    curves[OVERALL_CURVE] = (top[known][held[known]], y[held[known]])
    bands = None if target_accuracy is None else br.BandReport(target_accuracy, holdout, int(tuned.sum()),
                                                               int(held.sum()), band_rows)
    return Report(rows, overall, target_precision, len(pairs), len(ok), len(pairs) - len(ok),
                  [rules[j].name for j in cols], curves, holdout, int(tuned.sum()), int(held.sum()), bands)


def _summary(s: np.ndarray, y: np.ndarray, fired: np.ndarray, near: np.ndarray, target_precision: float,
             measure: np.ndarray, tune: np.ndarray) -> metrics.Summary:
    """`metrics.summarize` on the measured records, its suggested thresholds found on the tuning
    records (the same records without --holdout), and their F1 / recall measured where the rest is."""
    summary = metrics.summarize(s[measure], y[measure], fired[measure], near[measure], target_precision)
    if measure is tune or (measure == tune).all():
        return summary
    best_t, _ = metrics.best_f1_threshold(s[tune], y[tune])
    target_t, _ = metrics.target_precision_threshold(s[tune], y[tune], target_precision)

    def at(t: float | None) -> metrics.Confusion | None:
        return None if t is None else metrics.confusion_from_predictions(s[measure] >= t, y[measure])

    best, target = at(best_t), at(target_t)
    return replace(summary, best_f1_threshold=best_t, best_f1=None if best is None else metrics.f1(best),
                   target_precision_threshold=target_t,
                   target_precision_recall=None if target is None else metrics.recall(target))


_THRESHOLD_FIELDS = ("threshold", "best_f1_threshold", "target_precision_threshold")


def report_to_json(report: Report) -> dict[str, Any]:
    """The `--format json` document. Metrics rounded to 4 places; thresholds exact; null = undefined."""
    def row(r: Row) -> dict[str, Any]:
        d = {"name": r.name, "label": r.label, "threshold": r.threshold, "margin": r.margin, **asdict(r)}
        return {k: (round(v, 4) if isinstance(v, float) and k not in _THRESHOLD_FIELDS else v) for k, v in d.items()}
    doc = {"records": report.records, "scored": report.scored, "skipped": report.skipped,
           "target_precision": report.target_precision, "overall_rules": report.overall_rules,
           "holdout": report.holdout, "in_sample": report.holdout is None, "tuned_on": report.tuned_on,
           "measured_on": report.measured_on, "rules": [row(r) for r in report.rules], "overall": row(report.overall)}
    if report.bands is not None:
        doc["bands"] = br.band_to_json(report.bands)
    return doc


def report_rows(report: Report) -> list[dict[str, str]]:
    """Display-ready rows (header -> text) for the Rich table: rules, then overall."""
    def num(v: float | None, places: int = 3) -> str:
        return "-" if v is None else f"{v:.{places}f}"

    def at(t: float | None, v: float | None) -> str:
        return "-" if t is None else f"{t:.4f} ({num(v)})"

    return [{"rule": r.name, "n": str(r.n), "support": str(r.support),
             "threshold": "per rule" if r.label is None else num(r.threshold, 4),
             "precision": num(r.precision), "recall": num(r.recall), "F1": num(r.f1), "FPR": num(r.fpr),
             "AP": num(r.ap), "best-F1 t (F1)": at(r.best_f1_threshold, r.best_f1),
             f"P>={report.target_precision:g} t (recall)": at(r.target_precision_threshold,
                                                             r.target_precision_recall),
             "uncertain": "-" if r.uncertain_rate is None else f"{r.uncertain_rate:.1%}",
             "confident acc": num(r.confident_accuracy)}
            for r in [*report.rules, report.overall]]
