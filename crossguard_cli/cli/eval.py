"""`crossguard eval`: labelled data -> (scoring through Guard) -> report -> table, JSON, tuned rules, plot.

The logic lives in evaluation/. Labels are read (with `batch`'s own reader) before any model
loads, so a bad label costs nothing; records that cannot be read or scored are reported on
stderr with file and line and make the run exit 2, as in `batch`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from crossguard_cli.cli.options import FieldOpt, IdFieldOpt, choice, engine_options, within
from crossguard_cli.engine.options import EngineOptions
from crossguard_cli.errors import InputError, UsageError


@engine_options
def eval_command(
    labelled: Annotated[str, typer.Argument(
        metavar="LABELLED", help="Labelled JSONL (.gz works): \"labels\": [rules], \"expected\": "
        "flagged|allowed, or category columns with --map.")],
    maps: Annotated[list[str] | None, typer.Option(
        "--map", metavar="KEY=RULE", rich_help_panel="Input",
        help="Map a 0/1 column to a rule (repeatable); an absent column means unknown.")] = None,
    scores: Annotated[str | None, typer.Option(
        "--scores", metavar="FILE", rich_help_panel="Input",
        help="Evaluate an earlier `batch` output instead of running the model.")] = None,
    field: FieldOpt = None,
    id_field: IdFieldOpt = None,
    target_precision: Annotated[float, typer.Option(
        "--target-precision", callback=within("--target-precision", 0.0, 1.0), metavar="P",
        rich_help_panel="Evaluation", help="Also suggest the threshold that reaches this precision (0 to 1).")] = 0.95,
    tune_for: Annotated[str, typer.Option(
        "--tune-for", callback=choice("--tune-for", ("f1", "precision")), metavar="GOAL",
        rich_help_panel="Evaluation", help="Which suggested threshold --write-rules writes: f1 or precision.")] = "f1",
    target_accuracy: Annotated[float | None, typer.Option(
        "--target-accuracy", callback=within("--target-accuracy", 0.0, 1.0), metavar="A",
        rich_help_panel="Evaluation", help="Learn per-rule abstention bands: the most records decided at this "
        "accuracy on them (0 to 1).")] = None,
    holdout: Annotated[float | None, typer.Option(
        "--holdout", callback=within("--holdout", 0.0, 1.0), metavar="FRACTION", rich_help_panel="Evaluation",
        help="Tune on the other records, measure on this share (split by id, else source and line).")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", callback=choice("--format", ("table", "json")), metavar="FORMAT", rich_help_panel="Output",
        help="table or json. [default: table on a terminal, else json]")] = None,
    write_rules: Annotated[str | None, typer.Option(
        "--write-rules", metavar="FILE", rich_help_panel="Output",
        help="Write the rules file with the suggested thresholds (with --target-accuracy: the bands' "
        "thresholds and margins), comments kept.")] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="PNG", rich_help_panel="Output",
        help="Draw precision-recall curves, and risk-coverage curves with --target-accuracy "
        "(needs matplotlib).")] = None,
    *,
    engine: EngineOptions,
) -> int:
    """Measure rules against labelled prompts; suggest thresholds and abstention bands. Exit 0, or 2 on error."""
    from crossguard_cli.api import resolve_rules
    from crossguard_cli.cli.console import error_line
    from crossguard_cli.evaluation import labels as lb
    from crossguard_cli.evaluation import report as ev
    from crossguard_cli.evaluation import tune
    from crossguard_cli.records.writers import where

    if labelled == "-":  # labels are read before any model loads, and the file is scored after
        raise UsageError("the labelled data must be a file, not stdin: eval reads it before scoring it")
    ruleset = resolve_rules(engine.rules, engine.threshold)
    if not 0.0 < target_precision <= 1.0:  # checked before any scoring, as are the outputs' needs
        raise UsageError(f"must be in (0, 1], got {target_precision:g}", "--target-precision")
    if target_accuracy is not None and not 0.0 < target_accuracy <= 1.0:
        raise UsageError(f"must be in (0, 1], got {target_accuracy:g}", "--target-accuracy")
    if holdout is not None and not 0.0 < holdout < 1.0:
        raise UsageError(f"must be between 0 and 1 (exclusive), got {holdout:g}", "--holdout")
    if plot:
        tune.check_plot_path(plot)
    for out_path, option in ((write_rules, "--write-rules"), (plot, "--plot")):
        if out_path and not Path(out_path).absolute().parent.is_dir():
            raise UsageError(f"no such folder: {Path(out_path).parent}", option)
    names = [r.name for r in ruleset.rules]
    mapping = lb.parse_maps(maps or [], names)
    data = lb.read_labelled(labelled, names, mapping, id_field=id_field or "id", field=field)
    if scores:
        bad_scores: list = []
        scored = list(lb.read_objects(scores, bad_scores))
        if bad_scores:  # a scores file that cannot be read cannot be joined: stop at its first bad line
            for rec in bad_scores[:-1]:
                error_line(f"{where(rec)}: {rec.error}")
            raise InputError(bad_scores[-1].error or "unreadable record", where(bad_scores[-1]))
        pairs = lb.join_scores(data.labelled, scored, scores)
        failures = [(r.line, f"{where(r)}: {r.error}") for r in data.unreadable]
    else:
        from crossguard_cli.api import Guard

        guard = Guard.from_options(engine, ruleset)
        pairs = lb.pair_in_order(data, (r.to_dict() for r in guard.stream(data.records)))
        failures = [(r.line, f"{where(r)}: {r.error}") for r in data.unreadable]
    # Every labelled record that has no score is reported, as `batch` reports it, and fails the run.
    failures += [(truth.line, f"{where(out)}: {out.get('error') or 'not scored'}") for truth, out in pairs
                 if out.get("status") == "error"]
    for _, failure in sorted(failures, key=lambda f: f[0]):
        error_line(failure)
    report = ev.build_report(pairs, ruleset.rules, target_precision=target_precision,
                             target_accuracy=target_accuracy, holdout=holdout)
    if (fmt or ("table" if sys.stdout.isatty() else "json")) == "json":
        sys.stdout.write(json.dumps(ev.report_to_json(report), indent=2) + "\n")
    else:
        _print_table(report, ev.report_rows(report))
        if report.bands is not None:
            _print_bands(report)
    sys.stdout.flush()
    if write_rules:
        rules_path = engine.rules
        if rules_path is None:
            from crossguard_cli.rules import default_rules_path

            rules_path = str(default_rules_path())
        if report.bands is not None:  # the bands: threshold and margin per rule that has one
            suggested = tune.band_settings(report)
            tune.write_tuned_rules(rules_path, write_rules, suggested)
            why: dict[str, list[str]] = {}  # reason -> rules, so unlabelled rules make one short clause
            for r in report.bands.rules:
                if r.name not in suggested:
                    why.setdefault("no labels" if r.positives + r.negatives == 0 else r.reason, []).append(r.name)
            kept = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in why.items())
            sys.stderr.write(f"crossguard: wrote {write_rules} with bands for accuracy {target_accuracy:g}"
                             + (f"; kept the thresholds and margins of {kept}" if kept else "") + "\n")
        else:
            suggested = tune.suggested_thresholds(report, by=tune_for)
            tune.write_tuned_rules(rules_path, write_rules, suggested)
            kept = [r.name for r in report.rules if r.name not in suggested]
            why = "no positive labels" if tune_for == "f1" else f"no threshold reaches precision {target_precision:g}"
            sys.stderr.write(f"crossguard: wrote {write_rules} with thresholds tuned for {tune_for}"
                             + (f"; kept the thresholds of {', '.join(kept)} ({why})" if kept else "") + "\n")
    if plot:
        tune.plot_pr(report.curves, plot, None if report.bands is None else report.bands.rules)
        sys.stderr.write(f"crossguard: wrote {plot}\n")
    return 2 if failures else 0


def _where_measured(report) -> str:
    if report.holdout is None:
        return "figures are in-sample (tuned and measured on the same records; --holdout measures apart)"
    return (f"tuned on {report.tuned_on} records, measured on {report.measured_on} held out "
            f"(--holdout {report.holdout:g})")


def _print_table(report, rows: list[dict[str, str]]) -> None:
    shown = [row for row in rows if row["n"] != "0"]  # rules the labels say nothing about
    hidden = len(rows) - len(shown)
    title = (f"{report.records} labelled records, {report.scored} scored, {report.skipped} skipped; "
             f"target precision {report.target_precision:g}"
             + (f"; {hidden} rules without labels not shown" if hidden else ""))
    if report.holdout is not None:
        title += f"; {_where_measured(report)}"
    _print_rows(title, shown, list(rows[0]))


def _print_bands(report) -> None:
    from crossguard_cli.evaluation import band_report as br

    rows = br.band_rows(report.bands)
    if rows:
        _print_rows(f"abstention bands for accuracy {report.bands.target_accuracy:g} on decided records; "
                    f"{_where_measured(report)}", rows, list(rows[0]))


def _print_rows(title: str, rows: list[dict[str, str]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col in ("rule", "method", "abstains on") else "right")
    for row in rows:
        table.add_row(*row.values())
    console = Console(soft_wrap=True, highlight=False, force_terminal=sys.stdout.isatty())
    if not console.is_terminal:
        console.width = 200  # a table piped to a file should not be squeezed to 80 columns
    console.print(table)
