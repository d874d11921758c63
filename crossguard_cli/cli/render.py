"""Rich rendering for people at a terminal (presentation only; pipes get jsonl or csv).

`check` shows one table row per rule with E/N/C and the decision; `batch` prints one compact
line per record as results arrive, so a terminal user sees progress and verdicts live.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from crossguard_cli.engine.decide import rule_state
from crossguard_cli.records.writers import where
from crossguard_cli.rules import RuleSet

_STYLE = {"flagged": "bold red", "uncertain": "yellow", "allowed": "green", "error": "bold magenta",
          "empty": "dim", "fired": "bold red", "-": "dim"}


def rule_rows(ruleset: RuleSet, record: dict[str, Any]) -> list[tuple[str, float, float, float, str]]:
    """(name, E%, N%, C%, decision) per rule, decision being fired / uncertain / -."""
    rows = []
    for rule in ruleset.rules:
        s = record["scores"][rule.name]
        state = rule_state(rule, s[rule.label] / 100.0)
        rows.append((rule.name, s["entailment"], s["neutral"], s["contradiction"],
                     {"fired": "fired", "uncertain": "uncertain"}.get(state, "-")))
    return rows


def _snippet(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class TableWriter:
    """Writes records to a Rich console: a full table per record, or one line per record."""

    def __init__(self, console, ruleset: RuleSet, detailed: bool = False) -> None:
        self.console = console
        self.ruleset = ruleset
        self.detailed = detailed

    def write(self, record: dict[str, Any]) -> None:
        if self.detailed and record.get("status") == "ok":
            self._table(record)
        else:
            self._line(record)

    def _table(self, record: dict[str, Any]) -> None:
        table = Table(title=escape(_snippet(record.get("text"), 80)), title_justify="left")
        table.add_column("rule")
        for head in ("E %", "N %", "C %"):
            table.add_column(head, justify="right")
        table.add_column("decision")
        for name, e, n, c, state in rule_rows(self.ruleset, record):
            style = _STYLE.get(state, "")
            table.add_row(escape(name), f"{e:.2f}", f"{n:.2f}", f"{c:.2f}", f"[{style}]{state}[/]")
        self.console.print(table)
        verdict = record["verdict"]
        extra = ""
        if record.get("flagged"):
            extra += " flagged: " + ", ".join(record["flagged"])
        if record.get("uncertain"):
            extra += " uncertain: " + ", ".join(record["uncertain"])
        if record.get("route") is not None:
            extra += f" route: {record['route']}"
        if record.get("windows", 1) > 1 or record.get("truncated"):
            extra += f" (windows: {record['windows']}, truncated: {str(record['truncated']).lower()})"
        self.console.print(f"verdict: [{_STYLE[verdict]}]{verdict}[/]{escape(extra)}")

    def _line(self, record: dict[str, Any]) -> None:
        status = record.get("status")
        place = where(record)
        if status == "ok":
            verdict = record["verdict"]
            names = record["flagged"] or record["uncertain"]
            detail = ", ".join(names)
            text = _snippet(record.get("text"))
            self.console.print(f"{escape(place)}  [{_STYLE[verdict]}]{verdict:9}[/] "
                               f"{escape(detail):30} [dim]{escape(text)}[/]")
        elif status == "error":
            self.console.print(f"{escape(place)}  [{_STYLE['error']}]error[/]     {escape(record['error'])}")
        else:
            self.console.print(f"{escape(place)}  [dim]empty[/]")

    def flush(self) -> None:
        self.console.file.flush()

    def close(self) -> None:
        self.flush()
