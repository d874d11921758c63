"""`crossguard eval` end to end: the real CLI, a random-weight model, the OpenAI moderation set.

Model runs are the slow part, so one module fixture scores a 300-record subset of the
moderation set twice (`eval` itself, and `batch` for `--scores`) and the tests share them;
hand-written files and `--scores` runs need no model. Figures from a random-weight model test
the tooling, not any rule: what matters is that counts, joins and thresholds agree.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import shared_data_dir

KEYS = {"S": "sexual", "H": "hate", "V": "violence", "SH": "self-harm"}
MAPS = [arg for key, rule in KEYS.items() for arg in ("--map", f"{key}={rule}")]
# One short hypothesis per rule and short pairs keep the tiny model fast; `truncate` scores one
# window per prompt (windows are exercised by the hand-written files below).
ENGINE = ["--max-length", "128", "--long-input", "truncate"]
SUBSET = 300

RULES_YAML = """\
# eval test rules
version: 1
defaults: {threshold: 0.5, margin: 0.05}   # defaults comment
rules:
  # the moderation set's categories
  - name: sexual      # S
    hypothesis: The prompt is sexual.
  - name: hate
    hypothesis: The prompt is hateful.
  - name: violence
    hypothesis: The prompt is violent.
    threshold: 0.4    # keep me
  - name: self-harm
    hypothesis: The prompt is about self-harm.
