"""`crossguard eval`: labelled records + scored records -> a per-rule and overall report.

The CLI wires it one of two ways, reading the labels first so a bad label fails before any
model loads:

    labelled = read_labelled(path, rule_names, parse_maps(map_specs, rule_names))
    pairs = pair_in_order(labelled, scored_outputs)               # scored by the model now
    pairs = join_scores(labelled, read_jsonl(scores), scores)     # or `--scores scored.jsonl`
    report = build_report(pairs, ruleset.rules, target_precision=0.95)

Decisions are recomputed from the scores with the rules' current thresholds and margins, by
`decide.rule_state` itself, so an old `batch` output can be re-judged under new thresholds
without running the model. A rule's score is its deciding label's percentage / 100. Records
whose status is not "ok" (error, empty) are counted as skipped. "Overall" compares "any rule
fired" with the record's expected verdict, over the rules the labels speak about (see
`build_report`); its threshold-free score is the record's highest probability among those
rules, so its suggested thresholds are values for `--threshold` (which overrides every rule).
"""

from __future__ import annotations

import difflib
import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import metrics
from .decide import rule_state
from .errors import InputError, OutputError, RulesError, UsageError


@dataclass(frozen=True)
class LabelledRecord:
    """The truth for one labelled line: known per-rule labels only, and the overall verdict."""

    where: str  # "file:line", for messages
    line: int
    id: str | None
    labels: Mapping[str, bool]  # rule name -> should fire; a rule absent here is unknown
    expected: bool | None  # should the record be flagged; None when unknown


Pair = tuple[LabelledRecord, Mapping[str, Any]]
OVERALL_CURVE = "all rules"  # key of the overall curve in Report.curves; no rule name has a space


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_maps(specs: Iterable[str], rule_names: Sequence[str]) -> dict[str, str]:
    """`--map KEY=RULE` options -> {column: rule}. Several columns may map to one rule."""
    maps: dict[str, str] = {}
    for spec in specs:
        key, sep, rule = (part.strip() for part in spec.partition("="))
        if not (sep and key and rule):
            raise UsageError(f"expected KEY=RULE (e.g. SH=self-harm), got {spec!r}", "--map")
        if rule not in rule_names:
            raise UsageError(f"unknown rule {rule!r} in {spec!r}{_did_you_mean(rule, rule_names)}", "--map")
        if key in maps:
            raise UsageError(f"column {key!r} is mapped twice ({maps[key]!r} and {rule!r})", "--map")
        maps[key] = rule
    return maps


