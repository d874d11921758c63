"""`crossguard eval`: wiring labelled data -> (scoring) -> report -> table, JSON, tuned rules, plot.

Kept beside cli.py rather than in it so each stays readable; the logic lives in labels.py,
evaluate.py, metrics.py and tune.py. Labels are read before any model loads, so a bad label
costs nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from crossguard_cli.errors import UsageError
from crossguard_cli.options import (
    BackendOpt,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    LongOpt,
    MaxCharsOpt,
    MaxLenOpt,
    ModelOpt,
    RevisionOpt,
    RulesOpt,
    ThresholdOpt,
    choice,
    within,
)


def eval_command(
    labelled: Annotated[str, typer.Argument(metavar="LABELLED", help="Labelled JSONL (.gz works): \"labels\": [rules], "
                                                 "\"expected\": flagged|allowed, or category columns with --map.")],
    maps: Annotated[list[str] | None, typer.Option("--map", metavar="KEY=RULE", help="Map a 0/1 column to a "
                    "rule (repeatable); an absent column means unknown.")] = None,
    scores: Annotated[str | None, typer.Option("--scores", metavar="FILE", help="Evaluate an earlier `batch` "
                      "output instead of running the model.")] = None,
    target_precision: Annotated[float, typer.Option(
        "--target-precision", callback=within("--target-precision", 0.0, 1.0),
        help="Also suggest the threshold that reaches this precision (0 to 1).")] = 0.95,
    tune_for: Annotated[str, typer.Option("--tune-for", callback=choice("--tune-for", ("f1", "precision")),
                        help="Which suggested threshold --write-rules writes: f1 or precision.")] = "f1",
    write_rules: Annotated[str | None, typer.Option("--write-rules", metavar="FILE", help="Write the rules "
                           "file with the suggested thresholds, comments kept.")] = None,
    plot: Annotated[str | None, typer.Option("--plot", metavar="PNG", help="Draw precision-recall curves "
                    "(needs matplotlib).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", callback=choice("--format", ("table", "json")),
                   help="table or json. [default: table on a terminal, else json]")] = None,
    field: Annotated[str | None, typer.Option("--field", help="Text field. [default: the first of text, "
                     "prompt, input, content]")] = None,
    id_field: Annotated[str, typer.Option("--id-field", help="Id field used to join --scores.")] = "id",
    rules: RulesOpt = None,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = 512,
    max_chars: MaxCharsOpt = 50_000,
    threshold: ThresholdOpt = None,
    long_input: LongOpt = "window",
    backend: BackendOpt = "torch",
) -> int:
    """Measure rules against labelled prompts and suggest thresholds. Exit 0, or 2 on error."""
    from crossguard_cli import evaluate as ev
    from crossguard_cli import labels as lb
    from crossguard_cli import tune
    from crossguard_cli.engine import resolve_rules

    if labelled == "-":  # read twice (labels first, then scoring), so it must be a file
        raise UsageError("the labelled data must be a file, not stdin: eval reads it before scoring it")
    ruleset = resolve_rules(rules, threshold)
    if not 0.0 < target_precision <= 1.0:  # checked before any scoring, as are the outputs' needs
        raise UsageError(f"must be in (0, 1], got {target_precision:g}", "--target-precision")
    if plot:
        tune.check_plot_path(plot)
    for out_path, option in ((write_rules, "--write-rules"), (plot, "--plot")):
        if out_path and not Path(out_path).absolute().parent.is_dir():
            raise UsageError(f"no such folder: {Path(out_path).parent}", option)
    names = [r.name for r in ruleset.rules]
    mapping = lb.parse_maps(maps or [], names)
    truth = lb.read_labelled(labelled, names, mapping, id_field=id_field)
    if scores:
        pairs = lb.join_scores(truth, lb.read_jsonl(scores), scores)
    else:
        pairs = lb.pair_in_order(truth, _score_file(labelled, field, id_field, dict(
            rules_path=rules, model=model, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
            max_length=max_length, max_chars=max_chars, threshold=threshold, long_input=long_input,
            backend=backend, ruleset=ruleset)))
    report = ev.build_report(pairs, ruleset.rules, target_precision=target_precision)
    if (fmt or ("table" if sys.stdout.isatty() else "json")) == "json":
        sys.stdout.write(json.dumps(ev.report_to_json(report), indent=2) + "\n")
    else:
        _print_table(report, ev.report_rows(report))
    sys.stdout.flush()
    if write_rules:
        if rules is None:
            from crossguard_cli.rules import default_rules_path

            rules = str(default_rules_path())
        suggested = tune.suggested_thresholds(report, by=tune_for)
        tune.write_tuned_rules(rules, write_rules, suggested)
        kept = [r.name for r in report.rules if r.name not in suggested]
        why = "no positive labels" if tune_for == "f1" else f"no threshold reaches precision {target_precision:g}"
        sys.stderr.write(f"crossguard: wrote {write_rules} with thresholds tuned for {tune_for}"
                         + (f"; kept the thresholds of {', '.join(kept)} ({why})" if kept else "") + "\n")
    if plot:
        tune.plot_pr(report.curves, plot)
        sys.stderr.write(f"crossguard: wrote {plot}\n")
    return 0


def _score_file(path: str, field: str | None, id_field: str, engine_options: dict):
    """Score every record of the labelled file with the same engine as `batch`."""
    from crossguard_cli.engine import build_scorer
    from crossguard_cli.errors import InputError
    from crossguard_cli.inputs import read_records
    from crossguard_cli.pipeline import stream

    scorer = build_scorer(**engine_options)
    records = read_records([path], input_format="jsonl", field=field, id_field=id_field)
    # The group size `batch` uses: model batches (and so their padding) are cut within a group,
    # so eval's forward passes match batch's and `eval` agrees with `eval --scores` on batch output.
    for group in stream(scorer, records):
        for out in group:
            if out["status"] == "error" and out.get("line") is None:
                raise InputError(out["error"], where=out["source"])
            yield out


def _print_table(report, rows: list[dict[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [row for row in rows if row["n"] != "0"]  # rules the labels say nothing about
    hidden = len(rows) - len(shown)
    table = Table(title=f"{report.records} labelled records, {report.scored} scored, {report.skipped} skipped; "
                        f"target precision {report.target_precision:g}"
                        + (f"; {hidden} rules without labels not shown" if hidden else ""), title_justify="left")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "rule" else "right")
    for row in shown:
        table.add_row(*row.values())
    console = Console(soft_wrap=True, highlight=False, force_terminal=sys.stdout.isatty())
    if not console.is_terminal:
        console.width = 200  # a table piped to a file should not be squeezed to 80 columns
    console.print(table)
