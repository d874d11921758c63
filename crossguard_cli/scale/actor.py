"""The Ray Data actor: one model load per actor, then a chunk at a time scored and written as a shard.

Scoring goes through `Guard.check_many`, the engine `batch` uses, so records are the same and
batching inside the actor is the engine's own (length-sorted, token-budget batches). The actor
writes its shard itself and hands back only counts, so results never travel through the object
store and the driver holds nothing but a tally.

For tests only: when the job is given a `die_once` marker path, the first actor to reach its
second chunk while no file is there creates it and kills its own process, in the middle of the
run, after writing that chunk's shard but before returning: the worst moment for duplicates.
Ray restarts the actor and retries the chunk, which rewrites the same shard.
"""

from __future__ import annotations

import os
from typing import Any

from crossguard_cli.engine.options import EngineOptions
from crossguard_cli.rules import RuleSet
from crossguard_cli.scale.formats import encode as encode_shard
from crossguard_cli.scale.inputs import decode
from crossguard_cli.scale.shards import OutputSpec, ShardWriter

COUNTS = ("records", "flagged", "uncertain", "errors", "empty")


class ScoreChunks:
    """`map_batches` callable class (batch format pyarrow): chunk rows in, one count row per chunk out."""

    def __init__(self, options: EngineOptions, ruleset: RuleSet, output: OutputSpec, die_once: str | None = None):
        from crossguard_cli.api import Guard

        self.guard = Guard.from_options(options, ruleset)
        self.ruleset = ruleset
        self.fmt = output.format
        self.writer = ShardWriter(output)
        self.die_once = die_once
        self.calls = 0

    def __call__(self, batch: Any) -> dict[str, list]:
        from crossguard_cli.engine.results import Tally
        from crossguard_cli.records.writers import where

        out: dict[str, list] = {key: [] for key in ("file", "chunk", "last", "shard", *COUNTS, "error_lines")}
        for row in batch.to_pylist():
            records = decode(row["source"], row["payload"])
            # stream_groups, not check_many: tokenising the next group overlaps the model's work.
            results = [result.to_dict() for group in self.guard.stream_groups(records) for result in group]
            shard = self.writer.write(row["file"], row["chunk"], encode_shard(results, self.fmt, self.ruleset,
                                                                                self.guard.abstains)) \
                if results else ""
            tally = Tally()
            errors = []
            for result in results:
                tally.add(result)
                if result["status"] == "error":
                    errors.append(f"{where(result)}: {result['error']}")
            self.calls += 1
            self._maybe_die()
            for key, value in (("file", row["file"]), ("chunk", row["chunk"]), ("last", row["last"]),
                               ("shard", shard), ("error_lines", errors)):
                out[key].append(value)
            for key in COUNTS:
                out[key].append(getattr(tally, key))
        return out

    def _maybe_die(self) -> None:
        if not self.die_once or self.calls < 2:
            return
        try:
            with open(self.die_once, "x") as marker:  # atomic: only one call, in one actor, ever dies
                marker.write(str(os.getpid()))
        except FileExistsError:
            return
        os._exit(1)


__all__ = ["COUNTS", "ScoreChunks"]
