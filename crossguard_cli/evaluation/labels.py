"""Labelled data for `crossguard eval`: the three label formats, reading, and matching scores.

A labelled JSONL file (`.gz` works) says per record what should happen, in one of three ways:

    {"text": "...", "labels": ["weapons"]}             # expected rule names; [] for safe
    {"text": "...", "expected": "flagged"}             # only the overall verdict
    {"prompt": "...", "SH": 1, "V": 0}                 # category columns, with --map SH=self-harm

With columns, an absent (or null) column means unknown, and that record is left out for that
rule. Labels are read and validated before any model loads, so a bad label costs nothing.
Each labelled record is then paired with its scored record: in order when eval scores the
file itself, or by id / line when the scores come from an earlier `batch` (`--scores`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossguard_cli.errors import InputError, UsageError, did_you_mean
from crossguard_cli.records.inputs import Record, read_records


@dataclass(frozen=True)
class LabelledRecord:
    """The truth for one labelled line: known per-rule labels only, and the overall verdict."""

    where: str  # "file:line", for messages
    line: int
    id: str | None
    labels: Mapping[str, bool]  # rule name -> should fire; a rule absent here is unknown
    expected: bool | None  # should the record be flagged; None when unknown


Pair = tuple[LabelledRecord, Mapping[str, Any]]  # (truth, scored output record)


def parse_maps(specs: Iterable[str], rule_names: Sequence[str]) -> dict[str, str]:
    """`--map KEY=RULE` options -> {column: rule}. Several columns may map to one rule."""
    maps: dict[str, str] = {}
    for spec in specs:
        key, sep, rule = (part.strip() for part in spec.partition("="))
        if not (sep and key and rule):
            raise UsageError(f"expected KEY=RULE (e.g. SH=self-harm), got {spec!r}", "--map")
        if rule not in rule_names:
            raise UsageError(f"unknown rule {rule!r} in {spec!r}{did_you_mean(rule, rule_names)}", "--map")
        if key in maps:
            raise UsageError(f"column {key!r} is mapped twice ({maps[key]!r} and {rule!r})", "--map")
        maps[key] = rule
    return maps


def _binary(value: Any, key: str, where: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    raise InputError(f"{key}: expected 0 or 1 (or absent when unknown), got {value!r}", where)


def labels_from_record(obj: Any, rule_names: Sequence[str], maps: Mapping[str, str] | None,
                       where: str, line: int, id_field: str = "id") -> LabelledRecord:
    """One labelled JSON object -> LabelledRecord, in whichever of the three formats it uses.

    With `maps`, category columns (absent or null = unknown; a rule mapped from several
    columns is positive if any is 1, negative only if all are 0); the overall verdict is
    "flagged" when any known label is positive, "allowed" when all known ones are negative,
    unknown when none is known. Otherwise `"labels": [rule names]` (every rule known) and/or
    `"expected": "flagged" | "allowed"`, which when given decides the overall verdict.
    """
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", where)
    labels: dict[str, bool] = {}
    expected: bool | None = None
    if maps:
        columns: dict[str, list[bool | None]] = {}
        for key, rule in maps.items():
            columns.setdefault(rule, []).append(_binary(obj.get(key), key, where))
        for rule, values in columns.items():
            if True in values:
                labels[rule] = True
            elif all(v is False for v in values):
                labels[rule] = False
        expected = any(labels.values()) if labels else None  # unknown columns count as "allowed" here
    elif "labels" in obj:
        names = obj["labels"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"labels: expected a list of rule names, got {names!r}", where)
        for i, name in enumerate(names):
            if name not in rule_names:
                raise InputError(f"labels[{i}]: unknown rule {name!r}{did_you_mean(name, rule_names)}",
                                 where)
        labels = {rule: rule in names for rule in rule_names}
        expected = bool(names)
    elif "expected" not in obj:
        raise InputError("no label: give \"labels\": [rule names], \"expected\": \"flagged\" or "
                         "\"allowed\", or --map KEY=RULE for category columns", where)
    if "expected" in obj:
        if obj["expected"] not in ("flagged", "allowed"):
            raise InputError(f"expected: must be \"flagged\" or \"allowed\", got {obj['expected']!r}", where)
        expected = obj["expected"] == "flagged"
    rid = obj.get(id_field)
    return LabelledRecord(where, line, None if rid is None else str(rid), labels, expected)


def read_objects(path: str | Path, unreadable: list[Record]) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each readable JSONL record, read by `batch`'s own reader.

    Records that cannot be read (invalid UTF-8 or JSON, not an object, a damaged `.gz`) are
    appended to `unreadable` (error `Record`s with file and line) for the caller to report.

    Raises:
        InputError: the file cannot be opened at all.
    """
    for rec in read_records([os.fspath(path)], input_format="jsonl", keep_fields=True):
        if rec.line is None:
            raise InputError(rec.error or "cannot open", where=rec.source)
        if rec.fields is None:
            unreadable.append(rec)
        else:
            yield rec.line, rec.fields


