"""Acting on an eval report: suggested thresholds, a tuned rules file, precision-recall plots.

`--write-rules` edits only the threshold values of the rules file's text, so comments, key
order and quoting stay as the user wrote them; the edit is verified by re-parsing. Thresholds
are written as the shortest decimal that YAML reads back as exactly the suggested float, so
`batch` with the tuned file fires on exactly the records the report counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import metrics
from .errors import OutputError, RulesError, UsageError, did_you_mean
from .evaluate import OVERALL_CURVE, Report


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
        raise RulesError(f"no rule named {missing[0]!r} to tune{did_you_mean(missing[0], names)}", where)
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


PLOT_HINT = "--plot needs matplotlib: pip install 'crossguard[plot]'"


def check_plot_path(path: str | Path) -> None:
    """Fail early (before any scoring) when `--plot` cannot work: no matplotlib, or an unknown format."""
    try:
        import matplotlib  # noqa: F401  (first: a stubbed-out package must fail even with submodules loaded)
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise UsageError(PLOT_HINT) from None
    ext = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise UsageError(f"cannot draw a {ext!r} image; end the file name with one of .{', .'.join(sorted(formats))}",
                         "--plot")


def plot_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> None:
    """`--plot`: precision-recall step curves (`report.curves`), one per rule with positives."""
    check_plot_path(path)
    try:
        from matplotlib.figure import Figure  # no pyplot, so no GUI backend or global state
    except ImportError:
        raise UsageError(PLOT_HINT) from None

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
