"""A shard's contents: output records as JSON lines (batch's own writer) or a Parquet table.

JSON lines are written by `records.writers.JsonlWriter`, the writer `batch` uses, so a JSONL
shard holds the very lines `batch` prints for the same records.

Parquet needs one schema for every shard, whatever records a shard happens to hold, so the
schema comes from the rules, not from the data: the JSONL fields as columns (absent ones null),
`scores` as a struct with one field per rule, each {entailment, neutral, contradiction}
percentages (with `abstain` for a model with abstention heads), or {probability} for a
classifier rule. `id` is a string column: a string id as it is, any other JSON value (a number, an
object) as its JSON text, as `--format csv` writes it. A record's JSONL form is its Parquet row
with the null columns left out (and `line`, and `route` in route mode, kept even when null).
"""

from __future__ import annotations

import io
import json
from typing import Any

from crossguard_cli.records.writers import JsonlWriter, score_fields
from crossguard_cli.rules import RuleSet

FORMATS = ("jsonl", "parquet")
EXTENSIONS = {"jsonl": "jsonl", "parquet": "parquet"}


def jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    """The records as `batch` writes them: one UTF-8 JSON line each."""
    text = io.StringIO()
    writer = JsonlWriter(text)
    for record in records:
        writer.write(record)
    return text.getvalue().encode("utf-8")


def parquet_schema(ruleset: RuleSet, abstains: bool = False):
    """The same columns for every shard of a job, fixed by the rules (and whether the model abstains)."""
    import pyarrow as pa

    def fields_of(rule):
        return pa.struct([(field, pa.float64()) for field in score_fields(rule, abstains)])

    fields = [("source", pa.string()), ("line", pa.int64()), ("id", pa.string()), ("text", pa.string()),
              ("status", pa.string()), ("verdict", pa.string()), ("flagged", pa.list_(pa.string())),
              ("uncertain", pa.list_(pa.string()))]
    if ruleset.mode == "route":
        fields.append(("route", pa.string()))
    fields += [("scores", pa.struct([(rule.name, fields_of(rule)) for rule in ruleset.rules])),
               ("truncated", pa.bool_()), ("windows", pa.int64()), ("error", pa.string())]
    return pa.schema(fields)


def parquet_bytes(records: list[dict[str, Any]], ruleset: RuleSet, abstains: bool = False) -> bytes:
    """The records as one Parquet file (zstd), with `parquet_schema(ruleset, abstains)`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(ruleset, abstains)
    rows = [{**record, "id": _id_text(record.get("id"))} for record in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def encode(records: list[dict[str, Any]], fmt: str, ruleset: RuleSet, abstains: bool = False) -> bytes:
    if fmt == "jsonl":
        return jsonl_bytes(records)
    if fmt == "parquet":
        return parquet_bytes(records, ruleset, abstains)
    raise ValueError(f"unknown output format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _id_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


__all__ = ["EXTENSIONS", "FORMATS", "encode", "jsonl_bytes", "parquet_bytes", "parquet_schema"]
