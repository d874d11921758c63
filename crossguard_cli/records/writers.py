"""Writers of output records: JSON lines, one indented JSON document, CSV.

One output record per input record, in input order; writers flush when told to (after every
group of records) so a pipeline downstream sees results as they are ready, not at the end of
input. The record shape is the contract (see CONTRACT.md, "Output records"); the records are
built by the engine, and only written here. The terminal table is the CLI's own (Rich).
"""

from __future__ import annotations

import csv
import json
import re
from typing import IO, Any

from crossguard_cli.rules import LABELS, RuleSet

# Valid inside JSON strings, but `str.splitlines`, editors and some JSON parsers break lines there.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")
FORMATS = ("jsonl", "json", "csv")


def to_json(record: dict[str, Any], indent: int | None = None) -> str:
    """JSON text of `record`, non-ASCII kept readable, but never a character that breaks a line."""
    text = json.dumps(record, ensure_ascii=False, indent=indent)
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def where(record: dict[str, Any] | Any) -> str:
    """`source:line` of a record (an output dict or a `Record`), `source` alone without a line."""
    if isinstance(record, dict):
        source, line = record.get("source"), record.get("line")
    else:
        source, line = record.source, record.line
    source = "input" if source is None else source
    return source if line is None else f"{source}:{line}"


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


def score_fields(rule, abstains: bool = False) -> tuple[str, ...]:
    """A rule's fields in a record's `scores`: E/N/C (and `abstain` with an abstention model) for an
    NLI rule, `probability` for a classifier rule."""
    if rule.classifier:
        return ("probability",)
    return (*LABELS, "abstain") if abstains else LABELS


def csv_columns(ruleset: RuleSet, abstains: bool = False) -> list[str]:
    """The CSV header: the jsonl fields, with one column per rule and score field."""
    cols = ["source", "line", "id", "status", "verdict", "flagged", "uncertain"]
    cols += ["route"] if ruleset.mode == "route" else []
    cols += [f"{r.name}.{field}" for r in ruleset.rules for field in score_fields(r, abstains)]
    return cols + ["truncated", "windows", "error", "text"]


class CsvWriter:
    """The same fields as jsonl, flattened: one column per rule and label."""

    def __init__(self, stream: IO[str], ruleset: RuleSet, abstains: bool = False) -> None:
        self.stream = stream
        self.writer = csv.DictWriter(stream, fieldnames=csv_columns(ruleset, abstains), lineterminator="\n",
                                     extrasaction="ignore")
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


def make_writer(fmt: str, stream: IO[str], ruleset: RuleSet, abstains: bool = False):
    """The writer for `fmt` (jsonl, json or csv) on a text stream; `abstains`: the NLI model has
    abstention heads (CSV gets `RULE.abstain` columns)."""
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "json":
        return JsonWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, ruleset, abstains)
    raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "CsvWriter", "JsonWriter", "JsonlWriter", "csv_columns", "make_writer", "score_fields", "to_json",
           "where"]
