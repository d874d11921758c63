"""Output records and the writers for jsonl, json, csv and the terminal.

One output record per input record, in input order; writers flush after every group of
records so a pipeline downstream sees results as they are ready, not at the end of input.
The record shape is the contract (see CONTRACT.md, "Output records").
"""

from __future__ import annotations

import csv
import json
import re
from typing import IO, Any

from crossguard_cli.decide import Decision, percent, rule_state
from crossguard_cli.inputs import Record
from crossguard_cli.rules import LABELS, RuleSet
from crossguard_cli.scorer import PromptScores

LABEL_KEYS = LABELS

# Valid inside JSON strings, but `str.splitlines`, editors and some JSON parsers break lines there.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")


def to_json(record: dict[str, Any], indent: int | None = None) -> str:
    """JSON text of `record`, non-ASCII kept readable, but never a character that breaks a line."""
    text = json.dumps(record, ensure_ascii=False, indent=indent)
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def where(record: dict[str, Any] | Record) -> str:
    """`source:line` of a record (or of an output record), `source` alone when there is no line."""
    source, line = (record["source"], record["line"]) if isinstance(record, dict) else (record.source, record.line)
    return source if line is None else f"{source}:{line}"


def _head(rec: Record) -> dict[str, Any]:
    head: dict[str, Any] = {"source": rec.source, "line": rec.line}
    if rec.id is not None:
        head["id"] = rec.id
    return head


def error_record(rec: Record, message: str | None = None) -> dict[str, Any]:
    return {**_head(rec), "status": "error", "error": message or rec.error or "unknown error"}


def empty_record(rec: Record) -> dict[str, Any]:
    return {**_head(rec), "status": "empty"}


def scored_record(rec: Record, ruleset: RuleSet, scores: PromptScores, decision: Decision) -> dict[str, Any]:
    """The contract's scored record: decisions, every rule's E/N/C percentages, windows."""
    out = {**_head(rec), "text": rec.text, "status": "ok", "verdict": decision.verdict,
           "flagged": decision.flagged, "uncertain": decision.uncertain}
    if ruleset.mode == "route":
        out["route"] = decision.route
    out["scores"] = {
        name: {label: percent(getattr(s, label)) for label in LABEL_KEYS} for name, s in scores.rules.items()
    }
    out["truncated"] = scores.truncated
    out["windows"] = scores.windows
    return out


class JsonlWriter:
    """One JSON object per line; `ensure_ascii=False` keeps non-English prompts readable."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(to_json(record) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


class JsonWriter(JsonlWriter):
    """`check --format json`: the single record, indented for people and `jq` alike."""

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(to_json(record, indent=2) + "\n")


class CsvWriter:
    """The same fields as jsonl, flattened: one column per rule and label."""

    def __init__(self, stream: IO[str], ruleset: RuleSet) -> None:
        self.stream = stream
        self.rules = [r.name for r in ruleset.rules]
        self.route = ruleset.mode == "route"
        cols = ["source", "line", "id", "status", "verdict", "flagged", "uncertain"]
        cols += ["route"] if self.route else []
        cols += [f"{r}.{label}" for r in self.rules for label in LABEL_KEYS]
        cols += ["truncated", "windows", "error", "text"]
        self.writer = csv.DictWriter(stream, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
        self.writer.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        row = {k: v for k, v in record.items() if k != "scores"}
        for key in ("flagged", "uncertain"):
            if key in row:
                row[key] = ";".join(row[key])
        for rule, labels in record.get("scores", {}).items():
            for label, value in labels.items():
                row[f"{rule}.{label}"] = f"{value:.2f}"
        if isinstance(row.get("id"), (dict, list, bool)):
            row["id"] = json.dumps(row["id"], ensure_ascii=False)
        if "truncated" in row:  # the same spelling as jsonl, not Python's True/False
            row["truncated"] = json.dumps(row["truncated"])
        self.writer.writerow(row)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


def make_writer(fmt: str, stream: IO[str], ruleset: RuleSet, console=None, detailed: bool = False):
    """The writer for `fmt`; `table` needs a Rich console (the CLI owns consoles)."""
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "json":
        return JsonWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, ruleset)
    if fmt == "table":
        from crossguard_cli.table import TableWriter

        return TableWriter(console, ruleset, detailed=detailed)
    raise ValueError(f"unknown format {fmt!r}")


def rule_rows(ruleset: RuleSet, record: dict[str, Any]) -> list[tuple[str, float, float, float, str]]:
    """(name, E%, N%, C%, decision) per rule, decision being fired / uncertain / -."""
    rows = []
    for rule in ruleset.rules:
        s = record["scores"][rule.name]
        state = rule_state(rule, s[rule.label] / 100.0)
        rows.append((rule.name, s["entailment"], s["neutral"], s["contradiction"],
                     {"fired": "fired", "uncertain": "uncertain"}.get(state, "-")))
    return rows
