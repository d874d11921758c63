"""`crossguard eval --target-accuracy`: abstention bands against a brute force, the figures, the split.

The band search is checked against a brute force written apart (plain loops over every pair of
distinct scores), and the written rules against `decide` itself, so a band found is a band
applied. Most CLI runs use `--scores` files (no model); one runs the random-weight test model,
whose figures say nothing about any rule: only that tuning and applying agree.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from crossguard_cli.engine.decide import state
from crossguard_cli.evaluation import band_report as br
from crossguard_cli.evaluation import bands as bd
from crossguard_cli.rules import Rule, load_rules
from crossguard_cli.rules.edit import format_threshold

RULES_YAML = """\
# band test rules
version: 1
defaults: {threshold: 0.5, margin: 0.05}   # defaults comment
rules:
  - name: weapons     # keep this comment
    hypothesis: The prompt asks how to build a weapon.
    threshold: 0.6    # and this one
  - name: spam
    hypothesis: The prompt is spam.
"""


# ---------------------------------------------------------------- brute force, written apart
def brute_force(ticks: list[int], labels: list[bool], target: float):
    """Every band [lo, hi) over the distinct scores (and 10,000): most decided, then most correct,
    then narrowest, then lowest; accepted when correct / decided >= target."""
    ends = sorted(set(ticks) | {10_000})
    best = None
    for i, lo in enumerate(ends):
        for hi in ends[i:]:
            if hi - lo >= 10_000:  # margin would reach 1
                continue
            decided = correct = 0
            for t, y in zip(ticks, labels, strict=True):
                if lo <= t < hi:
                    continue
                decided += 1
                correct += (t >= hi) == y
            if decided and correct / decided >= target:
                key = (decided, correct, -(hi - lo), -hi)
                if best is None or key > best[0]:
                    best = (key, lo, hi)
    return None if best is None else (best[1], best[2], best[0][0], best[0][1])


def synthetic(rng: random.Random, n: int, levels: int = 60):
    """Labelled scores on a coarse grid (many ties), positives scoring higher on the whole."""
    ticks, labels = [], []
    for _ in range(n):
        y = rng.random() < 0.45
        centre = 0.65 if y else 0.35
        p = min(1.0, max(0.0, rng.gauss(centre, 0.22)))
        ticks.append(round(p * levels) * 10_000 // levels)
        labels.append(y)
    return ticks, labels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.7, 0.85, 0.95, 1.0])
def test_band_search_matches_brute_force(seed, target):
    rng = random.Random(seed)
    ticks, labels = synthetic(rng, 90 + 10 * seed, levels=40 + 7 * seed)
    band = bd.search_band(ticks, labels, target)
    expected = brute_force(ticks, labels, target)
    got = None if band is None else (band.low, band.high, band.decided, band.correct)
    assert got == expected


@pytest.mark.parametrize(("ticks", "labels"), [
    ([0, 0, 10_000, 10_000], [False, False, True, True]),  # both ends of the scale
    ([5000] * 6, [True, False, True, False, True, False]),  # one distinct score
    ([0, 10_000, 0, 10_000], [True, False, True, False]),  # all wrong way round
    ([1, 2, 3, 4, 9999], [True] * 5),  # one class only
    ([0, 5, 10, 15], [False, True, False, True]),
])
def test_band_search_edge_cases_match_brute_force(ticks, labels):
    for target in (0.5, 0.75, 1.0):
        band = bd.search_band(ticks, labels, target)
        got = None if band is None else (band.low, band.high, band.decided, band.correct)
        assert got == brute_force(ticks, labels, target)
    assert bd.search_band([], [], 0.9) is None


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 9999), (1, 10_000), (4999, 5000), (3333, 6667),
                                           (10_000, 10_000), (123, 124), (5000, 5000)])
def test_written_band_is_the_band_under_decide(low, high):
    """threshold: high, margin: high - low + half a step, written as YAML and read back, make
    `decide.state` uncertain exactly on [low, high) and fire exactly from high, on every printed score."""
    band = bd.Band(low, high, 0, 0, 0)
    text = f"threshold: {format_threshold(band.threshold)}\nmargin: {format_threshold(band.margin)}\n"
    read = yaml.safe_load(text)
    assert 0 <= read["margin"] < 1
    for tick in range(10_001):
        got = state(tick / 10_000, read["threshold"], read["margin"])
        want = "fired" if tick >= high else "uncertain" if tick >= low else "clear"
        assert got == want, tick


# ---------------------------------------------------------------- the figures
def test_figures_and_confidence_cut_match_brute_force():
    rng = random.Random(3)
    ticks, labels = synthetic(rng, 300, levels=200)
    threshold = 0.55
    band = bd.search_band(ticks, labels, 0.9)
    uncertain, fired = bd.band_mask(ticks, band)
    plain = [t >= 5500 for t in ticks]
    fig = bd.figures(uncertain, fired, labels, plain)
    errors = [p != y for p, y in zip(plain, labels, strict=True)]
    abst = [band.low <= t < band.high for t in ticks]
    decided = [(t >= band.high) == y for t, y, a in zip(ticks, labels, abst, strict=True) if not a]
    caught = sum(e and a for e, a in zip(errors, abst, strict=True))
    assert fig.coverage == len(decided) / len(ticks) == band.coverage
    assert fig.accuracy == sum(decided) / len(decided) == band.accuracy >= 0.9
    assert fig.errors_caught == caught / sum(errors)
    assert fig.precision == caught / sum(abst)
    # the cut: the same number of records, those closest to the threshold (ties in record order)
    k = sum(abst)
    order = sorted(range(len(ticks)), key=lambda i: (abs(ticks[i] / 100 - 55.0), i))[:k]
    cut = bd.confidence_cut(ticks, threshold, k)
    assert sorted(np.flatnonzero(cut)) == sorted(order)
    cut_fig = bd.figures(cut, plain, labels, plain)
    kept = [plain[i] == labels[i] for i in range(len(ticks)) if i not in set(order)]
    assert cut_fig.coverage == fig.coverage and cut_fig.accuracy == sum(kept) / len(kept)
    assert cut_fig.errors_caught == sum(errors[i] for i in order) / sum(errors)
    # undefined figures are None, never 0
    none = bd.figures([False, False], [True, False], [True, False], [True, False])
    assert none.errors_caught is None and none.precision is None and none.accuracy == 1.0
    everything = bd.figures([True], [False], [True], [False])
    assert everything.accuracy is None and everything.coverage == 0.0


def test_risk_coverage_is_the_error_rate_of_the_most_confident():
    coverage, risk = bd.risk_coverage([0.9, 0.1, 0.5, 0.9], [True, False, False, True])
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == [0.0, 0.0, 1 / 3, 0.5]


def test_head_figures_and_absent_head():
    rng = random.Random(4)
    ticks, labels = synthetic(rng, 120, levels=100)
    probs = np.array(ticks) / 10_000
    head = np.array([round(rng.uniform(0, 100), 2) for _ in ticks])
    rule = Rule("weapons", ("h",), threshold=0.5, abstain=0.3)
    everything = np.ones(len(ticks), dtype=bool)
    row = br.build_row(rule, probs, np.array(labels), head, everything, everything, 0.8)
    plain = [t >= 5000 for t in ticks]
    abst = [h >= 30.0 for h in head]
    kept = [p == y for p, y, a in zip(plain, labels, abst, strict=True) if not a]
    errors = [p != y for p, y in zip(plain, labels, strict=True)]
    caught = sum(e and a for e, a in zip(errors, abst, strict=True))
    fig = row.figures["head"]
    assert row.abstain_threshold == 0.3
    assert (fig.abstained, fig.accuracy, fig.errors_caught, fig.precision) == (
        sum(abst), sum(kept) / len(kept), caught / sum(errors), caught / sum(abst))
    assert row.figures["head_cut"].abstained == sum(abst)
    assert "abstention head" in row.curves
    absent = br.build_row(Rule("weapons", ("h",)), probs, np.array(labels), None, everything, everything, 0.8)
    assert absent.figures.get("head") is None and absent.abstain_threshold is None
    outs = [{"scores": {"weapons": {"entailment": 1.0, "abstain": 3.5}}},
            {"scores": {"weapons": {"entailment": 1.0}}}]
    assert br.head_scores(outs, rule, ["a", "b"]) is None
    assert br.head_scores(outs[:1], rule, ["a"]).tolist() == [3.5]


def test_holdout_mask_is_deterministic_and_near_the_fraction():
    keys = [f"id:r{i}" for i in range(4000)]
    mask = bd.holdout_mask(keys, 0.25)
    assert mask.tolist() == bd.holdout_mask(keys, 0.25).tolist()
    assert 0.22 < mask.mean() < 0.28
    # a record's side depends on its own key only: reordering or dropping others moves nothing
    again = bd.holdout_mask(list(reversed(keys[:1000])), 0.25)
    assert again.tolist() == list(reversed(mask[:1000].tolist()))
    assert not (bd.holdout_mask(keys, 0.1) & ~mask).any()  # a smaller share holds out a subset
    with pytest.raises(ValueError):
        bd.holdout_mask(keys, 1.0)


# ---------------------------------------------------------------- the CLI, on --scores files
def write_data(base: Path, n: int = 400, seed: int = 7, *, ids: bool = True, head: bool = False,
               spam_positives: int | None = None) -> tuple[Path, Path, Path, list[dict], list[dict]]:
    """A rules file, a labelled file and a matching `batch`-shaped scores file."""
    rng = random.Random(seed)
    rules = base / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    labelled, scored = [], []
    for i in range(n):
        weapons = rng.random() < 0.4
        spam = i < spam_positives if spam_positives is not None else rng.random() < 0.3
        w = min(100.0, max(0.0, round(rng.gauss(68 if weapons else 32, 18), 2)))
        s = round(rng.uniform(0, 100), 2)
        rec = {"text": f"prompt {i}", "labels": [n for n, v in (("weapons", weapons), ("spam", spam)) if v]}
        out = {"source": "l.jsonl", "line": i + 1, "status": "ok",
               "scores": {"weapons": {"entailment": w, "neutral": 0.0, "contradiction": 0.0},
                          "spam": {"entailment": s, "neutral": 0.0, "contradiction": 0.0}}}
        if head:
            for name in ("weapons", "spam"):
                out["scores"][name]["abstain"] = round(rng.uniform(0, 100), 2)
        if ids:
            rec["id"] = out["id"] = f"r{i}"
        labelled.append(rec)
        scored.append(out)
    lpath, spath = base / "l.jsonl", base / "scored.jsonl"
    lpath.write_text("".join(json.dumps(o) + "\n" for o in labelled), encoding="utf-8")
    spath.write_text("".join(json.dumps(o) + "\n" for o in scored), encoding="utf-8")
    return rules, lpath, spath, labelled, scored


def eval_json(run_cli, *args: str) -> tuple[dict, str]:
    code, out, err = run_cli("eval", *args, "-f", "json")
    assert code == 0, err
    return json.loads(out), err


def test_cli_bands_match_the_search_and_write_rules_reproduce_them(run_cli, tmp_path):
    rules, labelled, scored, recs, outs = write_data(tmp_path)
    tuned = tmp_path / "tuned.yaml"
    doc, err = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored),
                         "--target-accuracy", "0.9", "--write-rules", str(tuned))
    bands = doc["bands"]
    assert (bands["target_accuracy"], bands["in_sample"], bands["holdout"]) == (0.9, True, None)
    assert doc["in_sample"] is True and bands["tuned_on"] == bands["measured_on"] == 400
    assert f"crossguard: wrote {tuned} with bands for accuracy 0.9" in err
    written = {r.name: r for r in load_rules(tuned).rules}
    for row in bands["rules"]:
        name = row["name"]
        ticks = [round(o["scores"][name]["entailment"] * 100) for o in outs]
        labels = [name in r["labels"] for r in recs]
        lo, hi, decided, correct = brute_force(ticks, labels, 0.9)
        band = row["band"]
        assert (band["low"], band["high"]) == (lo / 10_000, hi / 10_000)
        assert band["tuned_coverage"] == round(decided / 400, 4) and band["tuned_accuracy"] >= 0.9
        fig = row["figures"]["band"]
        assert (fig["decided"], fig["coverage"], fig["accuracy"]) == (decided, round(decided / 400, 4),
                                                                      round(correct / decided, 4))
        assert row["figures"]["cut"]["abstained"] == fig["abstained"]  # the same coverage
        assert row["figures"]["head"] is None  # no abstention head in these records
        # the written rule decides each record as the band does, by decide itself
        rule = written[name]
        assert (rule.threshold, rule.margin) == (band["threshold"], band["margin"])
        for t in ticks:
            want = "fired" if t >= hi else "uncertain" if t >= lo else "clear"
            assert state(t / 10_000, rule.threshold, rule.margin) == want
    # comments and everything else kept
    text = tuned.read_text()
    for line in ("# band test rules", "defaults: {threshold: 0.5, margin: 0.05}   # defaults comment"):
        assert line in text.splitlines()
    assert "# keep this comment" in text and "# and this one" in text
    # a real run on the tuned file: its uncertain share and confident accuracy are the band's
    again, _ = eval_json(run_cli, str(labelled), "-r", str(tuned), "--scores", str(scored))
    for row, band_row in zip(again["rules"], bands["rules"], strict=True):
        fig = band_row["figures"]["band"]
        assert row["uncertain_rate"] == round(fig["abstained"] / 400, 4)
        assert row["confident_accuracy"] == fig["accuracy"]


def test_cli_holdout_is_deterministic_and_measures_apart(run_cli, tmp_path):
    rules, labelled, scored, recs, outs = write_data(tmp_path)
    args = [str(labelled), "-r", str(rules), "--scores", str(scored), "--target-accuracy", "0.9",
            "--holdout", "0.3"]
    first, _ = eval_json(run_cli, *args)
    second, _ = eval_json(run_cli, *args)
    assert first == second
    bands = first["bands"]
    held = bd.holdout_mask([f"id:{r['id']}" for r in recs], 0.3)
    assert bands["in_sample"] is False and (bands["tuned_on"], bands["measured_on"]) == (
        int((~held).sum()), int(held.sum()))
    assert (first["tuned_on"], first["measured_on"]) == (bands["tuned_on"], bands["measured_on"])
    for row in bands["rules"]:
        name = row["name"]
        ticks = np.array([round(o["scores"][name]["entailment"] * 100) for o in outs])
        labels = np.array([name in r["labels"] for r in recs])
        lo, hi, _, _ = brute_force(ticks[~held].tolist(), labels[~held].tolist(), 0.9)  # tuned on the rest
        assert (row["band"]["low"], row["band"]["high"]) == (lo / 10_000, hi / 10_000)
        abst = (ticks[held] >= lo) & (ticks[held] < hi)
        fig = row["figures"]["band"]
        assert (fig["n"], fig["abstained"]) == (int(held.sum()), int(abst.sum()))  # measured on the held-out part
    assert next(r for r in first["rules"] if r["name"] == "weapons")["n"] == int(held.sum())
    # the split follows ids: a shuffled labelled file gives the same report
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(reversed(labelled.read_text().splitlines(True))))
    third, _ = eval_json(run_cli, str(shuffled), *args[1:])
    assert third == first


def test_cli_holdout_without_ids_splits_by_source_and_line(run_cli, tmp_path):
    rules, labelled, scored, _, _ = write_data(tmp_path, ids=False)
    doc, _ = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored), "--holdout", "0.5")
    held = bd.holdout_mask([f"{labelled}:{i}" for i in range(1, 401)], 0.5)
    assert doc["measured_on"] == int(held.sum()) and "bands" not in doc


def test_cli_too_few_labelled_records_gives_no_band(run_cli, tmp_path):
    rules, labelled, scored, _, _ = write_data(tmp_path, spam_positives=19)
    tuned = tmp_path / "tuned.yaml"
    doc, err = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored),
                         "--target-accuracy", "0.9", "--write-rules", str(tuned))
    spam = next(r for r in doc["bands"]["rules"] if r["name"] == "spam")
    assert spam["band"] is None and spam["figures"]["band"] is None and spam["figures"]["cut"] is None
    assert spam["reason"] == ("too few labelled records to tune on: 19 positive and 381 negative; "
                              "a band needs at least 20 of each")
    assert "kept the thresholds and margins of spam (too few labelled records" in err
    original = yaml.safe_load(RULES_YAML)["rules"][1]
    assert yaml.safe_load(tuned.read_text())["rules"][1] == original
    code, out, _ = run_cli("eval", str(labelled), "-r", str(rules), "--scores", str(scored),
                           "--target-accuracy", "0.9", "-f", "table")
    assert code == 0 and "no band: too few labels (19+ 381-; needs 20 each)" in out and "figures are in-sample" in out


def test_cli_head_figures_beside_the_band(run_cli, tmp_path):
    rules, labelled, scored, recs, outs = write_data(tmp_path, head=True)
    doc, _ = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored), "--target-accuracy", "0.9")
    for row in doc["bands"]["rules"]:
        name, figs = row["name"], row["figures"]
        assert row["abstain_threshold"] == 0.5
        abst = [o["scores"][name]["abstain"] >= 50.0 for o in outs]
        assert figs["head"]["abstained"] == figs["head_cut"]["abstained"] == sum(abst)
    code, out, _ = run_cli("eval", str(labelled), "-r", str(rules), "--scores", str(scored),
                           "--target-accuracy", "0.9", "-f", "table")
    assert code == 0 and "abstention head" in out and "confidence cut" in out


def test_cli_plot_adds_risk_coverage(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    rules, labelled, scored, _, _ = write_data(tmp_path, head=True)
    png = tmp_path / "rc.png"
    doc, err = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored),
                         "--target-accuracy", "0.9", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"crossguard: wrote {png}" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--target-accuracy", "0"], "--target-accuracy: must be in (0, 1], got 0"),
    (["--target-accuracy", "1.5"], "--target-accuracy"),
    (["--holdout", "0"], "--holdout: must be between 0 and 1 (exclusive), got 0"),
    (["--holdout", "1"], "--holdout: must be between 0 and 1 (exclusive), got 1"),
    (["--holdout", "-0.2"], "--holdout"),
])
def test_cli_bad_band_options_are_one_line_errors(run_cli, tmp_path, args, message):
    rules, labelled, scored, _, _ = write_data(tmp_path, n=10)
    code, out, err = run_cli("eval", str(labelled), "-r", str(rules), "--scores", str(scored), *args)
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("crossguard: error: ") and message in err


def test_cli_holdout_that_leaves_nothing_to_measure(run_cli, tmp_path):
    rules, labelled, scored, recs, _ = write_data(tmp_path, n=1)
    code, out, err = run_cli("eval", str(labelled), "-r", str(rules), "--scores", str(scored), "--holdout", "0.5")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("crossguard: error: --holdout: 0.5 of 1 scored records leaves")


# ---------------------------------------------------------------- one run with the test model
def test_bands_with_the_test_model_reproduce_in_batch(run_cli, tmp_path, model_dir):
    rng = random.Random(11)
    words = ["weapon", "bomb", "picnic", "garden", "knife", "poem", "rifle", "recipe", "attack", "holiday"]
    recs = [{"id": f"p{i}", "text": " ".join(rng.choice(words) for _ in range(6)),
             "labels": ["weapons"] if i % 2 else []} for i in range(60)]
    labelled = tmp_path / "l.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML)
    tuned = tmp_path / "tuned.yaml"
    common = ["-m", str(model_dir), "--max-length", "64"]
    doc, _ = eval_json(run_cli, str(labelled), "-r", str(rules), *common, "--target-accuracy", "0.5",
                       "--write-rules", str(tuned))
    weapons = doc["bands"]["rules"][0]
    assert weapons["band"] is not None  # balanced classes: "decide everything one way" reaches 0.5
    code, out, err = run_cli("batch", str(labelled), "-r", str(tuned), *common, "-q", "--exit-zero")
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    lo, hi = weapons["band"]["low"] * 10_000, weapons["band"]["high"] * 10_000
    for o in got:
        t = round(o["scores"]["weapons"]["entailment"] * 100)
        assert ("weapons" in o["uncertain"]) == (lo <= t < hi) and ("weapons" in o["flagged"]) == (t >= hi)
    abstained = sum("weapons" in o["uncertain"] for o in got)
    assert weapons["figures"]["band"]["abstained"] == abstained


# ---------------------------------------------------------------- writing margins, reading classifier scores
def test_set_settings_adds_and_replaces_margins_keeping_layout():
    from crossguard_cli.rules.edit import set_settings

    text = ("version: 1\r\ndefaults: {margin: 0.05}  # kept\r\nrules:\r\n  - name: a\r\n    hypothesis: A.\r\n"
            "    margin: 0.2   # kept too\r\n  - {name: b, hypothesis: B.}\r\n  - name: c\r\n    hypothesis: C.")
    out = set_settings(text, {"a": {"threshold": 0.6613, "margin": 0.19295},
                              "b": {"threshold": 1.0, "margin": 0.0}, "c": {"margin": 0.10005}})
    data = yaml.safe_load(out)
    assert [(r.get("threshold"), r.get("margin")) for r in data["rules"]] == [
        (0.6613, 0.19295), (1.0, 0.0), (None, 0.10005)]
    assert "# kept\r\n" in out and "margin: 0.19295   # kept too\r\n" in out and "\n" not in out.replace("\r\n", "")
    assert "- {name: b, threshold: 1.0, margin: 0.0, hypothesis: B.}" in out


def test_classifier_rules_are_read_by_their_score_field():
    from crossguard_cli.evaluation import labels as lb
    from crossguard_cli.evaluation import report as ev

    rule = Rule("toxic", (), classifier="tox", label="toxic", threshold=0.5)
    pairs = []
    for i in range(60):
        rec = lb.LabelledRecord(f"l:{i + 1}", i + 1, f"r{i}", {"toxic": i % 2 == 1}, None)
        pairs.append((rec, {"status": "ok", "scores": {"toxic": {"probability": 80.0 if i % 2 else 20.0}}}))
    report = ev.build_report(pairs, [rule], target_accuracy=0.99)
    band = report.bands.rules[0].band
    assert report.rules[0].accuracy == 1.0 and band.coverage == 1.0 and band.low == band.high


def test_cli_holdout_tunes_thresholds_on_the_rest(run_cli, tmp_path):
    rules, labelled, scored, recs, outs = write_data(tmp_path)
    doc, _ = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored), "--holdout", "0.3")
    held = bd.holdout_mask([f"id:{r['id']}" for r in recs], 0.3)
    for row in doc["rules"]:
        name = row["name"]
        data = [(o["scores"][name]["entailment"] / 100, name in r["labels"], h)
                for o, r, h in zip(outs, recs, held, strict=True)]

        def f1(records, t):
            tp = sum(p >= t and y for p, y, _ in records)
            fp = sum(p >= t and not y for p, y, _ in records)
            fn = sum(p < t and y for p, y, _ in records)
            return 2 * tp / (2 * tp + fp + fn)

        rest = [d for d in data if not d[2]]
        best = max(sorted({round(p, 10) for p, _, _ in rest}, reverse=True), key=lambda t: f1(rest, t))
        assert row["best_f1_threshold"] == best  # tuned on the rest ...
        assert row["best_f1"] == round(f1([d for d in data if d[2]], best), 4)  # ... measured on the held-out part
        assert row["n"] == int(held.sum())


def test_head_abstention_is_uncertain_in_the_current_decisions(run_cli, tmp_path):
    rules, labelled, scored, recs, outs = write_data(tmp_path, head=True)
    doc, _ = eval_json(run_cli, str(labelled), "-r", str(rules), "--scores", str(scored))
    rules_by_name = {r.name: r for r in load_rules(rules).rules}
    from crossguard_cli.engine.decide import rule_state

    for row in doc["rules"]:
        rule = rules_by_name[row["name"]]
        states = [rule_state(rule, o["scores"][rule.name]["entailment"] / 100, o["scores"][rule.name]["abstain"] / 100)
                  for o in outs]
        assert row["uncertain_rate"] == round(states.count("uncertain") / len(outs), 4)
        assert row["tp"] + row["fp"] == states.count("fired")
    bad = tmp_path / "bad.jsonl"
    outs[3]["scores"]["spam"]["abstain"] = "high"
    bad.write_text("".join(json.dumps(o) + "\n" for o in outs))
    code, out, err = run_cli("eval", str(labelled), "-r", str(rules), "--scores", str(bad), "-f", "json")
    assert code == 2 and out == "" and err.strip() == (
        f"crossguard: error: {labelled}:4: scores.spam.abstain: expected a percentage, got 'high'")
