"""Scoring prompts against every rule: pairs, windows, length-sorted batches, scores in order.

All (prompt window, hypothesis) pairs of a group of prompts go through the model together,
sorted by length and cut into batches by a token budget, so little compute is spent on
padding; results come back in input order. Identical prompts in a group are scored once.

A group is scored in three steps, so that a pipeline (`engine/pipeline.py`) can run the host's
steps for one group while the device runs another's: `prepare` (host: normalise, tokenise,
plan the pairs), `run_batch` for each of `batches` (the model), `finish` (host: one copy back
from the device, softmax, best window and hypothesis). `score` does all three in turn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from crossguard_cli.engine.options import LONG_INPUT
from crossguard_cli.engine.pairs import PairAssembler, PairPlan, PairTemplate, learn_template, min_window
from crossguard_cli.engine.reduce import LABEL_INDEX, PromptScores, RuleScore, best_scores, softmax
from crossguard_cli.records.text import is_blank, normalize_text
from crossguard_cli.rules import RuleSet, check_hypothesis_lengths

_OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate memory",
              "bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says a forward pass ran out of memory, on any device or backend.

    torch raises `torch.cuda.OutOfMemoryError` on CUDA, a `RuntimeError` ("DefaultCPUAllocator:
    can't allocate memory") on the CPU, ONNX Runtime its own exception ("Failed to allocate
    memory"); Python itself `MemoryError`.
    """
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, Exception) and any(word in str(exc).lower() for word in _OOM_WORDS)


def default_batching(device: str) -> tuple[int, int]:
    """(pairs per batch, padded tokens per batch) that suit the device."""
    if str(device).startswith("cuda"):
        return 1024, 131072
    return 32, 4096


# On a CPU a padded token costs as much as a real one, and one pass of several rows is no
# cheaper per token than one row at a time (benchmarks/batch_gain.py: 1.0-1.6x at equal
# lengths), so a batch holds only pairs within this share of its longest: at most 10% padding.
# A GPU's pass costs much the same for few rows or many, so it takes whatever fits the budget.
CPU_SIMILAR = 0.9


def default_similar(device: str) -> float:
    """The shortest pair a batch may hold, as a share of its longest (0: any that fits)."""
    return 0.0 if str(device).startswith("cuda") else CPU_SIMILAR


@dataclass
class Batch:
    """Padded model inputs for the pairs at positions [start, stop) of a plan's length order."""

    start: int
    ids: np.ndarray
    mask: np.ndarray
    types: np.ndarray
    lengths: np.ndarray  # real tokens of each row, longest first

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, count: int) -> list[Batch]:
        """Consecutive pieces of at most `count` rows, each as wide as its own longest row."""
        out = []
        for at in range(0, len(self), count):
            lengths = self.lengths[at : at + count]
            width = int(lengths[0])
            out.append(Batch(self.start + at, *(np.ascontiguousarray(a[at : at + count, :width])
                                                for a in (self.ids, self.mask, self.types)), lengths))
        return out


@dataclass
class Prepared:
    """One group on its way through the model: texts, pairs, then each batch's logits."""

    texts: Sequence[str]
    capped: list[str]
    normalized: list[str]
    unique: dict[str, int]
    plan: PairPlan
    unread: set[int]  # unique prompts that gave no tokens at all: never scored as an empty premise
    outputs: list[tuple[int, object]] = field(default_factory=list)  # (start, logits: numpy or on the device)
    failed: list[int] = field(default_factory=list)  # positions in the length order that failed alone
    host: Callable[[], np.ndarray] | None = None  # the group's logits, in `outputs` order, on the host


