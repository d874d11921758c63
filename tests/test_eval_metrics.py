"""`crossguard eval`: metrics against brute-force recomputation, label formats, joins, tuning.

Every metric is recomputed here with plain loops over the records, never with the module's
helpers, so a shared mistake cannot hide.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from crossguard_cli.engine.decide import rule_state
from crossguard_cli.errors import InputError, RulesError, UsageError
from crossguard_cli.evaluation import labels as lb
from crossguard_cli.evaluation import metrics, tune
from crossguard_cli.evaluation import report as ev
from crossguard_cli.rules import Rule, edit, load_rules


# ---------------------------------------------------------------- brute force, written apart
def bf_counts(s, y, t):
    tp = fp = fn = tn = 0
    for score, label in zip(s, y, strict=True):
        fired = score >= t
        if fired and label:
            tp += 1
        elif fired:
            fp += 1
        elif label:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def bf_prf(s, y, t):
    tp, fp, fn, tn = bf_counts(s, y, t)
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    if p is not None and r is not None and p + r > 0:
        f = 2 * p * r / (p + r)
    elif tp + fn or tp + fp:
        f = 0.0  # positives exist (or alerts were raised) and none was right
    else:
        f = None
    fpr = fp / (fp + tn) if fp + tn else None
    return p, r, f, fpr


def bf_ap(s, y):
    positives = sum(y)
    if not positives:
        return None
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(s), reverse=True):
        tp, fp, _, _ = bf_counts(s, y, t)
        recall = tp / positives
        ap += (recall - previous_recall) * (tp / (tp + fp))
        previous_recall = recall
    return ap


def bf_best_f1(s, y):
    if not sum(y):
        return None, None
    best_t, best_f = None, -1.0
    for t in sorted(set(s), reverse=True):  # strictly better only: ties keep the higher threshold
        f = bf_prf(s, y, t)[2]
        if f > best_f + 1e-12:
            best_t, best_f = t, f
    return best_t, best_f


def bf_target(s, y, target):
    if not sum(y):
        return None, None
    for t in sorted(set(s)):  # lowest first
        tp, fp, fn, _ = bf_counts(s, y, t)
        if tp / (tp + fp) >= target - 1e-12:
            return t, tp / (tp + fn)
    return None, None


def bf_abstention(s, y, t, margin):
    exact = Fraction(repr(t))  # the decimals as written: 0.6 - 0.5 is not < 0.1
    uncertain = [score < t and exact - Fraction(repr(score)) < Fraction(repr(margin)) for score in s]
    if not s:
        return None, None
    confident = [(score >= t) == label for score, label, u in zip(s, y, uncertain, strict=True) if not u]
    return sum(uncertain) / len(s), (sum(confident) / len(confident) if confident else None)


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, abs_tol=1e-12)


TIES_S = [0.9, 0.8, 0.8, 0.8, 0.55, 0.5, 0.5, 0.3, 0.1, 0.1, 0.0, 0.8]
TIES_Y = [1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0]
DATASETS = {
    "ties": (TIES_S, TIES_Y),
    "no-positives": ([0.9, 0.4, 0.4, 0.1], [0, 0, 0, 0]),
    "no-negatives": ([0.7, 0.7, 0.2], [1, 1, 1]),
    "all-tied": ([0.5] * 5, [1, 0, 1, 0, 0]),
    "one": ([0.3], [1]),
    "empty": ([], []),
}


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.8, 0.85, 1.0])
def test_threshold_metrics_match_brute_force(name, t):
    s, y = DATASETS[name]
    y = [bool(v) for v in y]
    c = metrics.confusion_from_predictions(np.asarray(s) >= t, y)
    assert (c.tp, c.fp, c.fn, c.tn) == bf_counts(s, y, t)
    p, r, f, fpr = bf_prf(s, y, t)
    assert same(metrics.precision(c), p) and same(metrics.recall(c), r)
    assert same(metrics.f1(c), f) and same(metrics.fpr(c), fpr)
    for margin in (0.0, 0.05, 0.1, 0.3):
        got = metrics.abstention_from_decisions(np.asarray(s) >= t, metrics.uncertain_mask(s, t, margin), y)
        want = bf_abstention(s, y, t, margin)
        assert same(got[0], want[0]) and same(got[1], want[1])


@pytest.mark.parametrize("name", DATASETS)
def test_threshold_free_metrics_match_brute_force(name):
    s, y = DATASETS[name]
    y = [bool(v) for v in y]
    assert same(metrics.average_precision(s, y), bf_ap(s, y))
    got_t, got_f = metrics.best_f1_threshold(s, y)
    want_t, want_f = bf_best_f1(s, y)
    assert got_t == want_t and same(got_f, want_f)
    for target in (0.5, 0.75, 0.95, 1.0):
        got = metrics.target_precision_threshold(s, y, target)
        want = bf_target(s, y, target)
        assert got[0] == want[0] and same(got[1], want[1])


def test_uncertain_boundary_is_exact():
    # exactly `margin` below the threshold is not uncertain, whatever float subtraction says
    assert metrics.uncertain_mask([0.5, 0.5001, 0.0312, 0.0313], [0.6, 0.6, 0.0812, 0.0812],
                                  [0.1, 0.1, 0.05, 0.05]).tolist() == [False, True, False, True]


def test_average_precision_known_values():
    # scikit-learn's documented example, and a tie worked by hand:
    # threshold 0.8 -> tp 2, fp 1 (P 2/3, R 2/3); 0.3 -> tp 3, fp 2 (P 3/5, R 1): 2/3*2/3 + 1/3*3/5
    assert metrics.average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.8333333333)
    assert metrics.average_precision([0.8, 0.8, 0.8, 0.3, 0.3], [1, 1, 0, 1, 0]) == pytest.approx(
        (2 / 3) * (2 / 3) + (1 / 3) * (3 / 5))


def test_undefined_values_are_none_and_json_null():
    c = metrics.confusion_from_predictions([False, False], [False, False])
    assert metrics.precision(c) is None and metrics.recall(c) is None and metrics.f1(c) is None
    assert metrics.fpr(c) == 0.0
    assert metrics.f1(metrics.confusion_from_predictions([False, False], [True, False])) == 0.0  # none found
    assert metrics.best_f1_threshold([0.1], [False]) == (None, None)
    assert metrics.target_precision_threshold([0.9, 0.8], [False, True], 1.0) == (None, None)
    assert metrics.target_precision_threshold([0.9, 0.8], [False, True], 0.5) == (0.8, 1.0)
    assert metrics.target_precision_threshold([0.9, 0.8], [True, False], 1.0) == (0.9, 1.0)
    assert metrics.target_precision_threshold([0.9, 0.9], [True, False], 0.95) == (None, None)


def grid_scores(rng: random.Random, n: int) -> tuple[list[float], list[bool]]:
    """Scores as eval reads them: printed percentages (two decimals) / 100, many ties."""
    pcts = [round(rng.choice([rng.uniform(0, 100), rng.choice([12.5, 50.0, 87.31])]), 2) for _ in range(n)]
    labels = [rng.random() < 0.35 for _ in range(n)]
    return [round(p / 100, 10) for p in pcts], labels


@pytest.mark.parametrize("seed", range(8))
def test_suggested_threshold_reproduces_reported_f1(seed):
    s, y = grid_scores(random.Random(seed), 300)
    t, f = metrics.best_f1_threshold(s, y)
    assert metrics.f1(metrics.Confusion(*bf_counts(s, y, t))) == f  # applied as p >= t: the reported F1
    assert bf_prf(s, y, t)[2] == pytest.approx(f, abs=1e-12)
    assert f == pytest.approx(max(bf_prf(s, y, v)[2] for v in set(s)))
    # written to YAML and read back, the threshold is the same float...
    assert yaml.safe_load(f"threshold: {edit.format_threshold(t)}")["threshold"] == t
    # ...and `batch` (decide on printed percentages) fires on exactly the same records.
    rule = Rule(name="r", hypotheses=("h",), threshold=t)
    assert [rule_state(rule, v) == "fired" for v in s] == [v >= t for v in s]
    tt, recall = metrics.target_precision_threshold(s, y, 0.5)
    if tt is not None:
        tp, fp, fn, _ = bf_counts(s, y, tt)
        assert tp / (tp + fp) >= 0.5 and tp / (tp + fn) == recall


def test_format_threshold_is_positional_and_exact():
    for t in (0.0, 1.0, 0.8731, 1e-05, 0.123456789):
        text = edit.format_threshold(t)
        assert "e" not in text and yaml.safe_load(text) == t
    with pytest.raises(ValueError):
        edit.format_threshold(1.5)


# ---------------------------------------------------------------- label formats and --map
NAMES = ["weapons", "self-harm", "violence"]


def test_labels_list_format():
    rec = lb.labels_from_record({"id": 7, "labels": ["weapons"]}, NAMES, None, "l.jsonl:3", 3)
    assert rec.labels == {"weapons": True, "self-harm": False, "violence": False}
    assert rec.expected is True and rec.id == "7" and rec.line == 3
    safe = lb.labels_from_record({"labels": []}, NAMES, None, "l.jsonl:4", 4)
    assert safe.expected is False and not any(safe.labels.values()) and safe.id is None


def test_expected_format():
    rec = lb.labels_from_record({"expected": "allowed"}, NAMES, None, "l.jsonl:1", 1)
    assert rec.labels == {} and rec.expected is False
    assert lb.labels_from_record({"expected": "flagged"}, NAMES, None, "x:1", 1).expected is True


def test_map_format_absent_column_is_unknown():
    maps = lb.parse_maps(["SH=self-harm", "V=violence", "V2=violence"], NAMES)
    rec = lb.labels_from_record({"SH": 1, "V": 0}, NAMES, maps, "m:1", 1)
    assert rec.labels == {"self-harm": True} and rec.expected is True  # V2 absent: violence unknown
    rec = lb.labels_from_record({"SH": 0, "V": 0, "V2": None}, NAMES, maps, "m:2", 2)
    assert rec.labels == {"self-harm": False} and rec.expected is False  # known ones all negative
    rec = lb.labels_from_record({"SH": None, "other": 1}, NAMES, maps, "m:5", 5)
    assert rec.labels == {} and rec.expected is None  # nothing known: left out everywhere
    rec = lb.labels_from_record({"SH": 0, "V": 0, "V2": 1}, NAMES, maps, "m:3", 3)
    assert rec.labels == {"self-harm": False, "violence": True}
    rec = lb.labels_from_record({"SH": False, "V": 0, "V2": 0.0}, NAMES, maps, "m:4", 4)
    assert rec.labels == {"self-harm": False, "violence": False} and rec.expected is False


@pytest.mark.parametrize(("obj", "message"), [
    ({"labels": ["weapon"]}, "labels[0]: unknown rule 'weapon'; did you mean 'weapons'?"),
    ({"labels": "weapons"}, "labels: expected a list of rule names"),
    ({"expected": "blocked"}, "expected: must be \"flagged\" or \"allowed\""),
    ({"text": "hi"}, "no label"),
    ([1, 2], "expected a JSON object"),
])
def test_label_errors_name_line_and_field(obj, message):
    with pytest.raises(InputError) as err:
        lb.labels_from_record(obj, NAMES, None, "labelled.jsonl:9", 9)
    assert err.value.where == "labelled.jsonl:9" and message in err.value.what


def test_map_value_error():
    with pytest.raises(InputError, match="SH: expected 0 or 1") as err:
        lb.labels_from_record({"SH": "yes"}, NAMES, {"SH": "self-harm"}, "m.jsonl:2", 2)
    assert err.value.where == "m.jsonl:2"


@pytest.mark.parametrize(("spec", "message"), [
    ("SH", "expected KEY=RULE"),
    ("=self-harm", "expected KEY=RULE"),
    ("SH=", "expected KEY=RULE"),
    ("SH=self_harm", "unknown rule 'self_harm' in 'SH=self_harm'; did you mean 'self-harm'?"),
    ("X=zzz", "unknown rule 'zzz'"),
])
def test_map_errors(spec, message):
    with pytest.raises(UsageError) as err:
        lb.parse_maps([spec], NAMES)
    assert message in err.value.what and err.value.where == "--map"
    with pytest.raises(UsageError, match="mapped twice"):
        lb.parse_maps(["V=violence", "V=weapons"], NAMES)


def test_read_labelled_keeps_unreadable_records_in_place_and_reads_gzip(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"labels": []}\n\n{"labels": [\n{"expected": "allowed", "text": "x"}\n')
    data = lb.read_labelled(path, NAMES)
    assert [r.line for r in data.records] == [1, 3, 4]
    assert [t is None for t in data.truth] == [False, True, False]
    (bad,) = data.unreadable
    assert bad.line == 3 and bad.status == "error" and "invalid JSON" in bad.error
    assert [t.where for t in data.labelled] == [f"{path}:1", f"{path}:4"]
    gz = tmp_path / "l.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"labels": ["violence"]}\n\n{"expected": "allowed"}\n'))
    recs = lb.read_labelled(gz, NAMES).labelled
    assert [r.line for r in recs] == [1, 3] and recs[0].where == f"{gz}:1"
    with pytest.raises(InputError, match="cannot open"):
        lb.read_labelled(tmp_path / "missing.jsonl", NAMES)
    with pytest.raises(InputError, match="labels\\[0\\]: unknown rule"):  # a bad label still stops at once
        path.write_text('{"labels": ["violense"]}\n')
        lb.read_labelled(path, NAMES)


# ---------------------------------------------------------------- joins
def out(line, pct, *, id=None, status="ok", source="l.jsonl", rules=("weapons",)):
    rec = {"source": source, "line": line, "status": status}
    if id is not None:
        rec["id"] = id
    if status == "ok":
        rec["scores"] = {r: {"entailment": pct, "neutral": round(100 - pct, 2), "contradiction": 0.0}
                         for r in rules}
    return rec


def labelled(*specs):
    return [lb.LabelledRecord(f"l.jsonl:{line}", line, rid, {"weapons": bool(y)}, bool(y))
            for line, rid, y in specs]


def test_join_by_id_ignores_order_and_lines():
    lab = labelled((1, "a", 1), (2, "b", 0))
    pairs = lb.join_scores(lab, [(1, out(9, 10.0, id="b")), (2, out(8, 90.0, id="a"))], "s.jsonl")
    assert [(p[0].id, p[1]["id"]) for p in pairs] == [("a", "a"), ("b", "b")]


def test_join_by_line_when_ids_are_missing():
    lab = labelled((1, None, 1), (3, None, 0))
    pairs = lb.join_scores(lab, [(1, out(3, 10.0)), (2, out(1, 90.0))], "s.jsonl")
    assert [(p[0].line, p[1]["line"]) for p in pairs] == [(1, 1), (3, 3)]


def test_join_errors():
    lab = labelled((1, None, 1), (2, None, 0))
    no_line = out(1, 10.0)
    del no_line["line"]
    with pytest.raises(InputError, match="cannot match") as err:
        lb.join_scores(lab, [(1, no_line), (2, out(2, 5.0))], "s.jsonl")
    assert err.value.where == "s.jsonl"
    with pytest.raises(InputError, match="no record with line 2") as err:
        lb.join_scores(lab, [(1, out(1, 10.0))], "s.jsonl")
    assert err.value.where == "l.jsonl:2"
    with pytest.raises(InputError, match="line 5 is not in the labelled file") as err:
        lb.join_scores(lab, [(1, out(1, 1.0)), (2, out(2, 1.0)), (3, out(5, 1.0))], "s.jsonl")
    assert err.value.where == "s.jsonl:3"
    with pytest.raises(InputError, match="duplicate id 'a'") as err:
        lb.join_scores(labelled((1, "a", 1)), [(1, out(1, 1.0, id="a")), (4, out(2, 1.0, id="a"))], "s.jsonl")
    assert err.value.where == "s.jsonl:4"
    with pytest.raises(InputError, match="duplicate id 'a' \\(also at l.jsonl:1\\)") as err:
        lb.join_scores(labelled((1, "a", 1), (2, "a", 0)), [(1, out(1, 1.0, id="a"))], "s.jsonl")
    assert err.value.where == "l.jsonl:2"
    with pytest.raises(InputError, match="several sources"):
        lb.join_scores(lab, [(1, out(1, 1.0)), (2, out(2, 1.0, source="other.jsonl"))], "s.jsonl")


def test_pair_in_order_skips_unreadable_records_but_keeps_step():
    from crossguard_cli.records.inputs import Record

    truth = labelled((1, None, 1), (3, None, 0))
    records = [Record("l.jsonl", 1, text="a"), Record("l.jsonl", 2, error="invalid JSON"),
               Record("l.jsonl", 3, text="b")]
    lab = lb.LabelledFile(records, [truth[0], None, truth[1]])
    pairs = lb.pair_in_order(lab, [out(1, 1.0), out(2, 0, status="error"), out(3, 1.0)])
    assert [(t.line, o["line"]) for t, o in pairs] == [(1, 1), (3, 3)]
    with pytest.raises(InputError, match="out of step"):
        lb.pair_in_order(lab, [out(2, 1.0), out(1, 1.0), out(3, 1.0)])
    with pytest.raises(InputError, match="no scored record"):
        lb.pair_in_order(lab, [out(1, 1.0)])
    with pytest.raises(InputError, match="more scored records"):
        lb.pair_in_order(lab, [out(1, 1.0), out(2, 1.0), out(3, 1.0), out(4, 1.0)])


# ---------------------------------------------------------------- the report
def test_report_matches_brute_force_with_unknowns_and_skips():
    rng = random.Random(5)
    rules = [Rule("weapons", ("h",), threshold=0.6, margin=0.1),
             Rule("violence", ("h",), label="neutral", threshold=0.3, margin=0.0),
             Rule("spam", ("h",), threshold=0.5)]  # never labelled: left out of overall
    maps = lb.parse_maps(["W=weapons", "V=violence"], ["weapons", "violence", "spam"])
    pairs, truth = [], []
    for line in range(1, 121):
        obj = {k: rng.choice([0, 1, None]) for k in ("W", "V")}
        rec = lb.labels_from_record({k: v for k, v in obj.items() if v is not None},
                                    ["weapons", "violence", "spam"], maps, f"l:{line}", line)
        status = "error" if line % 17 == 0 else "ok"
        w, v, sp = (round(rng.choice([rng.uniform(0, 100), 60.0, 50.0, 70.0]), 2) for _ in range(3))
        o = {"line": line, "status": status}
        if status == "ok":
            o["scores"] = {"weapons": {"entailment": w, "neutral": 0, "contradiction": 0},
                           "violence": {"entailment": 0, "neutral": v, "contradiction": 0},
                           "spam": {"entailment": sp, "neutral": 0, "contradiction": 0}}
            truth.append((obj, *(float(Fraction(repr(pct)) / 100) for pct in (w, v, sp))))  # exact decimals
        pairs.append((rec, o))
    report = ev.build_report(pairs, rules, target_precision=0.8)
    assert (report.records, report.skipped, report.scored) == (120, 7, 113)
    assert report.overall_rules == ["weapons", "violence"]
    for row, key, col, rule in ((report.rules[0], "W", 1, rules[0]), (report.rules[1], "V", 2, rules[1])):
        s = [t[col] for t in truth if t[0][key] is not None]
        y = [t[0][key] == 1 for t in truth if t[0][key] is not None]
        assert row.n == len(s) and row.support == sum(y)
        p, r, f, fpr = bf_prf(s, y, rule.threshold)
        assert same(row.precision, p) and same(row.recall, r) and same(row.f1, f) and same(row.fpr, fpr)
        assert same(row.ap, bf_ap(s, y))
        best_t, best_f = bf_best_f1(s, y)
        assert row.best_f1_threshold == best_t and same(row.best_f1, best_f)
        assert bf_prf(s, y, row.best_f1_threshold)[2] == pytest.approx(row.best_f1, abs=1e-12)
        assert (row.target_precision_threshold, row.target_precision_recall) == pytest.approx(
            bf_target(s, y, 0.8))
        unc, conf = bf_abstention(s, y, rule.threshold, rule.margin)
        assert same(row.uncertain_rate, unc) and same(row.confident_accuracy, conf)
    assert report.rules[2].n == 0 and report.rules[2].precision is None and report.rules[2].ap is None
    # overall: known when W or V is known (flagged if either is 1); predicted = weapons or violence fired
    known = [t for t in truth if set(t[0].values()) != {None}]
    y = [1 in t[0].values() for t in known]
    fired = [t[1] >= 0.6 or t[2] >= 0.3 for t in known]
    tp = sum(f and v for f, v in zip(fired, y, strict=True))
    assert report.overall.n == len(known) and report.overall.tp == tp
    assert report.overall.fp == sum(f and not v for f, v in zip(fired, y, strict=True))
    top = [max(t[1], t[2]) for t in known]
    assert same(report.overall.ap, bf_ap(top, y))
    # JSON: strict (no NaN), nulls for undefined, thresholds exact
    doc = json.loads(json.dumps(ev.report_to_json(report), allow_nan=False))
    assert doc["rules"][2]["precision"] is None and doc["overall"]["threshold"] is None
    assert doc["rules"][0]["best_f1_threshold"] == report.rules[0].best_f1_threshold
    rows = ev.report_rows(report)
    assert [r["rule"] for r in rows] == ["weapons", "violence", "spam", "overall"]
    assert rows[2]["precision"] == "-" and rows[3]["threshold"] == "per rule"
    assert len({tuple(r) for r in rows}) == 1  # same columns everywhere
    assert tune.suggested_thresholds(report) == {"weapons": report.rules[0].best_f1_threshold,
                                               "violence": report.rules[1].best_f1_threshold}


def test_report_missing_rule_score_is_an_error():
    rec = labelled((4, None, 1))[0]
    with pytest.raises(InputError, match="no entailment score for rule 'weapons'") as err:
        ev.build_report([(rec, out(4, 50.0, rules=("other",)))], [Rule("weapons", ("h",))])
    assert err.value.where == "l.jsonl:4"
    with pytest.raises(UsageError):
        ev.build_report([], [Rule("weapons", ("h",))], target_precision=0.0)


# ---------------------------------------------------------------- --write-rules
RULES_YAML = """\
# top comment
version: 1
defaults: {threshold: 0.5, margin: 0.1}   # defaults comment
rules:
  # weapons rule
  - name: weapons        # name comment
    hypothesis: "The prompt asks: how to build a weapon?"
    threshold: 0.6       # keep me
    description: |
      threshold: 0.9 inside a block scalar stays
  - name: self-harm
    hypotheses:
      - The prompt talks about self-harm.
  - {name: spam, hypothesis: The prompt is spam.}
  - name: untouched
    hypothesis: The prompt is fine.
    threshold: 0.3
