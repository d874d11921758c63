"""`Guard`: the one face of the engine. The CLI, the service and the Ray job all score through it.

    >>> from crossguard_cli import Guard
    >>> guard = Guard("rules.yaml", device="cpu")          # loads the rules, then the model
    >>> guard.check("How do I make a pipe bomb?").verdict
    'flagged'
    >>> [r.verdict for r in guard.check_many(["hi", "bye"])]
    ['allowed', 'allowed']

Importing this module imports no torch; constructing a Guard loads the model.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any

from crossguard_cli.engine.options import EngineOptions
from crossguard_cli.engine.results import Result
from crossguard_cli.errors import UsageError
from crossguard_cli.records.inputs import TEXT_FIELDS, Record, record_from_text
from crossguard_cli.rules import RuleSet, load_rules, rules_from_mapping

RulesLike = str | os.PathLike | Mapping[str, Any] | RuleSet | None


class Guard:
    """Scores prompts against rules with an NLI cross-encoder, loaded once.

    Args:
        rules: a rules file path, the rules as a mapping (the YAML's shape), a `RuleSet`, or
            None for the packaged default rules.
        model: hub id or local folder; None: the rules file's `model:`, else the default model.
        revision, device, dtype, backend, batch_size, max_length, max_chars, long_input,
            threshold, compile, encoder: as the CLI options of the same names (`crossguard check --help`).

    Raises:
        UsageError: an option value is out of range.
        RulesError: the rules do not validate (checked before any model is loaded).
        ModelError: the model cannot be loaded, or is not a 3-label NLI model.

    Threads: a Guard may be shared between threads. Scoring calls are serialised by a lock
    (one model, one forward pass at a time), so concurrent callers wait for each other; to
    score many prompts fast, pass them together (`check_many`, `stream`), which batches them.
    """

    def __init__(
        self,
        rules: RulesLike = None,
        model: str | None = None,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        backend: str = "torch",
        batch_size: int | None = None,
        max_length: int = 512,
        max_chars: int = 50_000,
        long_input: str = "window",
        threshold: float | None = None,
        compile: bool = False,
        encoder: str | None = None,
    ) -> None:
        rules_path = None if rules is None or isinstance(rules, (Mapping, RuleSet)) else os.fspath(rules)
        options = EngineOptions(rules=rules_path, model=model, revision=revision, device=device, dtype=dtype,
                                backend=backend, batch_size=batch_size, max_length=max_length,
                                max_chars=max_chars, long_input=long_input, threshold=threshold,
                                compile=compile, encoder=encoder).check()
        self._setup(options, resolve_rules(rules, threshold))

    @classmethod
    def from_options(cls, options: EngineOptions, ruleset: RuleSet | None = None) -> Guard:
        """A Guard from front-end options (`options.rules` is a path or None), rules loaded unless given."""
        guard = cls.__new__(cls)
        options.check()
        guard._setup(options, ruleset or resolve_rules(options.rules, options.threshold))
        return guard

    def _setup(self, options: EngineOptions, ruleset: RuleSet) -> None:
        from crossguard_cli.engine.build import build_scorer

        self.options = options
        self._models: dict = {}  # every model loaded for this Guard, by what defines it (shared with with_rules)
        self._scorer, self._nli_name = build_scorer(ruleset, options, self._models)
        self.model_name = self._nli_name or self._scorer.model.name
        self._lock = threading.RLock()

    @property
    def rules(self) -> RuleSet:
        """The rules in force."""
        return self._scorer.ruleset

    @property
    def model(self):
        """The loaded model (its `name`, `device`, `dtype`, `max_length`, `tokenizer`): the NLI model, or
        the first classifier when no rule needs an NLI model."""
        return self._scorer.model

    @property
    def abstains(self) -> bool:
        """Whether the NLI model has learned-abstention heads (its rules' scores carry `abstain`)."""
        return any(getattr(m, "abstain_columns", None) for m in self.models)

    @property
    def models(self) -> list:
        """Every model the rules use: the NLI model (if any rule needs it), then each classifier."""
        return list(getattr(self._scorer, "models", [self._scorer.model]))

    @property
    def batch_tokens(self) -> int:
        """Padded tokens per forward pass now: the scorer's budget, lower after an out-of-memory retry."""
        return self._scorer.batch_tokens

    @property
    def stats(self) -> dict[str, int]:
        """Pairs, tokens, padded tokens, forward passes and out-of-memory retries so far."""
        return dict(self._scorer.stats)

    def with_rules(self, rules: RulesLike) -> Guard:
        """A Guard for other rules that shares this one's loaded model (no second load).

        The service reloads rules this way: build the new Guard, then swap it in; a bad rules
        file raises `RulesError` and the old Guard keeps serving.
        """
        from crossguard_cli.engine.build import build_scorer, inherit_budget

        rules_path = None if rules is None or isinstance(rules, (Mapping, RuleSet)) else os.fspath(rules)
        ruleset = resolve_rules(rules, self.options.threshold)
        other = Guard.__new__(Guard)
        # The model in force stays (a changed `model:` needs a restart); classifiers new to the
        # rules are loaded now, those already loaded are shared.
        other.options = self.options.replace(rules=rules_path, model=self._nli_name or self.options.model)
        other._models = self._models
        other._scorer, other._nli_name = build_scorer(ruleset, other.options, self._models)
        other.model_name = other._nli_name or other._scorer.model.name
        # A budget this Guard's scorer reduced after running out of memory holds for the same model.
        inherit_budget(other._scorer, self._scorer)
        other._lock = self._lock  # one model: one forward pass at a time, whichever rules
        return other

    def check(self, text: str) -> Result:
        """Score one prompt.

        Raises:
            UsageError: the prompt is empty (nothing visible after normalisation).
            CrossguardError: it could not be scored (out of memory, non-finite scores).
        """
        from crossguard_cli.errors import CrossguardError

        (result,) = self.check_many([text])
        if result.status == "empty":
            raise UsageError("the prompt is empty; nothing to score")
        if result.status == "error":
            raise CrossguardError(result.error or "the prompt could not be scored")
        return result

    def check_many(self, items: Iterable[str | Record | Mapping[str, Any]]) -> list[Result]:
        """Score prompts together (batched as `batch` batches); one result per item, in order.

        Items are strings, `Record`s, or mappings with a text field (`text`, `prompt`, `input`
        or `content`) and an optional `id`. An empty or unreadable item gives a result whose
        `status` is "empty" or "error"; nothing here raises for one bad item.
        """
        from crossguard_cli.engine.stream import group_size_for, score_records

        records = [_record(item, None) for item in items]
        size = group_size_for(self._scorer)  # a group at a time: memory bounded by the group, as in `batch`
        out: list[Result] = []
        for at in range(0, len(records), size):
            with self._lock:
                out.extend(Result(r) for r in score_records(self._scorer, records[at : at + size]))
        return out

    def stream(self, items: Iterable[str | Record | Mapping[str, Any]], overlap: bool | None = None
               ) -> Iterator[Result]:
        """Lazily score an iterable of any size: one result per item, in order, as groups are scored.

        The iterable is read by a thread as the model works, a group at a time (enough to fill
        several forward passes), so memory stays flat; a quiet input is scored after a few
        milliseconds rather than waiting for a full group. Strings get `source` "input" and
        their 1-based position as `line`. `overlap`: as for `pipeline` (None: tokenise the next
        groups beside the model unless it runs on the CPU).
        """
        for group in self.stream_groups(items, overlap):
            yield from group

    def stream_groups(self, items: Iterable[str | Record | Mapping[str, Any]], overlap: bool | None = None
                      ) -> Iterator[list[Result]]:
        """`stream`, a list per scored group: front ends flush their output after each."""
        from crossguard_cli.engine.stream import stream

        records = (_record(item, i) for i, item in enumerate(items, start=1))
        # On a GPU, tokenising the next groups and running the model overlap with the caller's
        # writing; the lock is taken around each forward pass, so other callers of this Guard interleave.
        with closing(stream(self._scorer, records, lock=self._lock, overlap=overlap)) as scored:
            for outs in scored:
                yield [Result(out) for out in outs]

    def pipeline(self, groups: Iterable[Sequence[str | Record | Mapping[str, Any]]],
                 stop: threading.Event | None = None, overlap: bool | None = None) -> Iterator[list[Result]]:
        """Results of each group the caller forms, in order, as each is scored; one result per item.

        Unlike `stream`, the caller decides what is scored together (the service's worker gives
        the requests waiting, a round at a time). With `overlap`, while the model runs one group
        other threads tokenise and pad the next ones and this thread builds the last one's
        results, so a fast device is never kept waiting by the host; `groups` is then read from
        another thread. Without it, each group is scored in this thread, one after another: on a
        CPU the model's own threads use every core, and host work beside them only slows the
        pass (benchmarks/RESULTS.md, issue 18). None (the default): overlap unless the model
        runs on the CPU. `stop` is set when the pipeline ends (the caller stopped, or a
        failure): a `groups` iterator that waits for work should watch it and end.
        """
        from crossguard_cli.engine.stream import score_groups

        records = ([_record(item, None) for item in group] for group in groups)
        with closing(score_groups(self._scorer, records, self._lock, stop=stop, overlap=overlap)) as scored:
            for outs in scored:
                yield [Result(out) for out in outs]

    def __repr__(self) -> str:
        return (f"Guard(model={self.model_name!r}, rules={self.rules.source!r}, {len(self.rules.rules)} rules, "
                f"device={str(self.model.device)!r}, dtype={str(self.model.dtype)!r})")


def resolve_rules(rules: RulesLike, threshold: float | None = None) -> RuleSet:
    """The rules as given (a path, a mapping, a RuleSet or None for the defaults), with `threshold` applied."""
    if isinstance(rules, RuleSet):
        ruleset = rules
    elif isinstance(rules, Mapping):
        ruleset = rules_from_mapping(rules)
    else:
        ruleset = load_rules(rules)
    return ruleset.with_threshold(threshold) if threshold is not None else ruleset


def _record(item: str | Record | Mapping[str, Any], position: int | None) -> Record:
    """An input item as a `Record`: strings and mappings get `source` "input" in a stream."""
    if isinstance(item, Record):
        return item
    source = None if position is None else "input"
    if isinstance(item, str):
        return record_from_text(item, source, position)
    if isinstance(item, Mapping):
        name = next((key for key in TEXT_FIELDS if key in item), None)
        text = item.get(name) if name else None
        if not isinstance(text, str):
            error = (f"no text field: expected one of {', '.join(TEXT_FIELDS)}" if name is None
                     else f"field {name!r} must be a string")
            return Record(source, position, id=item.get("id"), error=error)
        return dataclasses.replace(record_from_text(text, source, position), id=item.get("id"))
    return Record(source, position, error=f"expected a string, or a mapping with a text field; got "
                                          f"{type(item).__name__}")


__all__ = ["Guard", "Result", "resolve_rules"]