@dataclass
class LabelledFile:
    """A labelled file as read: every record in order, and its labels (None: unreadable record)."""

    records: list[Record]
    truth: list[LabelledRecord | None]

    @property
    def labelled(self) -> list[LabelledRecord]:
        return [t for t in self.truth if t is not None]

    @property
    def unreadable(self) -> list[Record]:
        return [r for r, t in zip(self.records, self.truth, strict=True) if t is None]


def read_labelled(path: str | Path, rule_names: Sequence[str], maps: Mapping[str, str] | None = None,
                  id_field: str = "id", field: str | None = None) -> LabelledFile:
    """Every record of a labelled JSONL file, with its labels validated (a bad label raises).

    Records that cannot be read stay in place (their labels None) so the caller can report
    them, and score the rest in order.
    """
    records, truth = [], []
    for rec in read_records([os.fspath(path)], input_format="jsonl", field=field, id_field=id_field,
                            keep_fields=True):
        if rec.line is None:
            raise InputError(rec.error or "cannot open", where=rec.source)
        labels = None
        if rec.fields is not None:
            labels = labels_from_record(rec.fields, rule_names, maps, f"{rec.source}:{rec.line}", rec.line,
                                        id_field)
        records.append(dataclasses.replace(rec, fields=None))  # the labels are taken: let the object go
        truth.append(labels)
    return LabelledFile(records, truth)


def pair_in_order(labelled: LabelledFile, scored: Iterable[Mapping[str, Any]]) -> list[Pair]:
    """Pair each readable labelled record with the output of scoring that same file, record for record."""
    it = iter(scored)
    pairs: list[Pair] = []
    for rec, truth in zip(labelled.records, labelled.truth, strict=True):
        out = next(it, None)
        where = f"{rec.source}:{rec.line}"
        if out is None:
            raise InputError("no scored record for this line (scoring stopped early?)", where)
        if out.get("line") is not None and out.get("line") != rec.line:
            raise InputError(f"out of step: the scored record here is for line {out.get('line')}", where)
        if truth is not None:
            pairs.append((truth, out))
    extra = next(it, None)
    if extra is not None:
        raise InputError(f"more scored records than labelled ones (line {extra.get('line')})")
    return pairs


def join_scores(labelled: Sequence[LabelledRecord], scored: Iterable[tuple[int, Mapping[str, Any]]],
                scores_name: str = "scores") -> list[Pair]:
    """Match a `--scores` file to the labelled file: by id when both have ids, else by line.

    `scored` is `read_jsonl(scores_path)`. Both sides must match one to one: a record left
    over on either side means the files do not belong together, which is an error.
    """
    scored = list(scored)
    if all(r.id is not None for r in labelled) and all(o.get("id") is not None for _, o in scored):
        key_of, what = (lambda o: str(o["id"])), "id"
        keys = [r.id for r in labelled]
    elif all(isinstance(o.get("line"), int) for _, o in scored):
        sources = {o.get("source") for _, o in scored}
        if len(sources) > 1:
            raise InputError(f"records come from several sources ({', '.join(map(str, sources))}) and have "
                             "no ids, so lines cannot be matched; give the records an 'id'", scores_name)
        key_of, what = (lambda o: o["line"]), "line"
        keys = [r.line for r in labelled]
    else:
        raise InputError("cannot match records to the labelled file: they need an 'id' on both sides, "
                         "or a 'line' (run `crossguard batch` on the labelled file itself)", scores_name)
    seen: dict[Any, str] = {}
    for rec, key in zip(labelled, keys, strict=True):
        if seen.setdefault(key, rec.where) != rec.where:
            raise InputError(f"duplicate {what} {key!r} (also at {seen[key]})", rec.where)
    index: dict[Any, tuple[int, Mapping[str, Any]]] = {}
    for lineno, obj in scored:
        key = key_of(obj)
        if key in index:
            raise InputError(f"duplicate {what} {key!r} (also on line {index[key][0]})",
                             f"{scores_name}:{lineno}")
        index[key] = (lineno, obj)
    pairs: list[Pair] = []
    for rec, key in zip(labelled, keys, strict=True):
        found = index.pop(key, None)
        if found is None:
            raise InputError(f"no record with {what} {key!r} in {scores_name}", rec.where)
        pairs.append((rec, found[1]))
    if index:
        key, (lineno, _) = next(iter(index.items()))
        raise InputError(f"{what} {key!r} is not in the labelled file",
                         f"{scores_name}:{lineno}")
    return pairs