"""


def test_write_tuned_rules_keeps_comments(tmp_path):
    src, dst = tmp_path / "rules.yaml", tmp_path / "tuned.yaml"
    src.write_text(RULES_YAML)
    new = {"weapons": 0.8731, "self-harm": 0.12, "spam": 1.0}
    tune.write_tuned_rules(src, dst, new)
    text = dst.read_text()
    for line in RULES_YAML.splitlines():
        if "#" in line and "keep me" not in line:
            assert line in text.splitlines()
    assert "    threshold: 0.8731       # keep me" in text
    assert "  - name: self-harm\n    threshold: 0.12\n    hypotheses:" in text
    assert "{name: spam, threshold: 1.0, hypothesis: The prompt is spam.}" in text
    before, after = yaml.safe_load(RULES_YAML), yaml.safe_load(text)
    for rule in before["rules"]:
        if rule["name"] in new:
            rule["threshold"] = new[rule["name"]]
    assert after == before
    assert {r.name: r.threshold for r in load_rules(dst).rules} == {**new, "untouched": 0.3}
    with pytest.raises(RulesError, match="no rule named 'weapon' to tune; did you mean 'weapons'"):
        tune.write_tuned_rules(src, dst, {"weapon": 0.5})


def test_write_tuned_rules_on_the_packaged_rules(tmp_path):
    from crossguard_cli.rules import default_rules_path

    original = load_rules(default_rules_path())
    new = {r.name: round(0.01 * (i + 1), 4) for i, r in enumerate(original.rules)}
    tune.write_tuned_rules(default_rules_path(), tmp_path / "t.yaml", new)
    tuned = load_rules(tmp_path / "t.yaml")
    assert {r.name: r.threshold for r in tuned.rules} == new
    assert [(r.hypotheses, r.label, r.margin, r.description) for r in tuned.rules] == [
        (r.hypotheses, r.label, r.margin, r.description) for r in original.rules]
    old_text, new_text = default_rules_path().read_text(), (tmp_path / "t.yaml").read_text()
    changed = set(new_text.splitlines()) - set(old_text.splitlines())
    assert all(line.strip().startswith("threshold: ") for line in changed)
    assert set(old_text.splitlines()) - set(new_text.splitlines()) == {"    threshold: 0.4"}


# ---------------------------------------------------------------- --plot
def test_plot_needs_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError) as err:
        tune.plot_pr({"a": (np.array([0.5]), np.array([True]))}, tmp_path / "pr.png")
    assert str(err.value) == "--plot needs matplotlib: pip install 'crossguard[plot]'"


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    s, y = grid_scores(random.Random(1), 50)
    tune.plot_pr({"a": (np.array(s), np.array(y)), "none": (np.array([0.1]), np.array([False]))},
               tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- the OpenAI moderation set
def moderation_file() -> Path:
    root = os.environ.get("CROSSGUARD_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    path = base / "openai-moderation-1680.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not found (set CROSSGUARD_SHARED_DATA)")
    return path


def evaluate_scores_file(labelled_path, scores_path, rules, map_specs):
    """`crossguard eval LABELLED --scores SCORED` without the CLI: the calls it makes, no model."""
    names = [r.name for r in rules]
    labelled = lb.read_labelled(labelled_path, names, lb.parse_maps(map_specs, names))
    unreadable: list = []
    pairs = lb.join_scores(labelled.labelled, lb.read_objects(scores_path, unreadable), str(scores_path))
    assert not unreadable and not labelled.unreadable
    return ev.build_report(pairs, rules, target_precision=0.9)


def test_openai_moderation_end_to_end(tmp_path):
    path = moderation_file()
    keys = {"S": "sexual", "H": "hate", "V": "violence", "SH": "self-harm"}
    rules = [Rule(name, ("h",), threshold=0.5, margin=0.05) for name in keys.values()]
    specs = [f"{k}={v}" for k, v in keys.items()]
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    rng = np.random.default_rng(0)
    scored = tmp_path / "scored.jsonl"
    with scored.open("w") as f:  # synthetic scores, nudged up for positives so AP is not chance
        for line, obj in enumerate(raw, 1):
            pcts = {v: float(np.round(np.clip(rng.uniform(0, 80) + 20 * (obj.get(k) == 1), 0, 100), 2))
                    for k, v in keys.items()}
            scores = {v: {"entailment": p, "neutral": 0.0, "contradiction": round(100 - p, 2)}
                      for v, p in pcts.items()}
            f.write(json.dumps({"source": str(path), "line": line, "status": "ok", "scores": scores}) + "\n")
    report = evaluate_scores_file(path, scored, rules, specs)
    assert report.records == len(raw) == 1680 and report.skipped == 0
    for row in report.rules:
        key = next(k for k, v in keys.items() if v == row.name)
        present = [o[key] for o in raw if key in o]
        assert row.n == len(present) and row.support == sum(present)
        assert row.ap > row.support / row.n  # better than chance with the nudge
    known = [o for o in raw if any(k in o for k in keys)]
    assert report.overall.n == len(known) and report.overall.support == sum(1 in map(o.get, keys) for o in known)
    json.dumps(ev.report_to_json(report), allow_nan=False)
    assert len(ev.report_rows(report)) == 5
    # the full loop: write the best-F1 thresholds, load them as `batch` would, evaluate again
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("version: 1\ndefaults: {margin: 0.05}\nrules:\n" + "".join(
        f"  - name: {name}  # keep\n    hypothesis: The prompt is about {name}.\n" for name in keys.values()))
    tune.write_tuned_rules(rules_file, tmp_path / "tuned.yaml", tune.suggested_thresholds(report))
    tuned = load_rules(tmp_path / "tuned.yaml").rules
    again = evaluate_scores_file(path, scored, tuned, specs)
    assert [r.f1 for r in again.rules] == [r.best_f1 for r in report.rules]
    assert [r.threshold for r in again.rules] == [r.best_f1_threshold for r in report.rules]


def test_write_tuned_rules_refuses_an_edit_it_cannot_verify(tmp_path):
    """A name given through an alias points the text edit at the anchor's line, in another rule:
    the edit is caught by re-parsing and refused; no file is written and no comment is lost."""
    src, dst = tmp_path / "rules.yaml", tmp_path / "tuned.yaml"
    src.write_text("version: 1  # keep\nrules:\n  - description: &nm spam\n    name: weapons\n    hypothesis: h\n"
                   "  - hypothesis: h2\n    name: *nm\n")
    assert [r.name for r in load_rules(src).rules] == ["weapons", "spam"]
    with pytest.raises(RulesError, match="cannot set the thresholds in this file's text.*nothing written"):
        tune.write_tuned_rules(src, dst, {"spam": 0.25})
    assert not dst.exists()


def test_set_thresholds_crlf_and_last_line():
    text = "rules:\r\n  - hypothesis: h\r\n    name: a # x\r\n  - hypothesis: h\r\n    name: b"
    assert edit.set_thresholds(text, {"a": 0.25, "b": 0.5}) == (
        "rules:\r\n  - hypothesis: h\r\n    name: a # x\r\n    threshold: 0.25\r\n"
        "  - hypothesis: h\r\n    name: b\r\n    threshold: 0.5")