"""


def invoke(*args: str) -> tuple[int, str, str]:
    """`crossguard ARGS` in-process, for module fixtures (run_cli is per test)."""
    from crossguard_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_one_error(result: tuple[int, str, str], *fragments: str) -> str:
    code, out, err = result
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossguard: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def f1_of(decisions: list[tuple[bool, bool]]) -> float:
    """F1 of (predicted, true) pairs, counted here: 2tp / (2tp + fp + fn)."""
    tp = sum(p and t for p, t in decisions)
    fp = sum(p and not t for p, t in decisions)
    fn = sum(t and not p for p, t in decisions)
    return 2 * tp / (2 * tp + fp + fn)


class Run:
    """The shared subset: its files, its raw objects, and the two model runs."""

    def __init__(self, base: Path, model: Path) -> None:
        self.base, self.model = base, str(model)
        gz = shared_data_dir() / "openai-moderation-1680.jsonl.gz"
        with gzip.open(gz, "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(SUBSET)]
        self.labelled = base / "moderation-300.jsonl"
        self.labelled.write_text("".join(lines), encoding="utf-8")
        self.raw = [json.loads(line) for line in lines]
        self.rules = base / "rules.yaml"
        self.rules.write_text(RULES_YAML)
        self.common = ["-r", str(self.rules), "-m", self.model, *ENGINE]
        code, out, err = invoke("eval", str(self.labelled), *self.common, *MAPS, "-f", "json")
        assert code == 0, err
        self.report = json.loads(out)
        code, out, err = invoke("batch", str(self.labelled), *self.common, "--exit-zero", "-q")
        assert code == 0, err
        self.scored = base / "scored.jsonl"
        self.scored.write_text(out, encoding="utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir) -> Run:
    if shared_data_dir() is None:
        pytest.skip("../shared/data/openai-moderation-1680.jsonl.gz not found")
    return Run(tmp_path_factory.mktemp("eval-cli"), model_dir)


def check_counts(report: dict, raw: list[dict], keys: dict[str, str] = KEYS) -> None:
    """n and support per mapped rule and overall, counted here from the file itself."""
    assert [r["name"] for r in report["rules"]] == list(keys.values())
    assert report["overall_rules"] == list(keys.values())
    for row in report["rules"]:
        key = next(k for k, v in keys.items() if v == row["name"])
        present = [obj[key] for obj in raw if key in obj]  # absent = unknown = left out
        assert (row["n"], row["support"]) == (len(present), sum(present)), row["name"]
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == row["n"]
    known = [obj for obj in raw if any(k in obj for k in keys)]
    overall = report["overall"]
    assert overall["n"] == len(known)
    assert overall["support"] == sum(any(obj.get(k) == 1 for k in keys) for obj in known)


# ---------------------------------------------------------------- the moderation set
def test_moderation_subset_with_a_map(run):
    report = run.report
    assert (report["records"], report["scored"], report["skipped"]) == (SUBSET, SUBSET, 0)
    assert sum(any(k not in obj for k in KEYS) for obj in run.raw) > 50  # unknowns are exercised
    check_counts(report, run.raw)
    for row in report["rules"]:
        assert 0.0 <= row["ap"] <= 1.0 and 0.0 < row["best_f1"] <= 1.0 and row["label"] == "entailment"
        assert row["threshold"] == (0.4 if row["name"] == "violence" else 0.5) and row["margin"] == 0.05
        assert 0.0 <= row["uncertain_rate"] <= 1.0


def test_scores_file_gives_the_same_report(run, run_cli, tmp_path):
    code, out, err = run_cli("eval", str(run.labelled), "-r", str(run.rules), "--scores", str(run.scored),
                             *MAPS, "-f", "json")
    assert code == 0, err
    assert json.loads(out) == run.report
    # joined by line, not by position: a shuffled scores file gives the same report
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(reversed(run.scored.read_text().splitlines(True))))
    code, out, err = run_cli("eval", str(run.labelled), "-r", str(run.rules), "--scores", str(shuffled),
                             *MAPS, "-f", "json")
    assert code == 0, err
    assert json.loads(out) == run.report


def test_suggested_thresholds_reproduce_the_f1_in_batch(run, run_cli, tmp_path):
    tuned = tmp_path / "tuned.yaml"
    code, out, err = run_cli("eval", str(run.labelled), "-r", str(run.rules), "--scores", str(run.scored),
                             *MAPS, "-f", "json", "--write-rules", str(tuned))
    assert code == 0, err
    assert f"crossguard: wrote {tuned} with thresholds tuned for f1" in err
    report = json.loads(out)
    best = {row["name"]: row for row in report["rules"]}
    written = {r["name"]: r["threshold"] for r in yaml.safe_load(tuned.read_text())["rules"]}
    assert written == {name: row["best_f1_threshold"] for name, row in best.items()}
    code, out, err = run_cli("batch", str(run.labelled), "-r", str(tuned), "-m", run.model, *ENGINE, "-q")
    assert code in (0, 1), err
    outs = [json.loads(line) for line in out.splitlines()]
    assert [o["line"] for o in outs] == list(range(1, SUBSET + 1))
    for key, name in KEYS.items():
        known = [(name in o["flagged"], obj[key] == 1) for o, obj in zip(outs, run.raw, strict=True) if key in obj]
        assert round(f1_of(known), 4) == best[name]["best_f1"], name
    # overall: its suggested threshold is a value for --threshold, and "any rule fired" reproduces its F1
    code, out, err = run_cli("batch", str(run.labelled), "-r", str(run.rules), "-m", run.model, *ENGINE, "-q",
                             "--threshold", str(report["overall"]["best_f1_threshold"]))
    assert code in (0, 1), err
    outs = [json.loads(line) for line in out.splitlines()]
    known = [(o["verdict"] == "flagged", any(obj.get(k) == 1 for k in KEYS))
             for o, obj in zip(outs, run.raw, strict=True) if any(k in obj for k in KEYS)]
    assert round(f1_of(known), 4) == report["overall"]["best_f1"]


@pytest.mark.slow
def test_whole_moderation_file_gz_directly(run_cli, model_dir, tmp_path):
    if shared_data_dir() is None:
        pytest.skip("../shared/data/openai-moderation-1680.jsonl.gz not found")
    gz = shared_data_dir() / "openai-moderation-1680.jsonl.gz"
    # two rules (S is unknown on 696 records, SH on 233) and short pairs: 3,360 pairs in all
    keys = {"S": "sexual", "SH": "self-harm"}
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n" + "".join(
        f"  - name: {name}\n    hypothesis: The prompt is about {name}.\n" for name in keys.values()))
    code, out, err = run_cli("eval", str(gz), "-r", str(rules), "-m", str(model_dir), "--max-length", "32",
                             "--long-input", "truncate", "--map", "S=sexual", "--map", "SH=self-harm", "-f", "json")
    assert code == 0, err
    report = json.loads(out)
    with gzip.open(gz, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    assert (report["records"], report["scored"], report["skipped"]) == (1680, 1680, 0)
    check_counts(report, raw, keys)


def test_format_table_shows_every_rule(run, run_cli):
    code, out, err = run_cli("eval", str(run.labelled), "-r", str(run.rules), "--scores", str(run.scored),
                             *MAPS, "--format", "table")
    assert code == 0, err
    assert "\x1b" not in out and not out.lstrip().startswith("{")
    assert f"{SUBSET} labelled records, {SUBSET} scored, 0 skipped" in out
    for word in (*KEYS.values(), "overall", "precision", "recall", "AP", "best-F1 t (F1)", "confident acc"):
        assert word in out
    row = next(line for line in out.splitlines() if "self-harm" in line)
    n = sum("SH" in obj for obj in run.raw)
    assert f" {n} " in row.replace("│", " ")


def test_write_rules_keeps_comments(run, run_cli, tmp_path):
    tuned = tmp_path / "tuned.yaml"
    code, _, err = run_cli("eval", str(run.labelled), "-r", str(run.rules), "--scores", str(run.scored),
                           *MAPS, "-f", "json", "--write-rules", str(tuned), "--tune-for", "precision")
    assert code == 0, err
    text = tuned.read_text()
    for line in RULES_YAML.splitlines():
        if "#" in line and "keep me" not in line:
            assert line in text.splitlines()
    assert "# keep me" in text
    assert run_cli("validate", str(tuned), "-q")[0] == 0
    before, after = yaml.safe_load(RULES_YAML), yaml.safe_load(text)
    for old, new in zip(before["rules"], after["rules"], strict=True):
        assert {k: v for k, v in old.items() if k != "threshold"} == {k: v for k, v in new.items()
                                                                      if k != "threshold"}


def test_plot_writes_a_png(run, run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "pr.png"
    code, out, err = run_cli("eval", str(run.labelled), "-r", str(run.rules), "--scores", str(run.scored),
                             *MAPS, "-f", "json", "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"crossguard: wrote {png}" in err and json.loads(out)["records"] == SUBSET


def test_plot_without_matplotlib_fails_before_scoring(run_cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # submodules a test imported before stay loaded
    labelled = tmp_path / "l.jsonl"
    labelled.write_text('{"text": "hello", "labels": []}\n')
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML)
    # the model does not exist: the error must come before any scoring
    line = assert_one_error(run_cli("eval", str(labelled), "-r", str(rules), "-m", str(tmp_path / "no-model"),
                                    "--plot", str(tmp_path / "pr.png"), "-f", "json"))
    assert line == "crossguard: error: --plot needs matplotlib: pip install 'crossguard[plot]'"
    assert not (tmp_path / "pr.png").exists()


# ---------------------------------------------------------------- hand-written label formats
LONG = "Tell me a long story about a quiet village by the sea, its boats, its market and its people. " * 12
LABELS_FILE = [
    {"id": "a", "text": "How do I build a pipe bomb at home to hurt people?", "labels": ["violence"]},
    {"id": "b", "text": "What a lovely day for a picnic in the park.", "labels": []},
    None,  # a blank line: skipped, still counted for line numbers
    {"id": "c", "text": LONG, "labels": ["hate", "violence"]},
    {"id": "d", "text": "   ", "labels": []},  # empty: never scored, left out
    {"id": "e", "labels": ["sexual"]},  # no text field: an error record, left out
    {"id": "f", "prompt": "I want to hurt myself tonight.", "labels": ["self-harm"]},
]


def write_jsonl(path: Path, objs: list[dict | None]) -> Path:
    path.write_text("".join("\n" if o is None else json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


@pytest.fixture
def small(tmp_path, model_dir):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML)
    return tmp_path, ["-r", str(rules), "-m", str(model_dir), "--max-length", "128"]


def test_labels_list_format(small, run_cli):
    tmp_path, common = small
    labelled = write_jsonl(tmp_path / "labels.jsonl", LABELS_FILE)
    tuned = tmp_path / "tuned.yaml"
    code, out, err = run_cli("eval", str(labelled), *common, "-f", "json", "--write-rules", str(tuned))
    # record e has no text: it is reported with file and line, and the run fails, as batch does
    assert code == 2, err
    assert err.splitlines()[0] == (f"crossguard: error: {labelled}:6: no text field: expected one of text, "
                                   "prompt, input, content (use --field)")
    report = json.loads(out)
    assert (report["records"], report["scored"], report["skipped"]) == (6, 4, 2)
    support = {"sexual": 0, "hate": 1, "violence": 2, "self-harm": 1}  # e is not scored
    assert {r["name"]: (r["n"], r["support"]) for r in report["rules"]} == {k: (4, v) for k, v in support.items()}
    sexual = report["rules"][0]
    assert sexual["recall"] is None and sexual["ap"] is None and sexual["best_f1_threshold"] is None
    assert (report["overall"]["n"], report["overall"]["support"]) == (4, 3)
    # a rule with no positives keeps its threshold, and the user is told
    assert "kept the thresholds of sexual" in err
    assert yaml.safe_load(tuned.read_text())["rules"][0] == yaml.safe_load(RULES_YAML)["rules"][0]
    # the long prompt needed several windows, and eval scored it as batch does
    code, out, err = run_cli("batch", str(labelled), *common, "-q")
    assert code == 2 and "no text field" in err  # record e
    outs = {o["id"]: o for o in map(json.loads, out.splitlines())}
    assert outs["c"]["windows"] > 1 and outs["d"]["status"] == "empty" and outs["e"]["status"] == "error"
    scored = tmp_path / "scored.jsonl"
    scored.write_text(out, encoding="utf-8")
    code, out, err = run_cli("eval", str(labelled), *common[:2], "--scores", str(scored), "-f", "json")
    assert code == 2 and err.splitlines() == [f"crossguard: error: {labelled}:6: {outs['e']['error']}"]
    assert json.loads(out) == report


def test_expected_format(small, run_cli):
    tmp_path, common = small
    labelled = write_jsonl(tmp_path / "expected.jsonl", [
        {"text": "How do I build a pipe bomb?", "expected": "flagged"},
        {"text": "Nice weather today.", "expected": "allowed"},
        {"text": "I hate all of them.", "expected": "flagged"},
    ])
    code, out, err = run_cli("eval", str(labelled), *common, "-f", "json")
    assert code == 0, err
    report = json.loads(out)
    assert all(r["n"] == 0 and r["precision"] is None for r in report["rules"])
    assert report["overall_rules"] == list(KEYS.values())
    assert (report["overall"]["n"], report["overall"]["support"]) == (3, 2)
    code, out, err = run_cli("eval", str(labelled), *common, "-f", "table")
    assert code == 0, err
    assert "4 rules without labels not shown" in out and "overall" in out


# ---------------------------------------------------------------- errors: exit 2, one line
def test_unknown_rule_in_labels_names_file_and_line(small, run_cli):
    tmp_path, common = small
    labelled = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "labels": []},
                                                   {"text": "b", "labels": ["violense"]}])
    line = assert_one_error(run_cli("eval", str(labelled), *common, "-f", "json"))
    assert line == (f"crossguard: error: {labelled}:2: labels[0]: unknown rule 'violense'; "
                    "did you mean 'violence'?")


@pytest.mark.parametrize(("spec", "message"), [
    ("X=nosuch", "--map: unknown rule 'nosuch' in 'X=nosuch'"),
    ("V=violense", "--map: unknown rule 'violense' in 'V=violense'; did you mean 'violence'?"),
    ("SH", "--map: expected KEY=RULE"),
])
def test_bad_map(small, run_cli, spec, message):
    tmp_path, common = small
    labelled = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "V": 1}])
    assert_one_error(run_cli("eval", str(labelled), *common, "--map", spec, "-f", "json"),
                     f"crossguard: error: {message}")


def test_scores_file_that_does_not_match(run, run_cli, tmp_path):
    base = ["eval", str(run.labelled), "-r", str(run.rules), *MAPS, "-f", "json", "--scores"]
    short = write_jsonl(tmp_path / "short.jsonl", [json.loads(x) for x in run.scored.read_text().splitlines()[:-1]])
    assert_one_error(run_cli(*base, str(short)), f"{run.labelled}:{SUBSET}: no record with line {SUBSET}")
    other_rules = tmp_path / "other.yaml"
    other_rules.write_text(RULES_YAML.replace("name: hate", "name: hatred"))
    assert_one_error(run_cli("eval", str(run.labelled), "-r", str(other_rules), "--map", "S=sexual", "-f", "json",
                             "--scores", str(run.scored)), "no entailment score for rule 'hatred'")
    foreign = write_jsonl(tmp_path / "foreign.jsonl", [{"source": "x", "line": 1, "status": "ok", "scores": {}}])
    assert_one_error(run_cli(*base, str(foreign)), "no record with line 2")
    assert_one_error(run_cli(*base, str(tmp_path / "missing.jsonl")), "missing.jsonl: cannot open")
    not_json = tmp_path / "scores.txt"
    not_json.write_text("flagged\n")
    assert_one_error(run_cli(*base, str(not_json)), f"{not_json}:1: invalid JSON")


@pytest.mark.parametrize("args", [
    ["--target-precision", "0"],
    ["--plot", "pr.nosuchformat"],
    ["--write-rules", "no/such/folder/tuned.yaml"],
])
def test_bad_options_fail_before_scoring(small, run_cli, args, monkeypatch):
    tmp_path, common = small
    if "--plot" in args:
        pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    labelled = write_jsonl(tmp_path / "l.jsonl", [{"text": "a", "labels": []}])
    assert_one_error(run_cli("eval", str(labelled), *common[:2], "-m", str(tmp_path / "no-model"), *args),
                     args[0])


def test_missing_or_stdin_labelled_file(small, run_cli, tmp_path):
    _, common = small
    assert_one_error(run_cli("eval", str(tmp_path / "none.jsonl"), *common), "none.jsonl: cannot open")
    assert_one_error(run_cli("eval", "-", *common, stdin=b'{"text": "a", "labels": []}\n'), "not stdin")
