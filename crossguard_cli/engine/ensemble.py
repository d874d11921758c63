"""One scorer over several models: a rules file with NLI rules and classifier rules together.

Each model scores its own rules (`Scorer` for the NLI model, one `ClassifierScorer` per
classifier); this puts their results back into one `PromptScores` per prompt, rules in file
order, so decisions, records and every front end see one rule set. It offers the scorer's
surface (`prepare`, `batches`, `run_batch`, `collect`, `finish`, `score`), so the pipeline
overlaps tokenising for every model with the forward passes of each, group by group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from crossguard_cli.engine.reduce import PromptScores
from crossguard_cli.engine.scorer import Batch
from crossguard_cli.rules import RuleSet


@dataclass
class Parts:
    """One group's `Prepared` per model, in the ensemble's model order."""

    prepared: list


class Ensemble:
    """Scores a mixed rules file: each part scores its rules; results merge in file order.

    Args:
        ruleset: the whole rules file (decisions are taken on it).
        parts: the scorers, each holding a subset of `ruleset.rules`, together all of them.
    """

    def __init__(self, ruleset: RuleSet, parts: Sequence) -> None:
        self.ruleset = ruleset
        self.parts = list(parts)
        self.order = [r.name for r in ruleset.rules]

    @property
    def model(self):
        """The NLI model when the file has NLI rules, else the first classifier."""
        return next((p.model for p in self.parts if getattr(p.model, "spec", None) is None), self.parts[0].model)

    @property
    def models(self) -> list:
        return [p.model for p in self.parts]

    @property
    def batch_size(self) -> int:
        return min(p.batch_size for p in self.parts)

    @property
    def batch_tokens(self) -> int:
        return min(p.batch_tokens for p in self.parts)

    @property
    def max_chars(self) -> int:
        return self.parts[0].max_chars

    @property
    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in self.parts:
            for key, value in part.stats.items():
                total[key] = total.get(key, 0) + value
        return total

    def score(self, texts: Sequence[str]) -> list[PromptScores]:
        prepared = self.prepare(texts)
        for batch in self.batches(prepared):
            self.run_batch(prepared, batch)
        self.collect(prepared)
        return self.finish(prepared)

    def prepare(self, texts: Sequence[str]) -> Parts:
        return Parts([part.prepare(texts) for part in self.parts])

    def batches(self, prepared: Parts) -> Iterator[tuple[int, Batch]]:
        for k, part in enumerate(self.parts):
            for batch in part.batches(prepared.prepared[k]):
                yield k, batch

    def run_batch(self, prepared: Parts, item: tuple[int, Batch]) -> None:
        k, batch = item
        self.parts[k].run_batch(prepared.prepared[k], batch)

    def collect(self, prepared: Parts) -> None:
        for part, each in zip(self.parts, prepared.prepared, strict=True):
            part.collect(each)

    def finish(self, prepared: Parts) -> list[PromptScores]:
        """Per prompt: every part's rules in file order; the most windows any model needed;
        truncated if any model was cut; the first error of any part makes the prompt an error."""
        results = [part.finish(each) for part, each in zip(self.parts, prepared.prepared, strict=True)]
        out = []
        for scores in zip(*results, strict=True):
            error = next((s.error for s in scores if s.error), None)
            windows = max(s.windows for s in scores)
            truncated = any(s.truncated for s in scores)
            if error:
                out.append(PromptScores({}, windows, truncated, error))
                continue
            merged = {}
            for s in scores:
                merged.update(s.rules)
            out.append(PromptScores({name: merged[name] for name in self.order}, windows, truncated))
        return out


__all__ = ["Ensemble"]
