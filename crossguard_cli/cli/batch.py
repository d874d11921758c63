"""`crossguard batch [PATH ...]`: one output record per input record, in order, flushed per group."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from typing import Annotated

import typer

from crossguard_cli.cli.options import choice, engine_options
from crossguard_cli.engine.options import EngineOptions


@engine_options
def batch(
    paths: Annotated[list[str] | None, typer.Argument(metavar="PATH", help="Files to read in order; - or none: stdin.",
                                                       show_default=False)] = None,
    input_format: Annotated[str, typer.Option(
        "--input-format", callback=choice("--input-format", ("auto", "text", "jsonl")), metavar="FORMAT",
        rich_help_panel="Input", help="auto (by extension, else content), text or jsonl.")] = "auto",
    field: Annotated[str | None, typer.Option(
        "--field", metavar="NAME", rich_help_panel="Input",
        help="JSONL text field. [default: the first of text, prompt, input, content]")] = None,
    id_field: Annotated[str | None, typer.Option(
        "--id-field", metavar="NAME", rich_help_panel="Input",
        help="JSONL id field copied to the output. [default: id, when present]")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", callback=choice("--format", ("table", "jsonl", "csv")), metavar="FORMAT",
        rich_help_panel="Output", help="table, jsonl or csv. [default: table on a terminal, else jsonl]")] = None,
    on_error: Annotated[str, typer.Option(
        "--on-error", callback=choice("--on-error", ("continue", "abort")), metavar="WHAT", rich_help_panel="Output",
        help="continue: error records and go on; abort: stop at the first.")] = "continue",
    exit_zero: Annotated[bool, typer.Option(
        "--exit-zero", rich_help_panel="Output", help="Exit 0 even when a record is flagged.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel="Output",
                                        help="No summary line on stderr.")] = False,
    *,
    engine: EngineOptions,
) -> int:
    """Score every record of each PATH (or stdin), one output record per input record, in order."""
    from crossguard_cli.api import Guard
    from crossguard_cli.cli.console import console, drop_stdout, machine_stdout, private_stdin
    from crossguard_cli.cli.progress import Progress
    from crossguard_cli.engine.results import Tally
    from crossguard_cli.errors import OutputError
    from crossguard_cli.records.inputs import read_records
    from crossguard_cli.records.writers import make_writer

    paths = paths or ["-"]
    stdin = private_stdin() if "-" in paths else None
    records = read_records(paths, input_format=input_format, field=field, id_field=id_field, stdin=stdin)
    guard = Guard.from_options(engine)
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    start = time.monotonic()
    tally = Tally()
    with Progress(console(stderr=True), enabled=sys.stderr.isatty() and not quiet) as bar:
        try:
            if fmt == "table":
                from crossguard_cli.cli.render import TableWriter

                # The table on the terminal that shows the bar goes through the bar's console, above it.
                on_screen = bar.enabled and sys.stdout.isatty()
                writer = TableWriter(bar.console if on_screen else console(), guard.rules)
            else:
                writer = make_writer(fmt, machine_stdout(), guard.rules)
            with closing(guard.stream_groups(records)) as groups:  # stops the reader if we stop early
                for group in groups:
                    if _write_group(group, writer, tally, bar, abort=on_error == "abort"):
                        break
            writer.close()
        except BrokenPipeError:
            raise
        except OSError as exc:  # disk full, a closed stream: one line, and stdout is given up
            drop_stdout()
            raise OutputError(f"cannot write results: {exc.strerror or exc}", where="stdout") from None
    if not quiet:
        sys.stderr.write(tally.summary(time.monotonic() - start) + "\n")
    return tally.exit_code(exit_zero)


def _write_group(group, writer, tally, bar, *, abort: bool) -> bool:
    """Write one scored group and flush it; True when `--on-error abort` must stop the run here."""
    from crossguard_cli.records.writers import where

    for result in group:
        out = result.to_dict()
        tally.add(out)
        writer.write(out)
        if out["status"] == "error":
            bar.line(f"crossguard: error: {where(out)}: {out['error']}")
            if abort:
                writer.flush()
                return True
    writer.flush()
    bar.update(tally)
    return False
