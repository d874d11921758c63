"""Acting on an eval report: suggested thresholds, a tuned rules file, precision-recall plots.

`--write-rules` edits only the threshold (and, for learned bands, margin) values of the rules
file's text (rules/edit.py), so comments, key order and quoting stay as the user wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from crossguard_cli.errors import OutputError, RulesError, UsageError
from crossguard_cli.evaluation import metrics
from crossguard_cli.evaluation.band_report import BandRow
from crossguard_cli.evaluation.report import OVERALL_CURVE, Report
from crossguard_cli.rules.edit import set_settings


def suggested_thresholds(report: Report, by: str = "f1") -> dict[str, float]:
    """{rule: threshold} to write: best-F1 (`by="f1"`) or target-precision (`by="precision"`)."""
    attr = {"f1": "best_f1_threshold", "precision": "target_precision_threshold"}[by]
    return {r.name: getattr(r, attr) for r in report.rules if getattr(r, attr) is not None}


def band_settings(report: Report) -> dict[str, dict[str, float]]:
    """{rule: {threshold, margin}} of each learned band (`--target-accuracy`): the band's upper end
    and the margin that makes `decide` uncertain exactly on it (see `bands.Band.margin`)."""
    if report.bands is None:
        return {}
    return {r.name: {"threshold": r.band.threshold, "margin": r.band.margin}
            for r in report.bands.rules if r.band is not None}


def write_tuned_rules(rules_path: str | Path, out_path: str | Path,
                      thresholds: Mapping[str, float | Mapping[str, float]]) -> None:
    """`--write-rules`: the rules file with new thresholds (or {threshold, margin} per rule),
    everything else as it was."""
    try:
        text = Path(rules_path).read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(f"cannot read: {e.strerror or e}", str(rules_path)) from None
    settings = {name: dict(v) if isinstance(v, Mapping) else {"threshold": v} for name, v in thresholds.items()}
    tuned = set_settings(text, settings, str(rules_path))
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


def plot_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
            risk: Sequence[BandRow] | None = None) -> None:
    """`--plot`: precision-recall step curves (`report.curves`), one per rule with positives; with
    `risk` (the band rows of `--target-accuracy`) a second panel of risk-coverage curves: the
    plain confidence cut (and the abstention head) as lines, each learned band as a point."""
    check_plot_path(path)
    try:
        from matplotlib.figure import Figure  # no pyplot, so no GUI backend or global state
    except ImportError:
        raise UsageError(PLOT_HINT) from None

    fig = Figure(figsize=(12.8 if risk is not None else 6.4, 5.0))
    axes = fig.subplots(1, 2 if risk is not None else 1, squeeze=False)[0]
    ax = axes[0]
    for name, (s, y) in curves.items():
        if np.any(y):
            prec, rec, _ = metrics.pr_curve(s, y)
            ax.step(np.r_[0.0, rec], np.r_[prec[0], prec], where="pre",
                    label=f"{name} (AP {metrics.average_precision(s, y):.3f})",
                    linestyle="--" if name == OVERALL_CURVE else "-")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="crossguard eval")
    if risk is not None:
        _plot_risk(axes[1], risk)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left" if ax is axes[0] else "upper left", fontsize="small")
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise OutputError(f"cannot write: {e.strerror or e}", str(path)) from None


def _plot_risk(ax, rows: Sequence[BandRow]) -> None:
    for i, row in enumerate(rows):
        colour = f"C{i % 10}"
        for method, style in (("confidence cut", "-"), ("abstention head", ":")):
            coverage, risk = row.curves.get(method, (np.zeros(0), np.zeros(0)))
            if coverage.size:
                ax.plot(coverage, risk, linestyle=style, color=colour, label=f"{row.name}: {method}")
        for key, marker in (("band", "o"), ("head", "s")):
            fig = row.figures.get(key)
            if fig is not None and fig.accuracy is not None:
                ax.plot([fig.coverage], [1 - fig.accuracy], marker=marker, color=colour, linestyle="none",
                        label=f"{row.name}: {'band' if key == 'band' else 'head'}")
    ax.set(xlabel="coverage (share decided)", ylabel="risk (error rate on decided)", xlim=(0, 1.02),
           title="risk-coverage")
