"""Scoring prompts against every rule: pairs, windows, length-sorted batches, scores in order.

All (prompt window, hypothesis) pairs of a group of prompts go through the model together,
sorted by length and cut into batches by a token budget, so little compute is spent on
padding; results come back in input order. Identical prompts in a group are scored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossguard_cli.engine.options import LONG_INPUT
from crossguard_cli.engine.pairs import learn_template, min_window, window_spans
from crossguard_cli.records.text import is_blank, normalize_text
from crossguard_cli.rules import LABELS, RuleSet, check_hypothesis_lengths

LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}  # E, N, C: the column order of scores


@dataclass(frozen=True)
class RuleScore:
    """E/N/C probabilities (0-1) of a rule's deciding pair: its best hypothesis and window."""

    entailment: float
    neutral: float
    contradiction: float
    hypothesis: int = 0

    def prob(self, label: str) -> float:
        return getattr(self, label)


@dataclass(frozen=True)
class PromptScores:
    """Everything the scorer knows about one prompt."""

    rules: dict[str, RuleScore]
    windows: int
    truncated: bool
    error: str | None = None


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


class Scorer:
    """Scores prompts with one model against one rule set.

    A forward pass that runs out of memory is retried with half as many pairs, outside the
    exception handler (so the failed pass's tensors are freed first), and the smaller budget is
    kept for the rest of the run; a single pair that still does not fit is an error record.

    Args:
        model: the loaded cross-encoder (`LoadedModel` or `RuntimeModel`).
        ruleset: the rules; every hypothesis is tokenised once here.
        long_input: "window" (score overlapping windows, best wins) or "truncate" (first only).
        max_chars: characters kept per prompt before tokenising.
        batch_size: most pairs per forward pass (None: chosen per device).
        batch_tokens: most padded tokens per forward pass (None: chosen per device).

    Raises:
        RulesError: a hypothesis leaves too little room for the prompt.
    """

    def __init__(
        self,
        model,
        ruleset: RuleSet,
        *,
        long_input: str = "window",
        max_chars: int = 50_000,
        batch_size: int | None = None,
        batch_tokens: int | None = None,
    ) -> None:
        if long_input not in LONG_INPUT:
            raise ValueError(f"long_input must be one of {LONG_INPUT}, got {long_input!r}")
        self.model = model
        self.ruleset = ruleset
        self.long_input = long_input
        self.max_chars = max_chars
        pairs, tokens = default_batching(str(model.device))
        self.batch_size = batch_size or pairs
        # An explicit pair count is what the user asked for: the token budget follows it.
        budget = batch_tokens or (batch_size * model.max_length if batch_size else tokens)
        self.batch_tokens = max(budget, model.max_length)
        self.template = learn_template(model.tokenizer)
        limit = model.max_length - self.template.n_special - min_window(model.max_length)
        self._tokens: dict[str, list[int]] = {}
        check_hypothesis_lengths(ruleset, lambda h: len(self._hypothesis_ids(h)), limit, model.max_length)
        self.hypotheses = ruleset.hypotheses
        self._hyp_ids = [self._hypothesis_ids(h) for h in self.hypotheses]
        self._rule_hyps = [[self.hypotheses.index(h) for h in rule.hypotheses] for rule in ruleset.rules]
        self.stats = {"pairs": 0, "tokens": 0, "padded_tokens": 0, "batches": 0, "out_of_memory": 0}

    def _hypothesis_ids(self, hypothesis: str) -> list[int]:
        if hypothesis not in self._tokens:
            text = normalize_text(hypothesis)
            self._tokens[hypothesis] = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._tokens[hypothesis]

    def score(self, texts: Sequence[str]) -> list[PromptScores]:
        """Score prompts; the result has one entry per text, in order."""
        capped = [t[: self.max_chars] for t in texts]
        normalized = [normalize_text(t) for t in capped]  # once per text: NFKC of 50k chars is not free
        unique: dict[str, int] = {}
        for t in normalized:
            unique.setdefault(t, len(unique))
        keys = list(unique)
        prompt_ids = self.model.tokenizer(keys, add_special_tokens=False)["input_ids"] if keys else []
        rows, owners, cut = self._assemble(prompt_ids)
        probs, failed = self._run(rows)
        per_unique = self._reduce(len(keys), owners, probs, failed, cut)
        out = []
        for original, c, n in zip(texts, capped, normalized, strict=True):
            s = per_unique[unique[n]]
            if len(c) < len(original) and s.error is None:
                s = PromptScores(s.rules, s.windows, True)
                if is_blank(n):  # the cap left only invisible characters: nothing was read
                    s = PromptScores({}, 0, True, f"nothing visible in the first {self.max_chars} characters "
                                                  "(--max-chars); raise it to read further")
            out.append(s)
        return out

    def _assemble(self, prompt_ids: list[list[int]]):
        """Every (window, hypothesis) pair: rows of (ids, types), and who owns each row."""
        rows: list[tuple[list[int], list[int]]] = []
        owners: list[tuple[int, int]] = []  # (prompt index, hypothesis index)
        cut = [False] * len(prompt_ids)
        room = self.model.max_length - self.template.n_special
        for p, ids in enumerate(prompt_ids):
            for h, hyp in enumerate(self._hyp_ids):
                window = room - len(hyp)
                spans = window_spans(len(ids), window)
                if self.long_input == "truncate" and len(spans) > 1:
                    spans, cut[p] = spans[:1], True
                for start, end in spans:
                    rows.append(self.template.build(ids[start:end], hyp))
                    owners.append((p, h))
        return rows, owners, cut

    def _reduce(self, n_prompts, owners, probs, failed, cut) -> list[PromptScores]:
        """Best window per (prompt, hypothesis, label), then best hypothesis per rule.

        A window is chosen separately for each deciding label, so a hypothesis shared by an
        entailment rule and a contradiction rule gives each its own best window. Vectorised:
        at GPU speeds a per-pair Python loop here would cost more than the model.
        """
        n_hyp = len(self.hypotheses)
        owners = np.asarray(owners, dtype=np.int64).reshape(-1, 2)
        p_idx, h_idx = owners[:, 0], owners[:, 1]
        windows = np.zeros((n_prompts, n_hyp), dtype=np.int64)
        np.add.at(windows, (p_idx, h_idx), 1)
        bad = np.zeros(n_prompts, dtype=bool)
        bad[p_idx[failed]] = True
        # Overflow in half precision gives NaN; a guardrail must never read that as "allowed".
        nonfinite = np.zeros(n_prompts, dtype=bool)
        nonfinite[p_idx[~np.isfinite(probs).all(axis=1)]] = True
        failed = failed | ~np.isfinite(probs).all(axis=1)
        best = np.full((n_prompts, n_hyp, 3, 3), -1.0)  # [prompt, hypothesis, deciding label, E/N/C]
        later_first = -np.arange(len(owners))
        for lab in range(3):
            # Ascending by probability, ties by earliest row last: assignment keeps the last
            # value written per index, so each cell ends up with its best (earliest) window.
            order = np.lexsort((later_first, probs[:, lab]))
            order = order[~failed[order]]
            best[p_idx[order], h_idx[order], lab] = probs[order]
        picks = []  # per rule: (hypothesis position in the rule, E/N/C) for every prompt
        for rule, hyps in zip(self.ruleset.rules, self._rule_hyps, strict=True):
            lab = LABEL_INDEX[rule.label]
            pos = np.argmax(best[:, hyps, lab, lab], axis=1)  # first best hypothesis on a tie
            picks.append((rule.name, pos, best[np.arange(n_prompts), np.asarray(hyps)[pos], lab]))
        k = windows.max(axis=1, initial=1)
        results = []
        for p in range(n_prompts):
            if bad[p] or nonfinite[p]:
                why = ("out of memory scoring this prompt even one pair at a time" if bad[p] else
                       f"the model gave non-finite scores in {self.model.dtype}; try --dtype float32")
                results.append(PromptScores({}, int(k[p]), cut[p], why))
                continue
            scores = {name: RuleScore(float(enc[p, 0]), float(enc[p, 1]), float(enc[p, 2]), int(pos[p]))
                      for name, pos, enc in picks}
            results.append(PromptScores(scores, int(k[p]), cut[p]))
        return results

    def _run(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """E/N/C probabilities for every row, batched by length; rows that fail are marked."""
        probs = np.zeros((len(rows), 3), dtype=np.float64)
        failed = np.zeros(len(rows), dtype=bool)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]), reverse=True)
        start = 0
        while start < len(order):
            longest = len(rows[order[start]][0])
            count = max(1, min(self.batch_size, self.batch_tokens // max(1, longest)))
            batch = order[start : start + count]
            if self._forward_into(rows, batch, probs):
                start += count
                continue
            # Out of memory. We are outside the handler: the failed pass's tensors are gone.
            self.stats["out_of_memory"] += 1
            _release_memory()
            if count == 1:
                failed[batch] = True
                start += 1
                continue
            self.batch_size = max(1, count // 2)  # kept for the rest of the run
            self.batch_tokens = max(1, self.batch_size * longest)
        return probs, failed

    def _forward_into(self, rows, batch: list[int], probs: np.ndarray) -> bool:
        """Score `batch` into `probs`; False when it ran out of memory (the exception is dropped here,
        and with it the traceback that holds the pass's tensors)."""
        try:
            probs[batch] = self._forward([rows[i] for i in batch])
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return False
        return True

    def _forward(self, rows) -> np.ndarray:
        """One padded forward pass; softmax in float32; columns reordered to E, N, C."""
        width = max(len(ids) for ids, _ in rows)
        pad = self.model.tokenizer.pad_token_id or 0
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, (row_ids, row_types) in enumerate(rows):
            ids[i, : len(row_ids)] = row_ids
            mask[i, : len(row_ids)] = 1
            types[i, : len(row_types)] = row_types
        self.stats["pairs"] += len(rows)
        self.stats["tokens"] += int(mask.sum())
        self.stats["padded_tokens"] += ids.size
        self.stats["batches"] += 1
        logits = self.model.logits(ids, mask, types).astype(np.float64)
        logits = logits[:, list(self.model.label_columns)]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def _release_memory() -> None:
    """Hand freed blocks back after an out-of-memory, so the smaller retry has room."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["PromptScores", "RuleScore", "Scorer", "default_batching", "is_out_of_memory"]