def _binary(value: Any, key: str, where: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    raise InputError(f"{key}: expected 0 or 1 (or absent when unknown), got {value!r}", where)


def labels_from_record(obj: Any, rule_names: Sequence[str], maps: Mapping[str, str] | None,
                       where: str, line: int, id_field: str = "id") -> LabelledRecord:
    """One labelled JSON object -> LabelledRecord, in whichever of the three formats it uses.

    With `maps`, category columns (absent or null = unknown; a rule mapped from several
    columns is positive if any is 1, negative only if all are 0); the overall verdict is
    "flagged" when any known label is positive, "allowed" when all known ones are negative,
    unknown when none is known. Otherwise `"labels": [rule names]` (every rule known) and/or
    `"expected": "flagged" | "allowed"`, which when given decides the overall verdict.
    """
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", where)
    labels: dict[str, bool] = {}
    expected: bool | None = None
    if maps:
        columns: dict[str, list[bool | None]] = {}
        for key, rule in maps.items():
            columns.setdefault(rule, []).append(_binary(obj.get(key), key, where))
        for rule, values in columns.items():
            if True in values:
                labels[rule] = True
            elif all(v is False for v in values):
                labels[rule] = False
        expected = any(labels.values()) if labels else None  # unknown columns count as "allowed" here
    elif "labels" in obj:
        names = obj["labels"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"labels: expected a list of rule names, got {names!r}", where)
        for i, name in enumerate(names):
            if name not in rule_names:
                raise InputError(f"labels[{i}]: unknown rule {name!r}{_did_you_mean(name, rule_names)}",
                                 where)
        labels = {rule: rule in names for rule in rule_names}
        expected = bool(names)
    elif "expected" not in obj:
        raise InputError("no label: give \"labels\": [rule names], \"expected\": \"flagged\" or "
                         "\"allowed\", or --map KEY=RULE for category columns", where)
    if "expected" in obj:
        if obj["expected"] not in ("flagged", "allowed"):
            raise InputError(f"expected: must be \"flagged\" or \"allowed\", got {obj['expected']!r}", where)
        expected = obj["expected"] == "flagged"
    rid = obj.get(id_field)
    return LabelledRecord(where, line, None if rid is None else str(rid), labels, expected)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; `.gz` files are read through gzip."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                try:
                    text = raw.decode("utf-8").removeprefix("\ufeff" if lineno == 1 else "")
                except UnicodeDecodeError:
                    raise InputError("not valid UTF-8", where) from None
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise InputError(f"not valid JSON: {e.msg} (column {e.colno})", where) from None
                if not isinstance(obj, dict):
                    raise InputError(f"expected a JSON object, got {type(obj).__name__}", where)
                yield lineno, obj
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read: {getattr(e, 'strerror', None) or e}", str(path)) from None


def read_labelled(path: str | Path, rule_names: Sequence[str], maps: Mapping[str, str] | None = None,
                  id_field: str = "id") -> list[LabelledRecord]:
    """Every labelled record of a JSONL file, validated (the first bad one raises)."""
    return [labels_from_record(obj, rule_names, maps, f"{path}:{lineno}", lineno, id_field)
            for lineno, obj in read_jsonl(path)]


def pair_in_order(labelled: Sequence[LabelledRecord], scored: Iterable[Mapping[str, Any]]) -> list[Pair]:
    """Pair labelled records with the outputs of scoring that same file, record for record."""
    it = iter(scored)
    pairs: list[Pair] = []
    for rec in labelled:
        out = next(it, None)
        if out is None:
            raise InputError("no scored record for this line (scoring stopped early?)", rec.where)
        if out.get("line") is not None and out.get("line") != rec.line:
            raise InputError(f"out of step: the scored record here is for line {out.get('line')}", rec.where)
        pairs.append((rec, out))
    extra = next(it, None)
    if extra is not None:
        raise InputError(f"more scored records than labelled ones (line {extra.get('line')})")
    return pairs


def join_scores(labelled: Sequence[LabelledRecord], scored: Iterable[tuple[int, Mapping[str, Any]]],
                scores_name: str = "scores") -> list[Pair]:
    """Match a `--scores` file to the labelled file: by id when both have ids, else by line.

    `scored` is `read_jsonl(scores_path)`. Both sides must match one to one: a record left
    over on either side means the files do not belong together, which is an error.
    """
    scored = list(scored)
    if all(r.id is not None for r in labelled) and all(o.get("id") is not None for _, o in scored):
        key_of, what = (lambda o: str(o["id"])), "id"
        keys = [r.id for r in labelled]
    elif all(isinstance(o.get("line"), int) for _, o in scored):
        sources = {o.get("source") for _, o in scored}
        if len(sources) > 1:
            raise InputError(f"records come from several sources ({', '.join(map(str, sources))}) and have "
                             "no ids, so lines cannot be matched; give the records an 'id'", scores_name)
        key_of, what = (lambda o: o["line"]), "line"
        keys = [r.line for r in labelled]
    else:
        raise InputError("cannot match records to the labelled file: they need an 'id' on both sides, "
                         "or a 'line' (run `crossguard batch` on the labelled file itself)", scores_name)
    seen: dict[Any, str] = {}
    for rec, key in zip(labelled, keys, strict=True):
        if seen.setdefault(key, rec.where) != rec.where:
            raise InputError(f"duplicate {what} {key!r} (also at {seen[key]})", rec.where)
    index: dict[Any, tuple[int, Mapping[str, Any]]] = {}
    for lineno, obj in scored:
        key = key_of(obj)
        if key in index:
            raise InputError(f"duplicate {what} {key!r} (also on line {index[key][0]})",
                             f"{scores_name}:{lineno}")
        index[key] = (lineno, obj)
    pairs: list[Pair] = []
    for rec, key in zip(labelled, keys, strict=True):
        found = index.pop(key, None)
        if found is None:
            raise InputError(f"no record with {what} {key!r} in {scores_name}", rec.where)
        pairs.append((rec, found[1]))
    if index:
        key, (lineno, _) = next(iter(index.items()))
        raise InputError(f"{what} {key!r} is not in the labelled file",
                         f"{scores_name}:{lineno}")
    return pairs


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


def _score(out: Mapping[str, Any], rule: Any, where: str) -> float:
    try:
        pct = out["scores"][rule.name][rule.label]
    except (KeyError, TypeError):
        raise InputError(f"its scored record has no {rule.label} score for rule {rule.name!r}; "
                         "score with the same rules file", where) from None
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise InputError(f"scores.{rule.name}.{rule.label}: expected a percentage, got {pct!r}", where)
    return round(pct / 100, 10)  # 87.31 -> 0.8731, the same float as the YAML text "0.8731"


def build_report(pairs: Sequence[Pair], rules: Sequence[Any], *, target_precision: float = 0.95,
                 overall_rules: Sequence[str] | None = None) -> Report:
    """Metrics per rule (records with a known label for it) and overall.

    Overall uses the rules that some record has a label for (all rules when labels are only
    `"expected"` verdicts): with `--map` to four rules, a fifth rule firing is not counted
    against data that never labelled it. Records whose overall truth is unknown are left out.
    """
    if not 0.0 < target_precision <= 1.0:
        raise UsageError(f"must be in (0, 1], got {target_precision}", "--target-precision")
    ok = [(rec, out) for rec, out in pairs if out.get("status") == "ok"]
    s = np.array([[_score(out, r, rec.where) for r in rules] for rec, out in ok], dtype=np.float64)
    s = s.reshape(len(ok), len(rules))
    # Current decisions exactly as `batch` takes them (decide works on the printed percentage).
    states = np.array([[rule_state(r, p) for r, p in zip(rules, row, strict=True)] for row in s], dtype="U9")
    states = states.reshape(s.shape)
    fired, near = states == "fired", states == "uncertain"
    rows, curves = [], {}
    for j, rule in enumerate(rules):
        known = np.array([rule.name in rec.labels for rec, _ in ok], dtype=bool)
        y = np.array([rec.labels[rule.name] for rec, _ in ok if rule.name in rec.labels], dtype=bool)
        summary = metrics.summarize(s[known, j], y, fired[known, j], near[known, j], target_precision)
        rows.append(Row(**asdict(summary), name=rule.name, label=rule.label, threshold=rule.threshold,
                        margin=rule.margin))
        curves[rule.name] = (s[known, j], y)
    if overall_rules is None:
        labelled = {name for rec, _ in ok for name in rec.labels}
        overall_rules = [r.name for r in rules if r.name in labelled] or [r.name for r in rules]
    chosen = set(overall_rules)
    cols = [j for j, r in enumerate(rules) if r.name in chosen]
    known = np.array([rec.expected is not None for rec, _ in ok], dtype=bool)
    y = np.array([rec.expected for rec, _ in ok if rec.expected is not None], dtype=bool)
    any_fired = fired[:, cols].any(axis=1)
    top = s[:, cols].max(axis=1) if cols else np.zeros(len(ok))
    summary = metrics.summarize(top[known], y, any_fired[known],
                                (~any_fired & near[:, cols].any(axis=1))[known], target_precision)
    overall = Row(**asdict(summary), name="overall")
    curves[OVERALL_CURVE] = (top[known], y)
    return Report(rows, overall, target_precision, len(pairs), len(ok), len(pairs) - len(ok),
                  [rules[j].name for j in cols], curves)


def evaluate_scores_file(labelled_path: str | Path, scores_path: str | Path, rules: Sequence[Any],
                         map_specs: Iterable[str] = (), *, target_precision: float = 0.95,
                         id_field: str = "id") -> Report:
    """`crossguard eval LABELLED --scores SCORED`: the whole path, no model."""
    names = [r.name for r in rules]
    labelled = read_labelled(labelled_path, names, parse_maps(map_specs, names), id_field)
    pairs = join_scores(labelled, read_jsonl(scores_path), str(scores_path))
    return build_report(pairs, rules, target_precision=target_precision)


_THRESHOLD_FIELDS = ("threshold", "best_f1_threshold", "target_precision_threshold")


def report_to_json(report: Report) -> dict[str, Any]:
    """The `--format json` document. Metrics rounded to 4 places; thresholds exact; null = undefined."""
    def row(r: Row) -> dict[str, Any]:
        d = {"name": r.name, "label": r.label, "threshold": r.threshold, "margin": r.margin, **asdict(r)}
        return {k: (round(v, 4) if isinstance(v, float) and k not in _THRESHOLD_FIELDS else v) for k, v in d.items()}
    return {"records": report.records, "scored": report.scored, "skipped": report.skipped,
            "target_precision": report.target_precision, "overall_rules": report.overall_rules,
            "rules": [row(r) for r in report.rules], "overall": row(report.overall)}


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


def suggested_thresholds(report: Report, by: str = "f1") -> dict[str, float]:
    """{rule: threshold} to write: best-F1 (`by="f1"`) or target-precision (`by="precision"`)."""
    attr = {"f1": "best_f1_threshold", "precision": "target_precision_threshold"}[by]
    return {r.name: getattr(r, attr) for r in report.rules if getattr(r, attr) is not None}


def format_threshold(t: float) -> str:
    """Shortest text that YAML reads back as exactly `t` (positional: PyYAML reads '1e-05' as a string)."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {t}")
    return np.format_float_positional(float(t), unique=True, trim="0")


def _node_keys(node: Any) -> dict[str, tuple[Any, Any]]:
    """{key: (key node, value node)} of a YAML mapping node's plain keys; {} for anything else."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def tune_rules_text(text: str, thresholds: Mapping[str, float], where: str = "rules") -> str:
    """Rules YAML text with new per-rule thresholds, editing only those values (comments stay).

    Replaces each named rule's `threshold:` value in place, or adds `threshold: X` after its
    `name:` line. The result is checked by re-parsing; if the edit cannot be verified, the
    file is re-dumped without comments rather than written wrong.
    """
    try:
        root, data = yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RulesError(f"not valid YAML: {' '.join(str(e).split())}", where) from None
    rules_node = _node_keys(root).get("rules", (None, None))[1]
    if not isinstance(rules_node, yaml.SequenceNode):
        raise RulesError("no 'rules' list to tune", where)
    newline = "\r\n" if "\r\n" in text else "\n"
    edits: list[tuple[int, int, str]] = []
    found: set[str] = set()
    names: list[str] = []
    for i, item in enumerate(rules_node.value):
        keys = _node_keys(item)
        name = keys["name"][1].value if "name" in keys else None
        names.append(str(name))
        if name not in thresholds:
            continue
        found.add(name)
        value = format_threshold(thresholds[name])
        data["rules"][i]["threshold"] = float(value)
        if "threshold" in keys:
            node = keys["threshold"][1]
            edits.append((node.start_mark.index, node.end_mark.index, value))
        elif item.flow_style:
            end = keys["name"][1].end_mark.index
            edits.append((end, end, f", threshold: {value}"))
        else:
            key_node, value_node = keys["name"]
            eol = text.find("\n", value_node.end_mark.index)
            line = f"{' ' * key_node.start_mark.column}threshold: {value}"
            at = len(text) if eol < 0 else eol + 1
            edits.append((at, at, newline + line if eol < 0 else line + newline))
    missing = sorted(set(thresholds) - found)
    if missing:
        raise RulesError(f"no rule named {missing[0]!r} to tune{_did_you_mean(missing[0], names)}", where)
    out = text
    for start, end, new in sorted(edits, reverse=True):
        out = out[:start] + new + out[end:]
    try:
        verified = yaml.safe_load(out) == data
    except yaml.YAMLError:
        verified = False
    return out if verified else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_tuned_rules(rules_path: str | Path, out_path: str | Path, thresholds: Mapping[str, float]) -> None:
    """`--write-rules`: the rules file with new thresholds, everything else as it was."""
    try:
        text = Path(rules_path).read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(f"cannot read: {e.strerror or e}", str(rules_path)) from None
    tuned = tune_rules_text(text, thresholds, str(rules_path))
    try:
        Path(out_path).write_text(tuned, encoding="utf-8", newline="")
    except OSError as e:
        raise OutputError(f"cannot write: {e.strerror or e}", str(out_path)) from None


def plot_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> None:
    """`--plot`: precision-recall step curves (`report.curves`), one per rule with positives."""
    try:
        from matplotlib.figure import Figure  # optional; no pyplot, so no GUI backend or global state
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'crossguard[plot]'") from None
    fig = Figure(figsize=(6.4, 5.0))
    ax = fig.subplots()
    for name, (s, y) in curves.items():
        if np.any(y):
            prec, rec, _ = metrics.pr_curve(s, y)
            ax.step(np.r_[0.0, rec], np.r_[prec[0], prec], where="pre",
                    label=f"{name} (AP {metrics.average_precision(s, y):.3f})",
                    linestyle="--" if name == OVERALL_CURVE else "-")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="crossguard eval")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise OutputError(f"cannot write: {e.strerror or e}", str(path)) from None
    except ValueError as e:  # unknown image format from the extension
        raise UsageError(str(e), "--plot") from None
