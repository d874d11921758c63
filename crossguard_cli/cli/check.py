"""`crossguard check TEXT`: score one prompt and show it; exit 1 if a rule fired."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from crossguard_cli.cli.options import choice, engine_options
from crossguard_cli.engine.options import EngineOptions


@engine_options
def check(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The prompt, or - to read all of stdin as one prompt.")],
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", callback=choice("--format", ("table", "jsonl", "csv", "json")), metavar="FORMAT",
        rich_help_panel="Output", help="table, json, jsonl or csv. [default: table on a terminal, else json]")] = None,
    *,
    engine: EngineOptions,
) -> int:
    """Score one prompt against every rule. Exit 1 if a rule fired, 0 if not, 2 on error."""
    from crossguard_cli.api import Guard
    from crossguard_cli.cli.console import console, machine_stdout
    from crossguard_cli.errors import CrossguardError, UsageError
    from crossguard_cli.records.inputs import record_from_argument, record_from_stdin_whole
    from crossguard_cli.records.writers import make_writer, where

    record = record_from_stdin_whole() if text == "-" else record_from_argument(text)
    if record.status == "error":
        raise CrossguardError(record.error, where=where(record))
    if record.status == "empty":
        raise UsageError("the prompt is empty (nothing visible after normalisation); nothing to score",
                         where=where(record))
    guard = Guard.from_options(engine)
    (result,) = guard.check_many([record])
    if result.status == "error":
        raise CrossguardError(result.error, where=where(record))
    out = result.to_dict()
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    if fmt == "table":
        from crossguard_cli.cli.render import TableWriter

        writer = TableWriter(console(), guard.rules, detailed=True)
    else:
        writer = make_writer(fmt, machine_stdout(), guard.rules, guard.abstains)
    writer.write(out)
    writer.close()
    return 1 if result.verdict == "flagged" else 0
