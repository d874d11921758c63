"""Rich rendering for people at a terminal (presentation only; pipes get jsonl or csv).

`check` shows one table row per rule with E/N/C and the decision; `batch` prints one compact
line per record as results arrive, so a terminal user sees progress and verdicts live.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from crossguard_cli.records.writers import where
from crossguard_cli.rules import RuleSet

_STYLE = {"flagged": "bold red", "uncertain": "yellow", "allowed": "green", "error": "bold magenta",
          "empty": "dim", "fired": "bold red", "-": "dim"}


COLUMNS = (("entailment", "E %"), ("neutral", "N %"), ("contradiction", "C %"), ("probability", "P %"),
           ("abstain", "abstain %"))


def rule_rows(ruleset: RuleSet, record: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    """(name, the rule's score fields, decision) per rule, decision being fired / uncertain / -.

    The decision is the record's own (its `flagged` and `uncertain` lists), so what the table
    shows is what `batch` and the service say, whatever decided it (threshold, margin, abstain).
    """
    flagged, uncertain = set(record.get("flagged", ())), set(record.get("uncertain", ()))
    return [(rule.name, record["scores"][rule.name],
             "fired" if rule.name in flagged else "uncertain" if rule.name in uncertain else "-")
            for rule in ruleset.rules]


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
        rows = rule_rows(self.ruleset, record)
        shown = [(key, head) for key, head in COLUMNS if any(key in fields for _, fields, _ in rows)]
        table.add_column("rule")
        for _, head in shown:
            table.add_column(head, justify="right")
        table.add_column("decision")
        for name, fields, state in rows:
            style = _STYLE.get(state, "")
            cells = [f"{fields[key]:.2f}" if key in fields else "" for key, _ in shown]
            table.add_row(escape(name), *cells, f"[{style}]{state}[/]")
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
