"""`crossguard validate [RULES]`: check a rules file without loading any model."""

from __future__ import annotations

from typing import Annotated

import typer


def validate(
    rules: Annotated[str | None, typer.Argument(
        metavar="RULES", envvar="CROSSGUARD_RULES",
        help="Rules file, or a packaged preset: default, duoguard, prompt-guard. [default: the packaged rules]",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary; only the exit code.")] = False,
) -> int:
    """Check a rules file without loading any model. Exit 0 if valid, 2 if not."""
    from crossguard_cli.cli.console import console
    from crossguard_cli.rules import load_rules, summarize

    ruleset = load_rules(rules)
    if not quiet:
        from rich.table import Table

        table = Table(title=f"{ruleset.source}: {len(ruleset.rules)} rules, mode {ruleset.mode}"
                      + (f", model {ruleset.model}" if ruleset.model else ""), title_justify="left")
        for col in ("rule", "scored by", "label", "threshold", "margin", "hypotheses"):
            table.add_column(col, justify="right" if col in ("threshold", "margin", "hypotheses") else "left")
        for row in summarize(ruleset):
            table.add_row(row["name"], row["classifier"] or "nli", row["label"], f"{row['threshold']:g}",
                          f"{row['margin']:g}", str(row["hypotheses"]) if not row["classifier"] else "-")
        console().print(table)
    return 0