class WindowScorer:
    """What every model kind shares: prompts in windows, length-sorted batches by a token budget,
    out-of-memory halving, one copy back per group, results in input order.

    A forward pass that runs out of memory is retried with half as many pairs, outside the
    exception handler (so the failed pass's tensors are freed first), and the smaller budget is
    kept for the rest of the run; a single pair that still does not fit is an error record.
    Subclasses say what a row is (`template`, the token runs beside each window) and what the
    logits mean (`reduce`).

    Args:
        model: the loaded model (any of engine/models/: the same scoring surface).
        ruleset: the rules this model scores.
        template: special tokens around a window and its hypothesis (none for a classifier).
        hypotheses: token ids of each text scored beside every window ([[]] for a classifier).
        n_outputs: logits columns the model gives.
        long_input: "window" (score overlapping windows, best wins) or "truncate" (first only).
        max_chars: characters kept per prompt before tokenising.
        batch_size: most pairs per forward pass (None: chosen per device).
        batch_tokens: most padded tokens per forward pass (None: chosen per device).
    """

    def __init__(self, model, ruleset: RuleSet, *, template: PairTemplate, hypotheses: list[list[int]],
                 n_outputs: int, long_input: str = "window", max_chars: int = 50_000, batch_size: int | None = None,
                 batch_tokens: int | None = None) -> None:
        if long_input not in LONG_INPUT:
            raise ValueError(f"long_input must be one of {LONG_INPUT}, got {long_input!r}")
        self.model = model
        self.ruleset = ruleset
        self.long_input = long_input
        self.max_chars = max_chars
        self.n_outputs = n_outputs
        batching = getattr(model, "batching", None)  # a simulated device says what suits it
        pairs, tokens = batching or default_batching(str(model.device))
        self.similar = 0.0 if batching else default_similar(str(model.device))
        self.batch_size = batch_size or pairs
        # An explicit pair count is what the user asked for: the token budget follows it.
        budget = batch_tokens or (batch_size * model.max_length if batch_size else tokens)
        self.batch_tokens = max(budget, model.max_length)
        self.template = template
        self.assembler = PairAssembler(template, hypotheses, model.max_length, pad_id(model.tokenizer),
                                       truncate=long_input == "truncate", token_types=model.uses_token_types)
        self.stats = {"pairs": 0, "tokens": 0, "padded_tokens": 0, "batches": 0, "out_of_memory": 0}
        # Prompts are read as plain text: a prompt that spells "[SEP]" or "<|endoftext|>" gets
        # those characters, never the control token (it could end its own premise, or read as padding).
        self._encode = token_encoder(model.tokenizer, split_special_tokens=True)

    def score(self, texts: Sequence[str]) -> list[PromptScores]:
        """Score prompts; the result has one entry per text, in order."""
        prepared = self.prepare(texts)
        for batch in self.batches(prepared):
            self.run_batch(prepared, batch)
        self.collect(prepared)
        return self.finish(prepared)

    def prepare(self, texts: Sequence[str]) -> Prepared:
        """Host work before the model: cap, normalise, drop repeats, tokenise, plan every pair.

        Touches nothing that scoring changes, so it may run in another thread while a batch runs.
        """
        capped = [t[: self.max_chars] for t in texts]
        # Once per text: NFKC of 50k characters is not free (ASCII text costs nothing).
        normalized = [normalize_text(t) for t in capped]
        unique: dict[str, int] = {}
        for t in normalized:
            unique.setdefault(t, len(unique))
        prompt_ids = self._encode(list(unique)) if unique else []
        unread = {u for u, ids in enumerate(prompt_ids) if not ids}  # the tokenizer dropped every character
        return Prepared(texts, capped, normalized, unique, self.assembler.plan(prompt_ids), unread)

    def batches(self, prepared: Prepared) -> Iterator[Batch]:
        """Padded batches, longest pairs first, each cut by the budget in force when it is cut."""
        plan = prepared.plan
        lengths = plan.length[plan.order]
        start = 0
        while start < len(plan):
            count = self._fits(int(lengths[start]))
            if self.similar:  # lengths fall along the order: the pairs close to the longest are a prefix
                count = max(1, int(np.count_nonzero(lengths[start : start + count] >= self.similar * lengths[start])))
            rows = plan.order[start : start + count]
            yield Batch(start, *self.assembler.build(plan, rows), lengths[start : start + count])
            start += len(rows)

    def _fits(self, longest: int) -> int:
        return max(1, min(self.batch_size, self.batch_tokens // max(1, longest)))

    def run_batch(self, prepared: Prepared, batch: Batch) -> None:
        """Run one batch through the model, halving it (and the budget, for good) on out-of-memory."""
        pending = deque([batch])
        while pending:
            batch = pending.popleft()
            count = self._fits(int(batch.lengths[0]))
            if count < len(batch):  # cut before the budget shrank: cut again
                pending.extendleft(reversed(batch.split(count)))
                continue
            if self._forward_into(prepared, batch):
                continue
            # Out of memory. We are outside the handler: the failed pass's tensors are gone.
            self.stats["out_of_memory"] += 1
            _release_memory()
            if len(batch) == 1:
                prepared.failed.append(batch.start)
                continue
            self.batch_size = max(1, len(batch) // 2)  # kept for the rest of the run
            self.batch_tokens = max(1, self.batch_size * int(batch.lengths[0]))
            pending.appendleft(batch)

    def _forward_into(self, prepared: Prepared, batch: Batch) -> bool:
        """Run `batch`, keeping its logits; False when it ran out of memory (the exception is dropped
        here, and with it the traceback that holds the pass's tensors)."""
        try:
            out = self.model.logits(batch.ids, batch.mask, batch.types)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return False
        prepared.outputs.append((batch.start, out))
        self.stats["pairs"] += len(batch)
        self.stats["tokens"] += int(batch.lengths.sum())
        self.stats["padded_tokens"] += batch.ids.size
        self.stats["batches"] += 1
        return True

    def collect(self, prepared: Prepared) -> None:
        """Start bringing the group's logits to the host: one copy for the group, not one per batch."""
        outs = [out for _, out in prepared.outputs]
        if all(isinstance(out, np.ndarray) for out in outs):
            logits = np.concatenate(outs) if outs else np.zeros((0, self.n_outputs), dtype=np.float32)
            prepared.host = lambda: logits
        else:  # still on the device (CUDA runs ahead of Python): the model copies them back
            prepared.host = self.model.to_host(outs)

    def reduce(self, prepared: Prepared, logits: np.ndarray, failed: np.ndarray) -> list[PromptScores]:
        """Each unique prompt's scores from its pairs' logits (model columns, float64, pair order)."""
        raise NotImplementedError

    def finish(self, prepared: Prepared) -> list[PromptScores]:
        """Host work after the model: activation, best window (and hypothesis), results in input order."""
        plan = prepared.plan
        n = len(plan)
        assert prepared.host is not None, "collect() the group before finish()"
        done = prepared.host()
        positions = np.concatenate([np.arange(start, start + len(out)) for start, out in prepared.outputs] or
                                   [np.zeros(0, dtype=np.int64)])
        logits = np.full((n, self.n_outputs), np.nan)  # a pair that never got logits is an error, never allowed
        logits[plan.order[positions]] = np.asarray(done, dtype=np.float64)
        failed = np.zeros(n, dtype=bool)
        failed[plan.order[np.asarray(prepared.failed, dtype=np.int64)]] = True
        per_unique = self.reduce(prepared, logits, failed)
        out = []
        for original, c, n_text in zip(prepared.texts, prepared.capped, prepared.normalized, strict=True):
            u = prepared.unique[n_text]
            s = per_unique[u]
            if u in prepared.unread:
                s = PromptScores({}, s.windows, s.truncated, "the model's tokenizer reads nothing in this prompt")
            if len(c) < len(original) and s.error is None:
                s = PromptScores(s.rules, s.windows, True)
                if is_blank(n_text):  # the cap left only invisible characters: nothing was read
                    s = PromptScores({}, 0, True, f"nothing visible in the first {self.max_chars} characters "
                                                  "(--max-chars); raise it to read further")
            out.append(s)
        return out


class Scorer(WindowScorer):
    """Scores prompts with one NLI cross-encoder against one rule set: (window, hypothesis) pairs.

    Args:
        model: the loaded cross-encoder (`LoadedModel`, `RuntimeModel`, `OpenVinoModel`).
        ruleset: the rules; every hypothesis is tokenised once here (its special-token text kept:
            hypotheses are the operator's own).
        long_input, max_chars, batch_size, batch_tokens: as for `WindowScorer`.

    Raises:
        RulesError: a hypothesis leaves too little room for the prompt.
    """

    def __init__(self, model, ruleset: RuleSet, *, long_input: str = "window", max_chars: int = 50_000,
                 batch_size: int | None = None, batch_tokens: int | None = None) -> None:
        template = learn_template(model.tokenizer)
        encode = token_encoder(model.tokenizer, split_special_tokens=False)
        tokens: dict[str, list[int]] = {}

        def ids(hypothesis: str) -> list[int]:
            if hypothesis not in tokens:
                tokens[hypothesis] = encode([normalize_text(hypothesis)])[0]
            return tokens[hypothesis]

        limit = model.max_length - template.n_special - min_window(model.max_length)
        check_hypothesis_lengths(ruleset, lambda h: len(ids(h)), limit, model.max_length)
        self.hypotheses = ruleset.hypotheses
        super().__init__(model, ruleset, template=template, hypotheses=[ids(h) for h in self.hypotheses],
                         n_outputs=getattr(model, "n_outputs", 3), long_input=long_input, max_chars=max_chars,
                         batch_size=batch_size, batch_tokens=batch_tokens)

    def reduce(self, prepared: Prepared, logits: np.ndarray, failed: np.ndarray) -> list[PromptScores]:
        """Softmax over E/N/C (found by name), then each rule's best window and hypothesis; with
        abstention heads, the uncertain probability of that same pair rides along."""
        plan = prepared.plan
        probs = softmax(logits[:, list(self.model.label_columns)])
        heads = getattr(self.model, "abstain_columns", None)
        if heads:
            probs = np.column_stack((probs, softmax(logits[:, list(heads)])[:, 1]))
        return best_scores(self.ruleset, len(prepared.unique), plan.prompt, plan.hypothesis, probs, failed,
                           plan.cut, self.model.dtype)


def pad_id(tokenizer) -> int:
    """The id rows are padded with: the tokenizer's pad token, else its eos (as decoder
    classifiers' cards do), else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def token_encoder(tokenizer, *, split_special_tokens: bool) -> Callable[[list[str]], list[list[int]]]:
    """Texts to token ids without special tokens, as `tokenizer(texts, add_special_tokens=False)`.

    Calls a private copy of the fast tokenizer's Rust backend directly: it skips the Python
    wrapper's per-call work, releases the GIL for the whole batch (so a pipeline thread can
    tokenise while another runs the model) and shares no settings with the caller's tokenizer.

    Args:
        split_special_tokens: read text that spells a special token (`[SEP]`, `</s>`) as plain
            text (prompts), rather than as the token itself (hypotheses, the operator's own).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        from tokenizers import Tokenizer

        own = Tokenizer.from_str(backend.to_str())
    except Exception:  # not a fast tokenizer with a Rust backend: the wrapper does the same work
        return lambda texts: list(tokenizer(texts, add_special_tokens=False,
                                            split_special_tokens=split_special_tokens)["input_ids"])
    own.no_truncation()
    own.no_padding()
    own.encode_special_tokens = split_special_tokens
    encode = getattr(own, "encode_batch_fast", own.encode_batch)
    return lambda texts: [e.ids for e in encode(texts, add_special_tokens=False)]


def _release_memory() -> None:
    """Hand freed blocks back after an out-of-memory, so the smaller retry has room."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["LABEL_INDEX", "Batch", "Prepared", "PromptScores", "RuleScore", "Scorer", "WindowScorer",
           "default_batching", "default_similar", "is_out_of_memory", "pad_id", "token_encoder"]
