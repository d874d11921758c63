"""Output records: what one input record came to (scored, empty or error), and the tally of a run.

The record shape is the contract (CONTRACT.md, "Output records"), built here once for every
front end: `batch` writes it as JSON lines, the service returns it, the Ray job writes shards
of it, and `Result.to_dict()` gives it to Python callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crossguard_cli.engine.decide import Decision, percent
from crossguard_cli.records.inputs import Record
from crossguard_cli.rules import RuleSet


def _head(rec: Record) -> dict[str, Any]:
    """`source` and `line` (when the record came from somewhere), and `id` when it has one."""
    head: dict[str, Any] = {} if rec.source is None else {"source": rec.source, "line": rec.line}
    if rec.id is not None:
        head["id"] = rec.id
    return head


def error_record(rec: Record, message: str | None = None) -> dict[str, Any]:
    return {**_head(rec), "status": "error", "error": message or rec.error or "unknown error"}


def empty_record(rec: Record) -> dict[str, Any]:
    return {**_head(rec), "status": "empty"}


def scored_record(rec: Record, ruleset: RuleSet, scores: Any, decision: Decision) -> dict[str, Any]:
    """The contract's scored record: decisions, every rule's E/N/C percentages, windows."""
    out = {**_head(rec), "text": rec.text, "status": "ok", "verdict": decision.verdict,
           "flagged": decision.flagged, "uncertain": decision.uncertain}
    if ruleset.mode == "route":
        out["route"] = decision.route
    out["scores"] = {name: {key: percent(p) for key, p in s.fields().items()} for name, s in scores.rules.items()}
    out["truncated"] = scores.truncated
    out["windows"] = scores.windows
    return out


class Result:
    """What one prompt came to: its output record, with the fields most callers want as attributes.

    `status` is "ok" (scored), "empty" (nothing visible to score) or "error" (not scored:
    `error` says why). A result that was not scored has `verdict` None, never "allowed".
    """

    __slots__ = ("_record",)

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._record = record

    @property
    def status(self) -> str:
        return self._record["status"]

    @property
    def verdict(self) -> str | None:
        """"flagged", "uncertain" or "allowed"; None when the prompt was not scored."""
        return self._record.get("verdict")

    @property
    def flagged(self) -> list[str]:
        return list(self._record.get("flagged", ()))

    @property
    def uncertain(self) -> list[str]:
        return list(self._record.get("uncertain", ()))

    @property
    def route(self) -> str | None:
        return self._record.get("route")

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """rule -> {"entailment", "neutral", "contradiction"} (NLI rules) or {"probability"} (classifier
        rules): percentages (0-100, two decimals)."""
        return {rule: dict(labels) for rule, labels in self._record.get("scores", {}).items()}

    @property
    def error(self) -> str | None:
        return self._record.get("error")

    @property
    def text(self) -> str | None:
        return self._record.get("text")

    def to_dict(self) -> dict[str, Any]:
        """The output record, as `crossguard batch` writes it (a fresh copy)."""
        out = dict(self._record)
        if "scores" in out:
            out["scores"] = self.scores
        for key in ("flagged", "uncertain"):
            if key in out:
                out[key] = list(out[key])
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self._record == other._record

    __hash__ = None  # type: ignore[assignment]  # mutable contents

    def __repr__(self) -> str:
        if self.status != "ok":
            return f"Result(status={self.status!r}" + (f", error={self.error!r})" if self.error else ")")
        return f"Result(verdict={self.verdict!r}, flagged={self.flagged!r}, uncertain={self.uncertain!r})"


@dataclass
class Tally:
    """Counts of the output records of a run: the summary line and the exit status come from it."""

    records: int = 0
    flagged: int = 0
    uncertain: int = 0
    errors: int = 0
    empty: int = 0

    def add(self, out: Mapping[str, Any]) -> None:
        self.records += 1
        status = out["status"]
        if status == "error":
            self.errors += 1
        elif status == "empty":
            self.empty += 1
        elif out["verdict"] == "flagged":
            self.flagged += 1
        elif out["verdict"] == "uncertain":
            self.uncertain += 1

    def merge(self, other: Tally) -> Tally:
        return Tally(self.records + other.records, self.flagged + other.flagged, self.uncertain + other.uncertain,
                     self.errors + other.errors, self.empty + other.empty)

    def summary(self, seconds: float) -> str:
        """The one-line summary `batch` prints on stderr."""
        return (f"crossguard: {self.records} records, {self.flagged} flagged, {self.uncertain} uncertain, "
                f"{self.errors} errors, {self.empty} empty in {seconds:.1f} s")

    def exit_code(self, exit_zero: bool = False) -> int:
        """2 if any record failed, else 1 if any was flagged (0 with `exit_zero`), else 0."""
        if self.errors:
            return 2
        return 1 if self.flagged and not exit_zero else 0


__all__ = ["Result", "Tally", "empty_record", "error_record", "scored_record"]
