"""Turning prompts and hypotheses into model inputs: token pairs and windows.

Each prompt is tokenised once and each hypothesis once (not once per pair, as a plain
`CrossEncoder.predict` would), then pairs are assembled from token ids with the special-token
template the model's own tokenizer uses. The hypothesis is never cut: a prompt longer than the
tokens left beside it is split into overlapping windows that together cover every token.

Assembly is vectorised (`PairAssembler`): a GPU scores tens of thousands of pairs a second, and
a Python loop over pairs and tokens (about 59 us a pair) would cap it below that on its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from crossguard_cli.errors import ModelError

_PROBES = (("hello there", "a world"), ("The quick brown fox, 42 times!", "Jumps over it."))


@dataclass(frozen=True)
class PairTemplate:
    """Where special tokens go around a (prompt, hypothesis) pair, e.g. `[CLS] A [SEP] B [SEP]`."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    a_type: int
    middle_types: tuple[int, ...]
    b_type: int
    suffix_types: tuple[int, ...]

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """Input ids and token type ids of the pair (a, b)."""
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        types = [
            *self.prefix_types,
            *([self.a_type] * len(a)),
            *self.middle_types,
            *([self.b_type] * len(b)),
            *self.suffix_types,
        ]
        return ids, types


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def learn_template(tokenizer) -> PairTemplate:
    """Learn the pair template from the tokenizer itself, then check it on a second pair.

    transformers 5 no longer exposes `build_inputs_with_special_tokens` on fast tokenizers,
    and hard-coding `[CLS] A [SEP] B [SEP]` would be wrong for RoBERTa-style `<s> A </s></s> B
    </s>`; asking the tokenizer with a probe pair works for any of them.
    """
    (pa, pb), check = _PROBES
    full = tokenizer(pa, pb, return_token_type_ids=True)
    ids, types = list(full["input_ids"]), list(full.get("token_type_ids") or [0] * len(full["input_ids"]))
    a = tokenizer(pa, add_special_tokens=False)["input_ids"]
    b = tokenizer(pb, add_special_tokens=False)["input_ids"]
    i = _find(ids, a, 0)
    j = _find(ids, b, i + len(a)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ModelError("cannot find how the model's tokenizer joins a pair of texts; is it an NLI model?")
    template = PairTemplate(
        prefix=tuple(ids[:i]),
        middle=tuple(ids[i + len(a) : j]),
        suffix=tuple(ids[j + len(b) :]),
        prefix_types=tuple(types[:i]),
        a_type=types[i] if a else 0,
        middle_types=tuple(types[i + len(a) : j]),
        b_type=types[j] if b else 1,
        suffix_types=tuple(types[j + len(b) :]),
    )
    ca, cb = check
    expect = tokenizer(ca, cb, return_token_type_ids=True)
    got_ids, got_types = template.build(
        tokenizer(ca, add_special_tokens=False)["input_ids"], tokenizer(cb, add_special_tokens=False)["input_ids"]
    )
    expect_types = list(expect.get("token_type_ids") or got_types)
    if got_ids != list(expect["input_ids"]) or got_types != expect_types:
        raise ModelError("the model's tokenizer joins pairs in a way crossguard cannot reproduce")
    return template


def min_window(max_length: int) -> int:
    """The fewest prompt tokens a window may hold: a hypothesis may not leave less room than this."""
    return max(8, max_length // 4)


def window_spans(n_tokens: int, window: int) -> list[tuple[int, int]]:
    """Overlapping (start, end) spans of at most `window` tokens that cover `n_tokens` tokens.

    Windows overlap by a quarter of a window (at most 64 tokens), so a phrase cut by one
    window boundary is whole in the next; the last window ends exactly at the prompt's end.
    """
    if n_tokens <= window:
        return [(0, n_tokens)]
    overlap = min(64, window // 4)
    stride = max(1, window - overlap)
    spans = [(start, start + window) for start in range(0, n_tokens - window, stride)]
    spans.append((n_tokens - window, n_tokens))
    return spans


@dataclass(frozen=True)
class PairPlan:
    """Every (window, hypothesis) pair of a group of prompts, as numbers (one entry per pair).

    Attributes:
        prompt, hypothesis: whose pair it is (prompt index in the group, hypothesis index).
        start: where the window's tokens begin in `pool`.
        width: the window's prompt tokens.
        length: the pair's tokens, special tokens included.
        order: the pairs longest first (ties in pair order), the order batches are cut in.
        cut: per prompt, whether truncation dropped windows (`--long-input truncate`).
        pool, pool_types: token ids and types: the assembler's own (specials, hypotheses, pads),
            then the group's prompts one after another.
    """

    prompt: np.ndarray
    hypothesis: np.ndarray
    start: np.ndarray
    width: np.ndarray
    length: np.ndarray
    order: np.ndarray
    cut: np.ndarray
    pool: np.ndarray
    pool_types: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt)


class PairAssembler:
    """Plans a group's pairs and builds padded batches of them with array operations only.

    Every row of a batch is five segments (prefix, window, middle, hypothesis, suffix) then
    padding; each segment is a run of consecutive entries of one token pool. So the pool index
    of every cell is a per-row, per-segment offset plus the column number: the offsets are
    written where each segment starts and summed along the row, and one gather from the pool
    fills ids and token types. No Python loop touches a pair, except to split prompts longer
    than a window (about one prompt in 18 of real traffic).
    """

    def __init__(self, template: PairTemplate, hypotheses: list[list[int]], max_length: int, pad_id: int,
                 truncate: bool = False, token_types: bool = True) -> None:
        self.template = template
        self.max_length = max_length
        self.truncate = truncate
        t = template
        hyp_flat = [i for h in hypotheses for i in h]
        self.hyp_len = np.array([len(h) for h in hypotheses], dtype=np.int64)
        self.window = max_length - t.n_special - self.hyp_len  # prompt tokens each hypothesis leaves
        # Pool layout: prefix, middle, suffix, hypotheses, max_length pads; then each group's prompts.
        self._pre, self._mid = 0, len(t.prefix)
        self._suf = self._mid + len(t.middle)
        hyp0 = self._suf + len(t.suffix)
        self.hyp_start = hyp0 + np.concatenate(([0], np.cumsum(self.hyp_len)[:-1])).astype(np.int64)
        self._pad = hyp0 + len(hyp_flat)
        self._prompts = self._pad + max_length  # where a group's prompts begin in its pool
        self._ids = np.array([*t.prefix, *t.middle, *t.suffix, *hyp_flat, *([pad_id] * max_length)], dtype=np.int64)
        self._types = np.array([*t.prefix_types, *t.middle_types, *t.suffix_types, *([t.b_type] * len(hyp_flat)),
                                *([0] * max_length)], dtype=np.int64)
        self._a_type = t.a_type
        kinds = (t.prefix_types, (t.a_type,), t.middle_types, (t.b_type,), t.suffix_types)
        uniform = all(len(set(k)) <= 1 for k in kinds)
        self._segment_types = tuple(k[0] if k else 0 for k in kinds) + (0,) if uniform else None
        self._token_types = token_types
        self._zeros = np.zeros(0, dtype=np.int64)  # token types for models without them: never written
        self._local = threading.local()

    def plan(self, prompt_ids: list) -> PairPlan:
        """All pairs of these tokenised prompts: each prompt with each hypothesis, in windows."""
        n = np.array([len(p) for p in prompt_ids], dtype=np.int64)
        n_prompts, n_hyp = len(n), len(self.hyp_len)
        offsets = self._prompts + np.concatenate(([0], np.cumsum(n)[:-1])).astype(np.int64)
        flat = np.concatenate([np.asarray(p, dtype=np.int64) for p in prompt_ids]) if n_prompts else \
            np.zeros(0, dtype=np.int64)
        pool = np.concatenate((self._ids, flat))
        pool_types = np.concatenate((self._types, np.full(len(flat), self._a_type, dtype=np.int64)))
        fits = n[:, None] <= self.window[None, :]
        counts = np.ones((n_prompts, n_hyp), dtype=np.int64)
        spans: dict[tuple[int, int], list[tuple[int, int]]] = {}
        cut = np.zeros(n_prompts, dtype=bool)
        for p, h in zip(*np.nonzero(~fits), strict=True):  # prompts longer than a window: rare
            s = window_spans(int(n[p]), int(self.window[h]))
            if self.truncate:
                s, cut[p] = s[:1], True
            spans[int(p), int(h)] = s
            counts[p, h] = len(s)
        per_cell = counts.ravel()
        prompt = np.repeat(np.repeat(np.arange(n_prompts), n_hyp), per_cell)
        hypothesis = np.repeat(np.tile(np.arange(n_hyp), n_prompts), per_cell)
        start = offsets[prompt].copy()
        width = n[prompt].copy()
        if spans:
            first = np.concatenate(([0], np.cumsum(per_cell)[:-1]))
            for (p, h), s in spans.items():
                at = int(first[p * n_hyp + h])
                for k, (a, b) in enumerate(s):
                    start[at + k] = offsets[p] + a
                    width[at + k] = b - a
        length = self.template.n_special + width + self.hyp_len[hypothesis]
        order = np.argsort(-length, kind="stable")
        return PairPlan(prompt, hypothesis, start, width, length, order, cut, pool, pool_types)

    def build(self, plan: PairPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded (input_ids, attention_mask, token_type_ids) of `rows`, int64, as wide as the longest.

        The arrays live in buffers this thread reuses after `REUSE_AFTER` more builds: whoever
        runs the model must be done with them by then (every backend copies or finishes with
        its inputs before `logits` returns).
        """
        t = self.template
        length = plan.length[rows]
        hyp = plan.hypothesis[rows]
        n_rows, width = len(rows), int(length.max())
        b1 = len(t.prefix)
        b2 = b1 + plan.width[rows]
        b3 = b2 + len(t.middle)
        b4 = b3 + self.hyp_len[hyp]
        bounds = (b1, b2, b3, b4, length)
        ids, mask, types, steps = self._buffers().take(n_rows, width)
        # Pool index of a cell = its segment's offset + its column: write each segment's offset
        # change where the segment starts, sum along the row, add the column, gather once.
        offsets = (self._pre, plan.start[rows] - b1, self._mid - b2, self.hyp_start[hyp] - b3, self._suf - b4,
                   self._pad - length)
        index = _runs(steps, bounds, offsets, out=mask)  # mask's buffer holds the index until the gather
        index += np.arange(width)
        if not self._token_types:  # the model takes none: zeros, shared, never written
            if len(self._zeros) < n_rows * width:
                self._zeros = np.zeros(2 * n_rows * width, dtype=np.int64)
            types = self._zeros[: n_rows * width].reshape(n_rows, width)
        elif self._segment_types is None:  # special tokens of mixed types in one place: look each up
            plan.pool_types.take(index, out=types)
        else:  # one type per segment: the same running sum, no lookup
            _runs(steps, bounds, self._segment_types, out=types)
        plan.pool.take(index, out=ids)
        np.less(np.arange(width), length[:, None], out=mask, casting="unsafe")
        return ids, mask, types

    def _buffers(self) -> _Buffers:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = _Buffers()
        return buffers


REUSE_AFTER = 8  # builds in one thread before a batch's buffers are written again


class _Buffers:
    """A ring of preallocated batch buffers, one ring per thread.

    Fresh arrays of a few MB each cost more in page faults than filling them does (about
    4x here), so batches are built into buffers that are kept and reused in turn.
    """

    def __init__(self) -> None:
        self.slots: list[np.ndarray | None] = [None] * REUSE_AFTER
        self.next = 0

    def take(self, n_rows: int, width: int) -> tuple[np.ndarray, ...]:
        cells = n_rows * width
        need = 3 * cells + n_rows * (width + 1)
        slot = self.slots[self.next]
        if slot is None or len(slot) < need:
            slot = self.slots[self.next] = np.empty(max(need, 2 * len(slot) if slot is not None else need),
                                                    dtype=np.int64)
        self.next = (self.next + 1) % REUSE_AFTER
        ids, mask, types = (slot[k * cells : (k + 1) * cells].reshape(n_rows, width) for k in range(3))
        steps = slot[3 * cells : need].reshape(n_rows, width + 1)
        return ids, mask, types, steps


def _runs(steps: np.ndarray, bounds, values, out: np.ndarray) -> np.ndarray:
    """Fill `out` (rows x width) with values[0] from column 0, values[k] from column bounds[k-1] on.

    Writes each value's change where its run starts into `steps` (rows x width+1), then sums
    along the row: a few passes over the batch whatever its shape. Runs may be empty (two
    bounds equal): their changes add up.
    """
    steps.fill(0)
    steps[:, 0] = values[0]
    rows = np.arange(len(steps))
    for at, value, before in zip(bounds, values[1:], values[:-1], strict=True):
        steps[rows, at] += np.asarray(value) - np.asarray(before)  # one write per row: no repeated index
    return np.cumsum(steps[:, : out.shape[1]], axis=1, out=out)
